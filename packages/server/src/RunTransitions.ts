/**
 * The one place where runs and their tasks change state. Every change — a start, a claim, a lease extended, a
 * worker's writes (task attempts and outcomes, events received, parking, completion, release), a requeue, a
 * wake-up, a cancellation, an event sent — is submitted here and decided by `internal/decisions.ts` against the
 * state machines the contract declares.
 *
 * Changes are group-committed. Each caller submits a unit (a start, a worker's batch of writes, a heartbeat, …)
 * and waits; a few committers take every unit that is waiting and apply them in ONE transaction: the runs they
 * touch are locked in id order (concurrent groups never deadlock), each change is decided in order (changes to
 * one run see each other), and everything they changed is written in one statement, audit trail, outbox rows and
 * `pg_notify` announcements included. One commit (one fsync) serves them all, which is where the throughput comes
 * from; when the committers are idle a unit goes at once, so a lone request waits for nothing. A unit never fails
 * its neighbours: each change has its own outcome, and should a group's transaction fail as a whole, its units are
 * retried one by one.
 *
 * After a group commits, `afterCommit` does everything that must follow a committed change: metrics, handing
 * the new outbox rows to the publisher so a runnable run reaches Redis at once, handing the slots runs gave back
 * to `FlowOffers` (flow control), and submitting what child workflows' ends and parents' cancellations entail
 * (waking the parent, cancelling the children). It is the one post-commit hook.
 */
import {
  type EventConflict,
  IdempotencyConflict,
  type InvalidRequest,
  type InvalidTransition,
  PayloadTooLarge,
  RunNotFound,
  WorkerNotFound
} from "@aiki/contract/Errors"
import { defaultPriority, type Debounce as DebounceInput, type FlowPolicy } from "@aiki/contract/FlowControl"
import type {
  EventName,
  IdempotencyKey,
  LeaseEpoch,
  RunId,
  ScheduleId,
  WorkerId,
  WorkflowName,
  WorkflowVersion
} from "@aiki/contract/Ids"
import {
  Claims,
  HeartbeatReply,
  type HeldRun,
  type ParentClosePolicy,
  type Json,
  Lease,
  SentEvent,
  StartedRun,
  type Write,
  type WriteResult,
  type WorkflowRun
} from "@aiki/contract/Models"
import { isTerminal, type RunState } from "@aiki/contract/RunState"
import { type Cause, Clock, Context, DateTime, Deferred, Effect, Layer, Queue } from "effect"
import { SqlClient } from "effect/sql"
import { v7 as uuidv7 } from "uuid"
import {
  Cancel,
  childrenOf,
  Claim,
  Debounce,
  decide,
  type DecisionContext,
  entriesOf,
  eventsOf,
  Extend,
  Requeue,
  Offer,
  Reopen,
  type ResetTarget,
  type RunChange,
  runOf,
  SendEvent,
  TimeOutAttempt,
  TimeOutRun,
  Wake,
  WakeParent,
  WorkerWrite
} from "./internal/decisions.ts"
import { type Freed, freedBy, loadFlow, underFlowControl, versionKey, writeFlow } from "./internal/flowControl.ts"
import { FlowControl } from "./FlowControl.ts"
import {
  Ledger,
  type LedgerRun,
  loadChildren,
  loadEntries,
  loadEvents,
  loadJournalHeads,
  lockRuns,
  type OutboxRow,
  readRuns,
  type TransitionRecord,
  write
} from "./internal/Ledger.ts"
import { type RunRow, toRun } from "./internal/rows.ts"
import { pgArray, selectJournals } from "./internal/sql.ts"
import { LeaseGrace } from "./LeaseGrace.ts"
import * as Metrics from "./Metrics.ts"
import { Outbox } from "./Outbox.ts"
import { ServerConfig } from "./ServerConfig.ts"

/**
 * The worker writes an optimistic group may hold (`commitOptimistic`), beside claims: each reads only its run and the
 * entry it is about, and changes only them. Anything reading events, children or flow-control counts, or inserting
 * runs, is decided under locks.
 */
const optimisticWrites: ReadonlySet<Write["_tag"]> = new Set([
  "StartTask",
  "FinishTask",
  "HeartbeatTask",
  "BeginAttempt",
  "CompleteRun",
  "FailRun",
  "ReleaseRun"
])
const isOptimistic = (change: RunChange) =>
  change._tag === "Claim" || (change._tag === "WorkerWrite" && optimisticWrites.has(change.write._tag))

export interface StartRunInput {
  readonly workflowName: WorkflowName
  readonly workflowVersion: WorkflowVersion
  readonly payload: Json
  readonly idempotencyKey?: IdempotencyKey | undefined
  /** The W3C `traceparent` the run's execution continues (the caller's, else the request's). */
  readonly traceParent?: string | undefined
  /** 1 to 10. @default the version's declared priority, else 5 */
  readonly priority?: number | undefined
  readonly concurrencyKey?: string | undefined
  /** Overrides the version's per-key limit for this run. */
  readonly concurrencyLimit?: number | undefined
  readonly orderingKey?: string | undefined
  readonly rateLimitKey?: string | undefined
  /** Replace the not-yet-started run with this debounce key instead (see `FlowControl.Debounce`). */
  readonly debounce?: DebounceInput | undefined
  /** The schedule starting the run, and the fire time (ISO) it starts it for. */
  readonly schedule?: { readonly id: ScheduleId; readonly fireTime: string } | undefined
  /** The run fails (`timed_out`) this long after its start. @default the version's declared timeout, else none */
  readonly executionTimeoutMs?: number | undefined
  /** The run fails (`schedule_to_start_timed_out`) when no worker claimed it this long after its start. */
  readonly scheduleToStartTimeoutMs?: number | undefined
  /** Why the start is flagged (kept on the run): e.g. no worker has registered its version. */
  readonly startWarning?: string | undefined
  /** The run starting this one as its child (`StartChild`), and what its cancellation does to the child. */
  readonly parent?: { readonly runId: RunId; readonly closePolicy: ParentClosePolicy } | undefined
}

/**
 * A run to create: an insert rather than a change (its id, a UUIDv7, is chosen when it is submitted). A debounced
 * start whose key another unstarted run holds (a race) is left without an outcome, and tried again.
 */
interface Start {
  readonly id: RunId
  readonly input: StartRunInput
  /** The priority it gets (the start's, else its version's). */
  readonly priority: number
  outcome: StartedRun | IdempotencyConflict | undefined
}

/** A worker's heartbeat: its liveness renewed (`alive` once its row was found and updated). */
interface Beat {
  readonly workerId: WorkerId
  readonly livenessMs: number
  alive: boolean
}

/** What one caller submitted; `done` once its group committed (the outcomes are on its parts). */
interface Unit {
  readonly starts: ReadonlyArray<Start>
  readonly changes: ReadonlyArray<RunChange>
  readonly beats: ReadonlyArray<Beat>
  readonly done: Deferred.Deferred<void>
}

/** The columns of a new run (beside its state), as the insert's JSON recordset carries them. */
const runColumns = (start: Start) => ({
  id: start.id,
  workflow_name: start.input.workflowName,
  workflow_version: start.input.workflowVersion,
  payload: JSON.stringify(start.input.payload),
  trace_parent: start.input.traceParent ?? null,
  priority: start.priority,
  concurrency_key: start.input.concurrencyKey ?? null,
  concurrency_limit: start.input.concurrencyLimit ?? null,
  ordering_key: start.input.orderingKey ?? null,
  rate_limit_key: start.input.rateLimitKey ?? null,
  schedule_id: start.input.schedule?.id ?? null,
  scheduled_for: start.input.schedule?.fireTime ?? null,
  execution_timeout_ms: start.input.executionTimeoutMs ?? null,
  schedule_to_start_timeout_ms: start.input.scheduleToStartTimeoutMs ?? null,
  start_warning: start.input.startWarning ?? null,
  parent_run_id: start.input.parent?.runId ?? null,
  parent_close_policy: start.input.parent?.closePolicy ?? null
})

const debounceMessage = (debounce: DebounceInput) =>
  `debounced (key ${debounce.key}): starts once no start replaced it for ${debounce.delayMs} ms`

/** Children that ended (their parents to wake) and runs cancelled (their children to cancel) in one group. */
interface Family {
  readonly ended: ReadonlyArray<{ readonly parentRunId: RunId; readonly childRunId: RunId }>
  readonly cancelled: ReadonlyArray<RunId>
}

/** Units taken into one group at most (a group is one transaction). */
const maxUnitsPerGroup = 256

export class RunTransitions extends Context.Service<RunTransitions, {
  /** Creates a run, pending; with an idempotency key, the same key and payload return the existing run. */
  readonly start: (input: StartRunInput) => Effect.Effect<StartedRun, IdempotencyConflict>
  /** Creates several runs together, each answered on its own (a payload too large to store is refused). */
  readonly startMany: (
    inputs: ReadonlyArray<StartRunInput>
  ) => Effect.Effect<ReadonlyArray<StartedRun | IdempotencyConflict | PayloadTooLarge>>
  /** Grants the runs that can be granted to `workerId`, each with its journal; says why it refused the others. */
  readonly claim: (
    workerId: WorkerId,
    runIds: ReadonlyArray<RunId>,
    options: { readonly leaseMs: number; readonly replayVersion: number }
  ) => Effect.Effect<Claims>
  /** Applies a worker's writes in order, each answered on its own. */
  readonly write: (writes: ReadonlyArray<Write>) => Effect.Effect<ReadonlyArray<WriteResult>>
  /** Renews the worker's liveness and extends the leases it still holds; says which runs it must stop. */
  readonly heartbeat: (
    workerId: WorkerId,
    runs: ReadonlyArray<HeldRun>,
    options: { readonly leaseMs: number; readonly livenessMs: number }
  ) => Effect.Effect<HeartbeatReply, WorkerNotFound>
  /** Cancels a run that has not finished; cancelling a cancelled run returns it unchanged. */
  readonly cancel: (runId: RunId) => Effect.Effect<WorkflowRun, RunNotFound | InvalidTransition>
  /** Runs a failed or cancelled run again as the same run: pending, its journal kept, its workflow attempt counted. */
  readonly retry: (runId: RunId) => Effect.Effect<WorkflowRun, RunNotFound | InvalidTransition>
  /** A retry that first discards the run's journal from `target` on (`InvalidRequest` when no entry is there). */
  readonly reset: (runId: RunId, target: ResetTarget) => Effect.Effect<WorkflowRun, RunNotFound | InvalidTransition | InvalidRequest>
  /** Keeps an event for the run's next wait for `name`, waking the run when it waits for that name. */
  readonly sendEvent: (
    runId: RunId,
    name: EventName,
    payload: Json,
    eventId?: string
  ) => Effect.Effect<SentEvent, RunNotFound | InvalidTransition | EventConflict>
  /** Requeues those of `runIds` whose lease lapsed or whose worker is gone; returns how many. */
  readonly requeueLapsed: (runIds: ReadonlyArray<RunId>) => Effect.Effect<number>
  /** Makes those of `runIds` that are parked and due pending again; returns how many. */
  readonly wakeDue: (runIds: ReadonlyArray<RunId>) => Effect.Effect<number>
  /** Offers again those of `runIds` that wait under flow control (and may be offered now); returns how many. */
  readonly offer: (runIds: ReadonlyArray<RunId>) => Effect.Effect<number>
  /** Fails those of `attempts` still open past a deadline (`TaskTimedOut`); returns how many. */
  readonly timeOutAttempts: (
    attempts: ReadonlyArray<{ readonly runId: RunId; readonly address: string; readonly attempt: number }>
  ) => Effect.Effect<number>
  /** Fails those of `runIds` past their execution or schedule-to-start deadline; returns how many. */
  readonly timeOutRuns: (runIds: ReadonlyArray<RunId>) => Effect.Effect<number>
  /** Wakes each parent parked waiting for the child that ended; returns how many woke. */
  readonly wakeParents: (ended: ReadonlyArray<{ readonly parentRunId: RunId; readonly childRunId: RunId }>) => Effect.Effect<number>
  /** Cancels children whose parent was cancelled (`parent_cancelled`); returns how many. */
  readonly cancelChildren: (childRunIds: ReadonlyArray<RunId>) => Effect.Effect<number>
}>()("@aiki/server/RunTransitions") {
  static readonly layer = Layer.effect(RunTransitions, Effect.suspend(() => make))
}

const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const config = yield* ServerConfig
  const outbox = yield* Outbox
  const grace = yield* LeaseGrace
  const flowControl = yield* FlowControl
  const units = yield* Effect.acquireRelease(Queue.unbounded<Unit>(), Queue.shutdown)
  const scope = yield* Effect.scope

  /** Inserts the group's new runs; a start whose idempotency key is taken gets the run holding it (or a conflict). */
  const insertStarts = (starts: ReadonlyArray<Start>) =>
    Effect.gen(function*() {
      if (starts.length === 0) return []
      const input = starts.map((s) => ({
        ...runColumns(s),
        idempotency_key: s.input.idempotencyKey ?? null,
        stream: outbox.streamOf(s.input.workflowName, s.input.workflowVersion, s.priority)
      }))
      const [row] = yield* sql<{
        readonly inserted: ReadonlyArray<string> | null
        readonly outbox: ReadonlyArray<{ readonly id: string; readonly run_id: string; readonly stream: string }> | null
      }>`
        WITH input AS (
          SELECT * FROM jsonb_to_recordset(${JSON.stringify(input)}::jsonb) AS i(
            id uuid, workflow_name text, workflow_version text, payload text, idempotency_key text, trace_parent text,
            stream text, priority int, concurrency_key text, concurrency_limit int, ordering_key text, rate_limit_key text,
            schedule_id text, scheduled_for timestamptz, execution_timeout_ms bigint, schedule_to_start_timeout_ms bigint, start_warning text,
            parent_run_id uuid, parent_close_policy text)
        ), inserted AS (
          INSERT INTO workflow_runs (id, workflow_name, workflow_version, state, payload, idempotency_key, trace_parent,
            priority, concurrency_key, concurrency_limit, ordering_key, rate_limit_key, schedule_id, scheduled_for,
            deadline_at, start_deadline_at, start_warning, parent_run_id, parent_close_policy)
          SELECT id, workflow_name, workflow_version, 'pending', payload::json, idempotency_key, trace_parent,
            priority, concurrency_key, concurrency_limit, ordering_key, rate_limit_key, schedule_id, scheduled_for,
            now() + make_interval(secs => COALESCE(i.execution_timeout_ms, (SELECT v.execution_timeout_ms FROM workflow_versions v
              WHERE v.workflow_name = i.workflow_name AND v.version = i.workflow_version)) / 1000.0),
            now() + make_interval(secs => i.schedule_to_start_timeout_ms / 1000.0), i.start_warning,
            i.parent_run_id, i.parent_close_policy
          FROM input i
          ON CONFLICT (workflow_name, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
          RETURNING id
        ), recorded AS (
          INSERT INTO transitions (run_id, from_state, to_state, reason) SELECT id, NULL, 'pending', 'started' FROM inserted
        ), queued AS (
          INSERT INTO outbox (run_id, stream)
          SELECT i.id, i.stream FROM inserted JOIN input i USING (id) WHERE i.stream IS NOT NULL
          RETURNING id::text AS id, run_id, stream
        ), announced AS (
          SELECT pg_notify('aiki_runs', json_build_object('runId', id, 'task', NULL, 'state', 'pending')::text)
          FROM inserted
        )
        SELECT (SELECT jsonb_agg(id) FROM inserted) AS inserted, (SELECT jsonb_agg(queued) FROM queued) AS outbox,
          (SELECT count(*) FROM announced) AS announced`
      const inserted = new Set(row?.inserted ?? [])
      const taken = starts.filter((s) => !inserted.has(s.id))
      // The key was taken (by an earlier run, or by a start of this same group): same request, same run. Payloads
      // are compared as `jsonb`, which ignores key order and spacing.
      const holders = taken.length === 0 ? [] : yield* sql<{
        readonly idx: number
        readonly id: string
        readonly state: WorkflowRun["state"]
        readonly same: boolean
      }>`
        SELECT k.idx, r.id, r.state, (r.payload::jsonb = k.payload::jsonb AND r.workflow_version = k.version) AS same
        FROM jsonb_to_recordset(${
        JSON.stringify(taken.map((s, idx) => ({
          idx,
          name: s.input.workflowName,
          key: s.input.idempotencyKey,
          version: s.input.workflowVersion,
          payload: JSON.stringify(s.input.payload)
        })))
      }::jsonb) AS k(idx int, name text, key text, version text, payload text)
        JOIN workflow_runs r ON r.workflow_name = k.name AND r.idempotency_key = k.key`
      for (const start of starts) {
        if (inserted.has(start.id)) start.outcome = new StartedRun({ id: start.id, state: "pending", created: true })
      }
      for (const holder of holders) {
        const start = taken[holder.idx]!
        start.outcome = holder.same
          ? new StartedRun({ id: holder.id as RunId, state: holder.state, created: false })
          : new IdempotencyConflict({
            idempotencyKey: start.input.idempotencyKey ?? "",
            existingRunId: holder.id as RunId,
            message: `Idempotency key "${start.input.idempotencyKey}" was already used for run ${holder.id} of ` +
              `${start.input.workflowName} with a different payload or version`
          })
      }
      return (row?.outbox ?? []).map((o): OutboxRow => ({ id: o.id, runId: o.run_id, stream: o.stream }))
    })

  /**
   * Inserts the group's debounced starts: pending, waiting out their delay, with no stream entry yet. A start whose
   * key another unstarted run took meanwhile inserts nothing and is tried again by its caller.
   */
  const insertDebounced = (starts: ReadonlyArray<Start>) =>
    Effect.gen(function*() {
      if (starts.length === 0) return
      const input = starts.map((s) => ({
        ...runColumns(s),
        debounce_key: s.input.debounce!.key,
        delay_ms: s.input.debounce!.delayMs,
        message: debounceMessage(s.input.debounce!)
      }))
      const [row] = yield* sql<{ readonly inserted: ReadonlyArray<string> | null }>`
        WITH input AS (
          SELECT * FROM jsonb_to_recordset(${JSON.stringify(input)}::jsonb) AS i(
            id uuid, workflow_name text, workflow_version text, payload text, trace_parent text, debounce_key text,
            delay_ms double precision, message text, priority int, concurrency_key text, concurrency_limit int,
            ordering_key text, rate_limit_key text, schedule_id text, scheduled_for timestamptz,
            execution_timeout_ms bigint, schedule_to_start_timeout_ms bigint, start_warning text)
        ), inserted AS (
          INSERT INTO workflow_runs (id, workflow_name, workflow_version, state, payload, trace_parent, priority,
            concurrency_key, concurrency_limit, ordering_key, rate_limit_key, schedule_id, scheduled_for, debounce_key,
            waiting_reason, waiting_message, waiting_until, deadline_at, start_deadline_at, start_warning)
          SELECT id, workflow_name, workflow_version, 'pending', payload::json, trace_parent, priority, concurrency_key,
            concurrency_limit, ordering_key, rate_limit_key, schedule_id, scheduled_for, debounce_key, 'debounce', message,
            now() + make_interval(secs => delay_ms / 1000.0),
            now() + make_interval(secs => COALESCE(i.execution_timeout_ms, (SELECT v.execution_timeout_ms FROM workflow_versions v
              WHERE v.workflow_name = i.workflow_name AND v.version = i.workflow_version)) / 1000.0),
            now() + make_interval(secs => i.schedule_to_start_timeout_ms / 1000.0), i.start_warning
          FROM input i
          ON CONFLICT (workflow_name, debounce_key) WHERE debounce_key IS NOT NULL AND state = 'pending' AND started_at IS NULL
          DO NOTHING
          RETURNING id
        ), recorded AS (
          INSERT INTO transitions (run_id, from_state, to_state, reason) SELECT id, NULL, 'pending', 'started' FROM inserted
        ), announced AS (
          SELECT pg_notify('aiki_runs', json_build_object('runId', id, 'task', NULL, 'state', 'pending')::text)
          FROM inserted
        )
        SELECT (SELECT jsonb_agg(id) FROM inserted) AS inserted, (SELECT count(*) FROM announced) AS announced`
      const inserted = new Set(row?.inserted ?? [])
      for (const start of starts) {
        if (inserted.has(start.id)) start.outcome = new StartedRun({ id: start.id, state: "pending", created: true })
      }
    })

  /**
   * Granted claims need their run as it now is, and its journal: read in the claims' transaction, or right after an
   * optimistic group's statement (`written`: the rows that statement returned, for runs with no journal to read).
   * Only a lease holder writes a run's journal, so a journal read before the run shows the claim's lease still in
   * place is the one the new holder continues; a run whose lease moved on in between (it was cancelled, retried and
   * claimed again) is refused rather than handed out with another holder's epoch.
   */
  const readLeases = (
    ledger: Ledger,
    claims: ReadonlyArray<Claim>,
    written: ReadonlyArray<RunRow & { readonly server_time: Date }> = []
  ) =>
    Effect.gen(function*() {
      const granted = claims.filter((c) => c.outcome?.granted === true)
      if (granted.length === 0) return
      const byId = new Map(written.map((row) => [row.id, row]))
      const ids = granted.map((c) => c.runId).filter((id) => !byId.has(id))
      // The first claim is what starts a run: a run that had not started when it was read has no journal to read (a
      // burst's claims are all such, one round trip less each).
      const journals = yield* selectJournals(sql, ids.filter((id) => ledger.runs.get(id)?.flow.started === true))
      if (ids.length > 0) {
        const rows = yield* sql<RunRow & { readonly server_time: Date }>`
          SELECT *, now() AS server_time FROM workflow_runs
          WHERE id = ANY(${pgArray(ids)}::uuid[])`
        for (const row of rows) byId.set(row.id, row)
      }
      for (const claim of granted) {
        const row = byId.get(claim.runId)!
        if (row.lease_epoch !== ledger.runs.get(claim.runId)!.leaseEpoch) {
          claim.outcome = { granted: false, reason: "held", message: `Run ${claim.runId} is held under lease ${row.lease_epoch}` }
          continue
        }
        claim.lease = new Lease({
          run: toRun(row),
          leaseEpoch: row.lease_epoch as LeaseEpoch,
          leaseExpiresAt: DateTime.fromDateUnsafe(row.lease_expires_at!),
          journal: journals.get(row.id) ?? [],
          serverTime: DateTime.fromDateUnsafe(row.server_time)
        }, { disableChecks: true })
      }
    })

  /** A cancellation, a retry or a reset answers with the run as it now is. */
  const readChanged = (changes: ReadonlyArray<Cancel | Reopen>) =>
    Effect.gen(function*() {
      const done = changes.filter((c) => c.outcome === "cancelled" || c.outcome === "reopened")
      if (done.length === 0) return
      const rows = yield* sql<RunRow>`
        SELECT * FROM workflow_runs
        WHERE id = ANY(${pgArray(done.map((c) => c.runId))}::uuid[])`
      const byId = new Map(rows.map((row) => [row.id, toRun(row)]))
      for (const change of done) change.run = byId.get(change.runId)
    })

  const contextOf = (ledger: Ledger) =>
    Effect.map(grace.leasesMayLapse, (leasesMayLapse): DecisionContext => ({
      ledger,
      leasesMayLapse,
      maxPayloadBytes: config.maxPayloadBytes,
      poisonAfterLapses: config.poisonAfterLapses
    }))

  const streamOf = (run: LedgerRun) => outbox.streamOf(run.workflowName, run.workflowVersion, run.flow.priority)

  /**
   * Runs `effect`'s statements on a connection of its own, outside any transaction (as a transaction would, through
   * the client's transaction service). Statements sent without one share connections (`multiplex`): the committers'
   * guarded writes would queue behind one another there, one fsync at a time, and a write waiting for a row lock
   * would hold up every statement behind it.
   */
  const onOwnConnection = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.scoped(
      Effect.flatMap(sql.reserve, (connection) => Effect.provideService(effect, sql.transactionService, [connection, 0]))
    )

  /** The pending runs the group's claims are about, with their versions' flow policies put in the ledger. */
  const claimedPending = (ledger: Ledger, changes: ReadonlyArray<RunChange>) =>
    Effect.gen(function*() {
      const claimed = changes.flatMap((c) => {
        const run = c._tag === "Claim" ? ledger.runs.get(c.runId) : undefined
        return run?.state === "pending" ? [run] : []
      })
      if (claimed.length > 0) {
        ledger.flow.policies = yield* flowControl.policies(claimed.map((r) => ({ name: r.workflowName, version: r.workflowVersion })))
      }
      return claimed
    })

  /**
   * Optimistic writes: a group of claims and worker writes that read nothing but their runs and journal entries (a
   * burst's claims, a running workflow's tasks and its end) is decided on rows read without a lock (runs and entries
   * in one statement) and written by one guarded statement with no transaction around it: two round trips instead of
   * five (BEGIN, lock, read, write, COMMIT), and no connection held between them. Should any run the group touches
   * have moved since it was read (a cancellation, a takeover, a timeout), the statement writes nothing and the group
   * is decided again under locks; so is a group claiming a run under flow control, whose grant depends on counts
   * only the locks keep true.
   */
  const commitOptimistic = (changes: ReadonlyArray<RunChange>) =>
    Effect.gen(function*() {
      const ledger = new Ledger()
      const context = yield* contextOf(ledger)
      yield* readRuns(sql, ledger, [...new Set(changes.map(runOf))].sort(), changes.flatMap(entriesOf))
      if (underFlowControl(ledger, yield* claimedPending(ledger, changes))) {
        return yield* Effect.as(Metrics.recordFallback("flow_control"), undefined)
      }
      for (const change of changes) decide(context, change)
      // A grant that changed a run's wait or its rate-limit bucket writes flow state too: the locked path does that.
      if (ledger.flow.patches.size > 0) return yield* Effect.as(Metrics.recordFallback("flow_control"), undefined)
      const claims = changes.filter((c): c is Claim => c._tag === "Claim")
      // A granted claim of a run that had not started (no journal) takes its lease from the statement's own rows: the
      // lease as it was granted, one read fewer. A run with a journal is read after, journal first (`readLeases`).
      const fresh = claims.filter((c) => c.outcome?.granted === true && ledger.runs.get(c.runId)?.flow.started !== true)
      const written = yield* write(sql, ledger, streamOf, { guarded: true, returning: fresh.map((c) => c.runId) })
      if (!written.applied) return yield* Effect.as(Metrics.recordFallback("moved"), undefined)
      yield* readLeases(ledger, claims, written.returned)
      return { ledger, outbox: written.outbox }
    }).pipe(onOwnConnection)

  /** Decides and writes one group of units in one transaction; returns what the post-commit hook needs. */
  const commitGroup = (group: ReadonlyArray<Unit>) =>
    Effect.gen(function*() {
      const starts = group.flatMap((unit) => unit.starts)
      const changes = group.flatMap((unit) => unit.changes)
      const beats = group.flatMap((unit) => unit.beats)
      if (starts.length === 0 && beats.length === 0 && changes.length > 0 && changes.every(isOptimistic)) {
        const done = yield* commitOptimistic(changes)
        if (done !== undefined) {
          return yield* afterCommit(
            done.ledger.transitions,
            [],
            done.outbox,
            freedBy(done.ledger, done.ledger.transitions),
            familyOf(done.ledger)
          )
        }
      }
      const ledger = new Ledger()
      const context = yield* contextOf(ledger)
      const debounced = starts.filter((s) => s.input.debounce !== undefined)
      const plain = starts.filter((s) => s.input.debounce === undefined)
      // Only starts: their insert is one statement (run, audit trail, outbox row and announcement together), so it
      // needs no transaction around it, and a lone start costs one round trip.
      if (changes.length === 0 && beats.length === 0) {
        const outboxRows = yield* insertStarts(plain)
        yield* insertDebounced(debounced)
        return yield* afterCommit([], starts, outboxRows, [])
      }
      let startedChildren: ReadonlyArray<Start> = []
      const outboxRows = yield* sql.withTransaction(Effect.gen(function*() {
        const sends = changes.filter((c): c is SendEvent => c._tag === "SendEvent")
        if (sends.length > 0) {
          // Events are numbered by the database, so that they keep the order they were sent in.
          const ids = yield* sql<{ readonly id: string }>`
            SELECT nextval(pg_get_serial_sequence('run_events', 'id'))::text AS id FROM generate_series(1, ${sends.length})`
          sends.forEach((send, i) => (send.eventId = ids[i]!.id))
        }
        yield* lockRuns(sql, ledger, [...new Set(changes.map(runOf))].sort())
        const claimed = yield* claimedPending(ledger, changes)
        if (claimed.length > 0) yield* loadFlow(sql, ledger, claimed)
        yield* loadEntries(sql, ledger, changes.flatMap(entriesOf))
        yield* loadJournalHeads(sql, ledger, changes.flatMap((c) => c._tag === "Reopen" && c.target !== undefined ? [c.runId] : []))
        yield* loadChildren(sql, ledger, [...new Set(changes.flatMap(childrenOf))])
        const eventNeeds = changes.flatMap((c) => eventsOf(c) ?? [])
        yield* loadEvents(
          sql,
          ledger,
          [...new Set(eventNeeds.map((n) => n.runId))],
          eventNeeds.flatMap((n) => n.address ?? []),
          eventNeeds.flatMap((n) => n.key ?? [])
        )
        for (const change of changes) decide(context, change)
        for (const beat of beats) ledger.beats.set(beat.workerId, beat.livenessMs)
        const children = yield* childStarts(ledger)
        startedChildren = children.map((c) => c.start)
        const started = yield* insertStarts([...plain, ...children.map((c) => c.start)])
        for (const { child, start } of children) {
          child.answer(
            start.outcome instanceof StartedRun
              ? { _tag: "ChildStarted", childRunId: start.outcome.id }
              : start.outcome ?? RunNotFound.of(start.id)
          )
        }
        yield* insertDebounced(debounced)
        const written = yield* write(sql, ledger, streamOf)
        yield* writeFlow(sql, ledger)
        const alive = new Set(written.beaten)
        for (const beat of beats) beat.alive = alive.has(beat.workerId)
        yield* readLeases(ledger, changes.filter((c): c is Claim => c._tag === "Claim"))
        yield* readChanged(changes.filter((c): c is Cancel | Reopen => c._tag === "Cancel" || c._tag === "Reopen"))
        return [...started, ...written.outbox]
      }))
      yield* afterCommit(
        ledger.transitions,
        [...starts, ...startedChildren],
        outboxRows,
        freedBy(ledger, ledger.transitions),
        familyOf(ledger)
      )
    })

  /**
   * The runs a group's `StartChild` writes start: the parent named, the idempotency key given or derived from the
   * parent and the call's place (so asking again finds the same child), the priority the child's version declares,
   * the parent's trace.
   */
  const childStarts = (ledger: Ledger) =>
    Effect.gen(function*() {
      if (ledger.childStarts.length === 0) return []
      const now = yield* Clock.currentTimeMillis
      const policies = yield* flowControl.policies(
        ledger.childStarts.map((c) => ({ name: c.write.workflowName, version: c.write.workflowVersion }))
      )
      return ledger.childStarts.map((child) => {
        const input: StartRunInput = {
          workflowName: child.write.workflowName as WorkflowName,
          workflowVersion: child.write.workflowVersion as WorkflowVersion,
          payload: child.write.payload,
          idempotencyKey: (child.write.idempotencyKey ?? `aiki:child:${child.parentRunId}:${child.sequence}`) as IdempotencyKey,
          parent: { runId: child.parentRunId as RunId, closePolicy: child.write.parentClosePolicy },
          // The child's execution continues the parent's trace.
          traceParent: child.traceParent ?? undefined
        }
        const start: Start = { id: uuidv7({ msecs: now }) as RunId, input, priority: priorityOf(input, policies), outcome: undefined }
        return { child, start }
      })
    })

  /** What a group's committed transitions mean for parents and children: parents to wake, parents cancelled. */
  const familyOf = (ledger: Ledger): Family => {
    const ended: Array<{ readonly parentRunId: RunId; readonly childRunId: RunId }> = []
    const cancelled: Array<RunId> = []
    for (const t of ledger.transitions) {
      if (t.taskAddress !== null || !isTerminal(t.to as RunState)) continue
      const run = ledger.runs.get(t.runId)
      if (run?.parentRunId != null) ended.push({ parentRunId: run.parentRunId as RunId, childRunId: run.id as RunId })
      if (t.to === "cancelled") cancelled.push(t.runId as RunId)
    }
    return { ended, cancelled }
  }

  /**
   * Wakes the parents of children that ended and cancels the children (policy `cancel`) of parents that were
   * cancelled, as changes of their own. Not awaited: the committer must not wait on a group behind it. Should the
   * process die first, the reaper finds both (`Reaper.wakeParents`, `Reaper.cascadeCancels`).
   */
  const followFamily = ({ cancelled, ended }: Family) =>
    Effect.gen(function*() {
      const changes: Array<RunChange> = ended.map((e) => WakeParent(e.parentRunId, e.childRunId))
      if (cancelled.length > 0) {
        const children = yield* sql<{ readonly id: RunId }>`
          SELECT id FROM workflow_runs
          WHERE parent_run_id = ANY(${pgArray(cancelled)}::uuid[])
            AND parent_close_policy = 'cancel' AND state NOT IN ('completed', 'failed', 'cancelled')`.pipe(Effect.orDie)
        for (const child of children) changes.push(Cancel(child.id, "parent_cancelled"))
      }
      if (changes.length > 0) yield* submit({ changes })
    }).pipe(
      Effect.catchCause((cause) => Effect.logWarning("Waking parents or cancelling children failed; the reaper will", cause)),
      Effect.forkIn(scope),
      Effect.asVoid
    )

  /** Everything that must follow a committed change, in one place. */
  const afterCommit = (
    transitions: ReadonlyArray<TransitionRecord>,
    starts: ReadonlyArray<Start>,
    outboxRows: ReadonlyArray<OutboxRow>,
    freed: ReadonlyArray<Freed>,
    family: Family = { ended: [], cancelled: [] }
  ) =>
    Effect.gen(function*() {
      const created = starts.flatMap((s) => s.outcome instanceof StartedRun && s.outcome.created ? [s.input.workflowName] : [])
      yield* Metrics.recordCommitted({ transitions, created, now: yield* Clock.currentTimeMillis })
      if (outboxRows.length > 0) yield* outbox.publishNow(outboxRows)
      yield* flowControl.freed(freed)
      if (family.ended.length > 0 || family.cancelled.length > 0) yield* followFamily(family)
    })

  /** Commits a group; should its transaction fail as a whole, each unit is tried alone so none fails another. */
  const commit = (group: ReadonlyArray<Unit>): Effect.Effect<void> =>
    commitGroup(group).pipe(
      Effect.matchCauseEffect({
        onSuccess: () => Effect.forEach(group, (unit) => Deferred.succeed(unit.done, undefined), { discard: true }),
        onFailure: (cause) =>
          group.length > 1
            ? Effect.forEach(group, (unit) => commit([unit]), { discard: true })
            : Deferred.failCause(group[0]!.done, cause as Cause.Cause<never>).pipe(Effect.asVoid)
      })
    )

  for (let i = 0; i < Math.max(1, config.commitConcurrency); i++) {
    yield* Effect.gen(function*() {
      while (true) yield* commit(yield* Queue.takeBetween(units, 1, maxUnitsPerGroup))
    }).pipe(Effect.forkScoped)
  }

  /** Submits a unit and waits until its group committed; infrastructure failures are defects of the caller. */
  const submit = (parts: { readonly starts?: ReadonlyArray<Start>; readonly changes?: ReadonlyArray<RunChange>; readonly beats?: ReadonlyArray<Beat> }) =>
    Effect.gen(function*() {
      const done = yield* Deferred.make<void>()
      yield* Queue.offer(units, { starts: parts.starts ?? [], changes: parts.changes ?? [], beats: parts.beats ?? [], done })
      yield* Deferred.await(done).pipe(Effect.orDie)
    })

  /** The priority a start gets: its own, else its version's, else the default. */
  const priorityOf = (input: StartRunInput, policies: ReadonlyMap<string, FlowPolicy>) =>
    input.priority ?? policies.get(versionKey(input.workflowName, input.workflowVersion))?.priority ?? defaultPriority

  /** Inserts one run (or, for a debounced start, leaves it without an outcome when its key was taken meanwhile). */
  const insert = Effect.fnUntraced(function*(input: StartRunInput, priority: number) {
    const change: Start = { id: uuidv7({ msecs: yield* Clock.currentTimeMillis }) as RunId, input, priority, outcome: undefined }
    yield* submit({ starts: [change] })
    return change.outcome
  })

  /** The run waiting under `key` that has not started yet, if any. */
  const debounced = (input: StartRunInput, key: string) =>
    sql<{ readonly id: RunId }>`
      SELECT id FROM workflow_runs
      WHERE workflow_name = ${input.workflowName} AND debounce_key = ${key} AND state = 'pending' AND started_at IS NULL`
      .pipe(Effect.map((rows) => rows[0]?.id), Effect.orDie)

  const start = Effect.fn("RunTransitions.start")(function*(input: StartRunInput) {
    const policies = yield* flowControl.policies([{ name: input.workflowName, version: input.workflowVersion }])
    const priority = priorityOf(input, policies)
    const debounce = input.debounce
    if (debounce === undefined) {
      const outcome = (yield* insert(input, priority))!
      return outcome instanceof IdempotencyConflict ? yield* outcome : outcome
    }
    // Replace the payload of the unstarted run holding the key, or start one; the unique index on unstarted runs'
    // debounce keys decides between concurrent starts, and the loser replaces the winner's payload.
    for (let attempt = 0; attempt < 10; attempt++) {
      const holder = yield* debounced(input, debounce.key)
      if (holder !== undefined) {
        const change = Debounce(holder, {
          key: debounce.key,
          payload: input.payload,
          delayMs: debounce.delayMs,
          maxDelayMs: debounce.maxDelayMs ?? null
        })
        yield* submit({ changes: [change] })
        if (change.outcome !== undefined) return change.outcome
      }
      const outcome = yield* insert(input, priority)
      if (outcome !== undefined) return outcome instanceof IdempotencyConflict ? yield* outcome : outcome
    }
    return yield* Effect.die(new Error(`Debounce key ${debounce.key} of ${input.workflowName} changed hands too often to start`))
  })

  const startMany = Effect.fn("RunTransitions.startMany")(function*(inputs: ReadonlyArray<StartRunInput>) {
    const now = yield* Clock.currentTimeMillis
    const policies = yield* flowControl.policies(inputs.map((i) => ({ name: i.workflowName, version: i.workflowVersion })))
    const starts = inputs.map((input): Start | PayloadTooLarge | StartRunInput => {
      const bytes = Buffer.byteLength(JSON.stringify(input.payload))
      if (bytes > config.maxPayloadBytes) {
        return new PayloadTooLarge({
          maxBytes: config.maxPayloadBytes,
          message: `The payload of a run of ${input.workflowName} is ${bytes} bytes, more than the ${config.maxPayloadBytes} bytes the server stores (MAX_PAYLOAD_BYTES)`
        })
      }
      // A debounced start may have to replace another run's payload: it goes on its own.
      if (input.debounce !== undefined) return input
      return { id: uuidv7({ msecs: now }) as RunId, input, priority: priorityOf(input, policies), outcome: undefined }
    })
    const accepted = starts.filter((s): s is Start => !(s instanceof PayloadTooLarge) && "outcome" in s)
    if (accepted.length > 0) yield* submit({ starts: accepted })
    return yield* Effect.forEach(starts, (s): Effect.Effect<StartedRun | IdempotencyConflict | PayloadTooLarge> =>
      s instanceof PayloadTooLarge
        ? Effect.succeed(s)
        : "outcome" in s
        ? Effect.succeed(s.outcome!)
        : start(s).pipe(Effect.catchTag("IdempotencyConflict", (conflict) => Effect.succeed(conflict))))
  })

  const claim = Effect.fn("RunTransitions.claim")(function*(
    workerId: WorkerId,
    runIds: ReadonlyArray<RunId>,
    options: { readonly leaseMs: number; readonly replayVersion: number }
  ) {
    const claims = [...new Set(runIds)].map((id) => Claim(id, workerId, options.leaseMs, options.replayVersion))
    if (claims.length > 0) yield* submit({ changes: claims })
    return new Claims({
      leases: claims.flatMap((c) => c.lease ?? []),
      refused: claims.flatMap((c) =>
        c.outcome === undefined || c.outcome.granted ? [] : [{ runId: c.runId, reason: c.outcome.reason, message: c.outcome.message }]
      )
    })
  })

  const writeAll = Effect.fn("RunTransitions.write")(function*(writes: ReadonlyArray<Write>) {
    const changes = writes.map((w) => WorkerWrite(w))
    yield* submit({ changes })
    return changes.map((c) => c.outcome!)
  })

  const heartbeat = Effect.fn("RunTransitions.heartbeat")(function*(
    workerId: WorkerId,
    runs: ReadonlyArray<HeldRun>,
    options: { readonly leaseMs: number; readonly livenessMs: number }
  ) {
    const beat: Beat = { workerId, livenessMs: options.livenessMs, alive: false }
    const extends_ = runs.map((r) => Extend(r.runId, r.leaseEpoch, workerId, options.leaseMs))
    yield* submit({ changes: extends_, beats: [beat] })
    if (!beat.alive) {
      return yield* new WorkerNotFound({
        workerId,
        message: `Worker ${workerId} is not registered; register it before sending heartbeats`
      })
    }
    const ids = (outcome: Extend["outcome"]) => extends_.filter((e) => e.outcome === outcome).map((e) => e.runId)
    return new HeartbeatReply({ extended: ids("extended"), cancelled: ids("cancelled"), lost: ids("lost") })
  })

  const cancel = Effect.fn("RunTransitions.cancel")(function*(runId: RunId) {
    const change = Cancel(runId)
    yield* submit({ changes: [change] })
    const outcome = change.outcome!
    return outcome === "cancelled" ? change.run! : yield* outcome
  })

  const reopen = (runId: RunId, target: ResetTarget | undefined) =>
    Effect.gen(function*() {
      const change = Reopen(runId, target)
      yield* submit({ changes: [change] })
      const outcome = change.outcome!
      return outcome === "reopened" ? change.run! : yield* outcome
    })

  const retry = Effect.fn("RunTransitions.retry")((runId: RunId) =>
    // Only a target can be missing from the journal: a retry has none.
    reopen(runId, undefined).pipe(Effect.catchTag("InvalidRequest", Effect.die))
  )

  const reset = Effect.fn("RunTransitions.reset")((runId: RunId, target: ResetTarget) => reopen(runId, target))

  const sendEvent = Effect.fn("RunTransitions.sendEvent")(function*(runId: RunId, name: EventName, payload: Json, eventId?: string) {
    const change = SendEvent(runId, name, payload, eventId)
    yield* submit({ changes: [change] })
    const outcome = change.outcome!
    if (!("runState" in outcome)) return yield* outcome
    return new SentEvent({ eventId: outcome.eventId, runState: outcome.runState, ...(outcome.duplicate ? { duplicate: true } : {}) })
  })

  const count = <C extends Requeue | Wake | Offer | TimeOutRun>(make: (id: RunId) => C) => (runIds: ReadonlyArray<RunId>) =>
    Effect.gen(function*() {
      if (runIds.length === 0) return 0
      const changes = runIds.map(make)
      yield* submit({ changes })
      return changes.filter((c) => c.outcome === true).length
    })

  const timeOutAttempts = (
    attempts: ReadonlyArray<{ readonly runId: RunId; readonly address: string; readonly attempt: number }>
  ) =>
    Effect.gen(function*() {
      if (attempts.length === 0) return 0
      const changes = attempts.map((a) => TimeOutAttempt(a.runId, a.address, a.attempt))
      yield* submit({ changes })
      return changes.filter((c) => c.outcome === true).length
    })

  const wakeParents = (ended: ReadonlyArray<{ readonly parentRunId: RunId; readonly childRunId: RunId }>) =>
    Effect.gen(function*() {
      if (ended.length === 0) return 0
      const changes = ended.map((e) => WakeParent(e.parentRunId, e.childRunId))
      yield* submit({ changes })
      return changes.filter((c) => c.outcome === true).length
    })

  const cancelChildren = (childRunIds: ReadonlyArray<RunId>) =>
    Effect.gen(function*() {
      if (childRunIds.length === 0) return 0
      const changes = childRunIds.map((id) => Cancel(id, "parent_cancelled"))
      yield* submit({ changes })
      return changes.filter((c) => c.outcome === "cancelled").length
    })

  return RunTransitions.of({
    wakeParents,
    cancelChildren,
    start,
    startMany,
    claim,
    write: writeAll,
    heartbeat,
    cancel,
    retry,
    reset,
    sendEvent,
    requeueLapsed: count((id) => Requeue(id)),
    wakeDue: count((id) => Wake(id)),
    offer: count((id) => Offer(id)),
    timeOutAttempts,
    timeOutRuns: count((id) => TimeOutRun(id))
  })
})
