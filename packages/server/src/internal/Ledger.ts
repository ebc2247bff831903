/**
 * The rows one group of changes works on, and the row changes the group makes. The runs are locked (in id order,
 * so concurrent groups never deadlock) and read with their tasks; decisions then read and change the ledger in
 * memory, several changes to one run seeing each other; finally `write` turns everything the group changed into
 * ONE statement: run updates, new and changed tasks and attempts, audit-trail rows, outbox rows, events and the
 * `pg_notify` announcements, so they commit (and are announced) together.
 */
import type { Json, WriteResult } from "@aiki/contract/Models"
import type { RunState } from "@aiki/contract/RunState"
import type { TaskState } from "@aiki/contract/TaskState"
import type { TaskTimeoutKind } from "@aiki/contract/Timeouts"
import { Effect } from "effect"
import type { SqlClient } from "effect/sql"
import type { Fragment } from "effect/sql/Statement"
import { FlowLedger, flowOf, type RunFlow, type RunFlowRow } from "./flowControl.ts"
import type { RunRow } from "./rows.ts"
import { attemptsJson, pgArray } from "./sql.ts"

/** A run as its group sees it: the columns decisions read and change. */
export interface LedgerRun {
  readonly id: string
  readonly workflowName: string
  readonly workflowVersion: string
  readonly createdAt: Date
  /** Its lease expired by the database's clock. */
  readonly leaseLapsed: boolean
  /** The worker holding it stopped renewing its liveness. */
  readonly ownerGone: boolean
  /** A parked run whose wake-up time has come. */
  readonly due: boolean
  /** Its execution deadline passed (by the database's clock). */
  readonly deadlinePassed: boolean
  /** It was never claimed and its schedule-to-start deadline passed. */
  readonly startDeadlinePassed: boolean
  /** How many times in a row its lease lapsed without progress. */
  lapses: number
  state: RunState
  leaseEpoch: number
  leaseOwner: string | null
  awaitingEvents: ReadonlyArray<string> | null
  /** While parked: the children whose end wakes it. */
  awaitingChildren: ReadonlyArray<string> | null
  /** The run that started it as a child, if one did. */
  readonly parentRunId: string | null
  /** The trace its execution continues (its children's continue it too). */
  readonly traceParent: string | null
  replayVersion: number | null
  /** The workflow attempt (over the run's life) and the attempt its retry policy counts (see migration 0012). */
  attempt: number
  policyAttempt: number
  /** How many times the run was reset (a reset's discarded entries carry its number). */
  resets: number
  /** Its priority, the keys it shares limits under, and what it waits for (see `flowControl.ts`). */
  readonly flow: RunFlow
  /** What `write` must change, when anything. */
  patch: RunPatch | undefined
  /** The run's revision as read (migration 0014): a guarded write applies only if it is still this one. */
  readonly revision: string
}

/** Changes to a run row beyond its control columns (which are always written for a changed run). */
export interface RunPatch {
  /** New lease length from now; `null` clears the expiry. */
  leaseMs?: number | null
  /** A parked run's wake-up time (ISO), or `null`. */
  wakeAt?: string | null
  result?: Json
  error?: Json
  /** Why the server failed the run (`Timeouts.FailureReason`). */
  failureReason?: string
  started?: true
  finished?: true
  /** Retried or reset by hand: its result, error, end and failure reason are cleared, its timeouts start again. */
  reopened?: true
}

export interface LedgerAttempt {
  readonly attempt: number
  readonly leaseEpoch: number
  finished: boolean
  /** The server closed it for a timeout: which one. */
  timedOut: TaskTimeoutKind | null
  /** Open and past one of its deadlines (by the database's clock), and which. */
  readonly overdue: TaskTimeoutKind | null
}

/** A journal entry as its group sees it. */
export interface LedgerEntry {
  readonly runId: string
  readonly address: string
  readonly sequence: number
  readonly name: string
  state: TaskState
  outcomeOrder: number | null
  notBefore: string | null
  /** `notBefore` has passed by the database's clock (read with the entry; false for an entry new in this group). */
  readonly due?: boolean
  attempts: Array<LedgerAttempt>
  /** Created by this group (inserted with its final state), or read from the database (updated). */
  readonly isNew: boolean
  /** For a new entry. */
  readonly payload?: Json
  changed: boolean
  /** Set when this group gave the entry a result or an error. */
  result: Json | undefined
  error: Json | undefined
}

/** An attempt row this group inserts or finishes. */
export interface AttemptWrite {
  readonly runId: string
  readonly address: string
  readonly attempt: number
  readonly leaseEpoch: number
  readonly isNew: boolean
  /** A new attempt began this long before the statement (its start travelled with its outcome). */
  startedAgoMs: number
  finished: boolean
  error: Json | null
  /** A new attempt's deadlines. */
  timeoutMs?: number | undefined
  heartbeatTimeoutMs?: number | undefined
  /** A new attempt that heartbeat in the same group (its row is inserted with the beat). */
  beat?: { readonly details: Json | undefined } | undefined
}

/** A heartbeat of an open attempt: its heartbeat timeout starts over. */
export interface AttemptBeat {
  readonly runId: string
  readonly address: string
  readonly attempt: number
  readonly details: Json | undefined
}

/**
 * An announcement for a worker beside the state changes: an attempt of its run timed out, or the server ended its
 * run. Carried on the same channel (`RunNotifications`), naming the worker, so its signals stream needs no query.
 */
export interface Notice {
  readonly runId: string
  readonly task: string | null
  readonly state: string
  readonly owner: string
  readonly timedOut?: { readonly attempt: number; readonly kind: TaskTimeoutKind }
  readonly stopped?: string
}

export interface TransitionRecord {
  readonly runId: string
  readonly taskAddress: string | null
  readonly from: string | null
  readonly to: string
  readonly reason: string
  readonly leaseEpoch: number | null
  readonly workerId: string | null
  /** For the post-commit hook: the run's version (metrics) and when it was created (durations). */
  readonly workflowName: string
  readonly runCreatedAt: Date | null
}

/** An event a run holds for its next wait of that name. */
export interface LedgerEvent {
  readonly id: string
  /** The sender's id for it (`SendEvent.eventId`), if any. */
  readonly key: string | null
  /** When it was sent (epoch ms, the database's clock); undefined for an event sent in this group (now). */
  readonly sentAt?: number
  /** Sent in this group (inserted), or read from the database. */
  readonly isNew: boolean
  readonly runId: string
  readonly name: string
  readonly payload: Json
  consumedBy: string | null
  changed: boolean
}

/** A reset: the run's journal entries from `fromSequence` on move to `discarded_tasks` under reset number `reset`. */
export interface Discard {
  readonly runId: string
  readonly fromSequence: number
  readonly reset: number
}

/** A journal entry's place and name: what a reset finds its target among. */
export interface JournalHead {
  readonly sequence: number
  readonly name: string
}

/** A child run as an `AwaitChild` or a `ParkRun` needs to know it (read, not locked: see `loadChildren`). */
export interface LedgerChild {
  readonly id: string
  readonly state: RunState
  readonly result: Json | null
  readonly error: Json | null
}

/** A child a `StartChild` asks for: inserted with the group's starts, its run id then answers the write. */
export interface ChildStart {
  readonly parentRunId: string
  readonly traceParent: string | null
  readonly sequence: number
  readonly write: {
    readonly workflowName: string
    readonly workflowVersion: string
    readonly payload: Json
    readonly idempotencyKey?: string | undefined
    readonly parentClosePolicy: "cancel" | "abandon"
  }
  /** Answers the write once the group inserted the child (or found the run its idempotency key names). */
  readonly answer: (outcome: WriteResult) => void
}

export interface OutboxRow {
  readonly id: string
  readonly runId: string
  readonly stream: string
}

export class Ledger {
  readonly runs = new Map<string, LedgerRun>()
  readonly entries = new Map<string, LedgerEntry>()
  readonly attempts = new Map<string, AttemptWrite>()
  readonly attemptBeats: Array<AttemptBeat> = []
  readonly notices: Array<Notice> = []
  readonly transitions: Array<TransitionRecord> = []
  /** Runs that became runnable: an outbox row each (when streams are on). */
  readonly runnable = new Set<string>()
  readonly events: Array<LedgerEvent> = []
  /** Runs whose events were read (`loadEvents`). */
  readonly eventsLoaded = new Set<string>()
  /** Workers whose liveness this group renews: worker id → liveness in ms. */
  readonly beats = new Map<string, number>()
  /** Flow control: the counts claims are decided against, and the waits the group sets or clears. */
  readonly flow = new FlowLedger()
  /** The journal heads of runs being reset (`loadJournalHeads`), in call order. */
  readonly journals = new Map<string, ReadonlyArray<JournalHead>>()
  /** Resets: entries the group discards. */
  readonly discards: Array<Discard> = []
  /** Children awaited or parked on, as read before deciding. */
  readonly children = new Map<string, LedgerChild>()
  /** Child runs `StartChild` writes asked for, inserted after the group decided. */
  readonly childStarts: Array<ChildStart> = []

  entry(runId: string, address: string): LedgerEntry | undefined {
    return this.entries.get(entryKey(runId, address))
  }

  addEntry(entry: LedgerEntry) {
    this.entries.set(entryKey(entry.runId, entry.address), entry)
  }

  patch(run: LedgerRun, patch: RunPatch) {
    run.patch = { ...run.patch, ...patch }
  }

  attempt(runId: string, address: string, attempt: number): AttemptWrite | undefined {
    return this.attempts.get(`${entryKey(runId, address)}|${attempt}`)
  }

  writeAttempt(write: AttemptWrite) {
    this.attempts.set(`${entryKey(write.runId, write.address)}|${write.attempt}`, write)
  }

  record(run: LedgerRun, entry: Omit<TransitionRecord, "runId" | "workflowName" | "runCreatedAt">) {
    this.transitions.push({ ...entry, runId: run.id, workflowName: run.workflowName, runCreatedAt: run.createdAt })
  }
}

const entryKey = (runId: string, address: string) => `${runId}|${address}`

interface LockedRow extends RunFlowRow {
  readonly id: string
  readonly workflow_name: string
  readonly workflow_version: string
  readonly created_at: Date
  readonly state: RunState
  readonly lease_epoch: number
  readonly lease_owner: string | null
  readonly lease_lapsed: boolean
  readonly owner_gone: boolean
  readonly due: boolean
  readonly deadline_passed: boolean
  readonly start_deadline_passed: boolean
  readonly lapses: number
  readonly awaiting_events: ReadonlyArray<string> | null
  readonly awaiting_children: ReadonlyArray<string> | null
  readonly parent_run_id: string | null
  readonly trace_parent: string | null
  readonly replay_version: number | null
  readonly attempt: number
  readonly policy_attempt: number
  readonly resets: number
  readonly revision: string
}

/** The runs at `runIds` as a group reads them (in id order), with what the database's clock says of them. */
const runsSelect = (sql: SqlClient.SqlClient, runIds: ReadonlyArray<string>) =>
  sql`
    SELECT r.id, r.workflow_name, r.workflow_version, r.created_at, r.state, r.lease_epoch, r.lease_owner,
      COALESCE(r.lease_expires_at < now(), false) AS lease_lapsed,
      COALESCE(w.alive_until < now(), false) AS owner_gone,
      COALESCE(r.wake_at <= now(), false) AS due,
      COALESCE(r.deadline_at <= now(), false) AS deadline_passed,
      COALESCE(r.start_deadline_at <= now() AND r.started_at IS NULL, false) AS start_deadline_passed, r.lapses,
      r.awaiting_events, r.awaiting_children, r.parent_run_id, r.trace_parent, r.replay_version,
      r.attempt, r.policy_attempt, r.resets, r.revision::text AS revision,
      r.priority, r.concurrency_key, r.concurrency_limit, r.ordering_key, r.rate_limit_key, r.debounce_key,
      r.waiting_reason, COALESCE(r.waiting_until <= now(), true) AS waiting_due, r.started_at IS NOT NULL AS started
    FROM workflow_runs r LEFT JOIN workers w ON w.id = r.lease_owner AND r.state = 'running'
    WHERE r.id = ANY(${pgArray(runIds)}::uuid[])
    ORDER BY r.id`

const addRuns = (ledger: Ledger, rows: ReadonlyArray<LockedRow>) => {
  for (const row of rows) {
    ledger.runs.set(row.id, {
      id: row.id,
      workflowName: row.workflow_name,
      workflowVersion: row.workflow_version,
      createdAt: row.created_at,
      leaseLapsed: row.lease_lapsed,
      ownerGone: row.owner_gone,
      due: row.due,
      deadlinePassed: row.deadline_passed,
      startDeadlinePassed: row.start_deadline_passed,
      lapses: row.lapses,
      state: row.state,
      leaseEpoch: row.lease_epoch,
      leaseOwner: row.lease_owner,
      awaitingEvents: row.awaiting_events,
      awaitingChildren: row.awaiting_children,
      parentRunId: row.parent_run_id,
      traceParent: row.trace_parent,
      replayVersion: row.replay_version,
      attempt: row.attempt,
      policyAttempt: row.policy_attempt,
      resets: row.resets,
      flow: flowOf(row),
      patch: undefined,
      revision: row.revision
    })
  }
}

/** Locks `runIds` (in id order) for the rest of the transaction and adds them to the ledger. */
export const lockRuns = (sql: SqlClient.SqlClient, ledger: Ledger, runIds: ReadonlyArray<string>) =>
  runIds.length === 0 ? Effect.void : sql<LockedRow>`${runsSelect(sql, runIds)} FOR UPDATE OF r`.pipe(
    Effect.map((rows) => addRuns(ledger, rows))
  )

/**
 * Reads `runIds` and the entries at `keys` without a lock, in one statement: one snapshot, so what a guarded write
 * (`write`'s `guarded`) is decided on is consistent, and any change committed since raised a run's revision.
 */
export const readRuns = (
  sql: SqlClient.SqlClient,
  ledger: Ledger,
  runIds: ReadonlyArray<string>,
  keys: ReadonlyArray<{ readonly runId: string; readonly address: string }>
) =>
  runIds.length === 0 ? Effect.void : sql<{
    // Through JSON, timestamps arrive as text.
    readonly runs: ReadonlyArray<Omit<LockedRow, "created_at"> & { readonly created_at: string }>
    readonly entries: ReadonlyArray<Omit<EntryRow, "not_before"> & { readonly not_before: string | null }> | null
  }>`
    WITH runs AS (${runsSelect(sql, runIds)})
    SELECT (SELECT jsonb_agg(runs) FROM runs) AS runs,
      ${keys.length === 0 ? sql`NULL::jsonb` : sql`(SELECT jsonb_agg(e) FROM (${entriesSelect(sql, keys)}) e)`} AS entries`.pipe(
    Effect.map(([row]) => {
      addRuns(ledger, (row?.runs ?? []).map((r) => ({ ...r, created_at: new Date(r.created_at) })))
      addEntries(ledger, (row?.entries ?? []).map((e) => ({ ...e, not_before: e.not_before === null ? null : new Date(e.not_before) })))
    })
  )

/** Reads the journal heads (place and name of each entry) of runs being reset, their runs locked already. */
export const loadJournalHeads = (sql: SqlClient.SqlClient, ledger: Ledger, runIds: ReadonlyArray<string>) =>
  runIds.length === 0 ? Effect.void : sql<{ readonly run_id: string; readonly sequence: number; readonly name: string }>`
    SELECT run_id, sequence, name FROM tasks
    WHERE run_id = ANY(${pgArray(runIds)}::uuid[])
    ORDER BY run_id, sequence, seq`.pipe(
    Effect.map((rows) => {
      for (const runId of runIds) ledger.journals.set(runId, rows.filter((r) => r.run_id === runId))
    })
  )

interface EntryRow {
  readonly run_id: string
  readonly address: string
  readonly sequence: number
  readonly name: string
  readonly state: TaskState
  readonly outcome_order: number | null
  readonly not_before: Date | null
  readonly due: boolean
  readonly attempts: ReadonlyArray<readonly [number, number, boolean, TaskTimeoutKind | null, TaskTimeoutKind | null]>
}

/** The entries at `keys`, each with its attempts and what the database's clock says of their deadlines. */
const entriesSelect = (sql: SqlClient.SqlClient, keys: ReadonlyArray<{ readonly runId: string; readonly address: string }>) =>
  sql`
    SELECT t.run_id, t.address, t.sequence, t.name, t.state, t.outcome_order, t.not_before,
      COALESCE(t.not_before <= now(), false) AS due,
      COALESCE((
        SELECT jsonb_agg(jsonb_build_array(a.attempt, a.lease_epoch, a.finished_at IS NOT NULL,
          CASE WHEN a.error->>'name' = 'TaskTimedOut' THEN a.error->'data'->>'kind' END,
          CASE WHEN a.finished_at IS NOT NULL THEN NULL
            WHEN a.timeout_at <= now() THEN 'start_to_close'
            WHEN COALESCE(a.heartbeat_at, a.started_at) + make_interval(secs => a.heartbeat_timeout_ms / 1000.0) <= now()
              THEN 'heartbeat' END) ORDER BY a.attempt)
        FROM task_attempts a WHERE a.run_id = t.run_id AND a.address = t.address
      ), '[]'::jsonb) AS attempts
    FROM tasks t
    JOIN jsonb_to_recordset(${JSON.stringify(keys.map((k) => ({ run_id: k.runId, address: k.address })))}::jsonb)
      AS k(run_id uuid, address text) ON t.run_id = k.run_id AND t.address = k.address
    WHERE t.run_id = ANY(${pgArray([...new Set(keys.map((k) => k.runId))])}::uuid[])`

const addEntries = (ledger: Ledger, rows: ReadonlyArray<EntryRow>) => {
  for (const row of rows) {
    ledger.addEntry({
      runId: row.run_id,
      address: row.address,
      sequence: row.sequence,
      name: row.name,
      state: row.state,
      outcomeOrder: row.outcome_order,
      notBefore: row.not_before === null ? null : row.not_before.toISOString(),
      due: row.due,
      attempts: row.attempts.map(([attempt, leaseEpoch, finished, timedOut, overdue]) => ({
        attempt,
        leaseEpoch,
        finished,
        timedOut,
        overdue
      })),
      isNew: false,
      changed: false,
      result: undefined,
      error: undefined
    })
  }
}

/** Reads the entries at `keys` (their runs locked already) into the ledger. */
export const loadEntries = (
  sql: SqlClient.SqlClient,
  ledger: Ledger,
  keys: ReadonlyArray<{ readonly runId: string; readonly address: string }>
) =>
  keys.length === 0 ? Effect.void : sql<EntryRow>`${entriesSelect(sql, keys)}`.pipe(
    Effect.map((rows) => addEntries(ledger, rows))
  )

/**
 * Reads the events of `runIds` that no entry received yet, those received by `addresses` (a repeated
 * `ReceiveEvent` answers with the event it got the first time) and those sent with `keys` (a repeated send).
 */
export const loadEvents = (
  sql: SqlClient.SqlClient,
  ledger: Ledger,
  runIds: ReadonlyArray<string>,
  addresses: ReadonlyArray<string>,
  keys: ReadonlyArray<string> = []
) =>
  runIds.length === 0 ? Effect.void : sql<{
    readonly id: string
    readonly event_key: string | null
    readonly sent_ms: number
    readonly run_id: string
    readonly name: string
    readonly payload: Json
    readonly consumed_by: string | null
  }>`
    SELECT id::text AS id, event_key, (extract(epoch FROM sent_at) * 1000)::float8 AS sent_ms, run_id, name, payload,
      consumed_by FROM run_events
    WHERE run_id = ANY(${pgArray(runIds)}::uuid[])
      AND (consumed_by IS NULL
        OR consumed_by = ANY(${pgArray(addresses)}::text[])
        OR event_key = ANY(${pgArray(keys)}::text[]))
    ORDER BY id`.pipe(
    Effect.map((rows) => {
      for (const runId of runIds) ledger.eventsLoaded.add(runId)
      for (const row of rows) {
        ledger.events.push({
          id: row.id,
          key: row.event_key,
          sentAt: row.sent_ms,
          isNew: false,
          runId: row.run_id,
          name: row.name,
          payload: row.payload,
          consumedBy: row.consumed_by,
          changed: false
        })
      }
    })
  )

/**
 * Reads the children at `ids` as they are committed now. They are not locked: a child that ends after this read
 * commits after it, and its post-commit hook (or the reaper) then wakes the parent once this group committed.
 */
export const loadChildren = (sql: SqlClient.SqlClient, ledger: Ledger, ids: ReadonlyArray<string>) =>
  ids.length === 0 ? Effect.void : sql<{
    readonly id: string
    readonly state: RunState
    readonly result: Json | null
    readonly error: Json | null
  }>`
    SELECT id, state, result, error FROM workflow_runs
    WHERE id = ANY(${pgArray(ids)}::uuid[])`.pipe(
    Effect.map((rows) => {
      for (const row of rows) ledger.children.set(row.id, row)
    })
  )

const json = (value: unknown) => JSON.stringify(value)

/**
 * What a group's statement created besides its rows: outbox rows to publish, and the workers whose beat landed.
 * `applied` is false only for a guarded write that found a run moved since it was read: it wrote nothing.
 */
export interface Written {
  readonly applied: boolean
  readonly outbox: ReadonlyArray<OutboxRow>
  readonly beaten: ReadonlyArray<string>
  /** The rows of the runs `options.returning` named, as the statement left them, read on the database's clock. */
  readonly returned: ReadonlyArray<RunRow & { readonly server_time: Date }>
}

const nothingWritten: Written = { applied: true, outbox: [], beaten: [], returned: [] }

/**
 * Writes everything the ledger changed in one statement (its data-modifying parts all run, and commit, together).
 * Every run it touches gets its revision raised. `guarded`: the runs were read without a lock, so the statement
 * applies only if each run it touches is still at the revision read, and otherwise writes nothing
 * (`applied: false`). Its run update takes the rows' locks and checks the revisions first; every other part reads
 * that check's count before it writes a row.
 */
export const write = (
  sql: SqlClient.SqlClient,
  ledger: Ledger,
  streamOf: (run: LedgerRun) => string | null,
  options: {
    readonly guarded: boolean
    /** Runs whose rows the statement returns as it wrote them (a claim's lease, without a read after it). */
    readonly returning?: ReadonlyArray<string>
  } = { guarded: false }
) => {
  const entries = [...ledger.entries.values()].filter((entry) => entry.changed)
  const attempts = [...ledger.attempts.values()]
  const events = ledger.events.filter((event) => event.changed)
  const touched = new Set<string>([
    ...[...ledger.runs.values()].filter((run) => run.patch !== undefined).map((run) => run.id),
    ...entries.map((e) => e.runId),
    ...attempts.map((a) => a.runId),
    ...ledger.attemptBeats.map((b) => b.runId),
    ...events.map((e) => e.runId),
    ...ledger.discards.map((d) => d.runId),
    ...ledger.transitions.map((t) => t.runId),
    ...ledger.runnable
  ])
  const runs = [...ledger.runs.values()].filter((run) => touched.has(run.id))
  const outbox = [...ledger.runnable].flatMap((runId) => {
    const run = ledger.runs.get(runId)
    const stream = run === undefined ? null : streamOf(run)
    return stream === null ? [] : [{ run_id: runId, stream }]
  })
  // One announcement per run that changed state and per changed entry: followers re-read what changed. A lease
  // extension alone is not announced.
  const moved = new Set(ledger.transitions.filter((t) => t.taskAddress === null).map((t) => t.runId))
  // Entries first: a follower stops at a run's final state, so it must have seen the run's tasks by then.
  const announcements = [
    ...entries.map((entry) => ({ runId: entry.runId, task: entry.address, state: entry.state })),
    ...runs.filter((run) => moved.has(run.id)).map((run) => ({ runId: run.id, task: null, state: run.state })),
    ...ledger.notices
  ]
  if (
    runs.length + entries.length + attempts.length + events.length + ledger.transitions.length + ledger.beats.size +
        ledger.attemptBeats.length +
        ledger.discards.length === 0
  ) {
    return Effect.succeed(nothingWritten)
  }
  const runRows = runs.map((run) => {
    const patch = run.patch ?? {}
    return {
      id: run.id,
      revision: options.guarded ? run.revision : null,
      patched: run.patch !== undefined,
      state: run.state,
      lease_epoch: run.leaseEpoch,
      lease_owner: run.leaseOwner,
      lapses: run.lapses,
      failure_reason: patch.failureReason ?? null,
      awaiting_events: run.awaitingEvents,
      awaiting_children: run.awaitingChildren,
      replay_version: run.replayVersion,
      attempt: run.attempt,
      policy_attempt: run.policyAttempt,
      resets: run.resets,
      reopened: patch.reopened === true,
      set_lease: patch.leaseMs !== undefined,
      lease_ms: patch.leaseMs ?? null,
      set_wake: patch.wakeAt !== undefined,
      wake_at: patch.wakeAt ?? null,
      set_result: patch.result !== undefined,
      result: patch.result === undefined ? null : json(patch.result),
      set_error: patch.error !== undefined,
      error: patch.error === undefined ? null : json(patch.error),
      started: patch.started === true,
      finished: patch.finished === true
    }
  })
  const entryRow = (entry: LedgerEntry) => ({
    run_id: entry.runId,
    address: entry.address,
    sequence: entry.sequence,
    name: entry.name,
    state: entry.state,
    payload: entry.payload === undefined ? null : json(entry.payload),
    result: entry.result === undefined ? null : json(entry.result),
    error: entry.error === undefined ? null : json(entry.error),
    set_result: entry.result !== undefined,
    outcome_order: entry.outcomeOrder,
    not_before: entry.notBefore
  })
  const attemptRow = (a: AttemptWrite) => ({
    run_id: a.runId,
    address: a.address,
    attempt: a.attempt,
    lease_epoch: a.leaseEpoch,
    started_ago_ms: a.startedAgoMs,
    finished: a.finished,
    error: a.error === null ? null : json(a.error),
    timeout_ms: a.timeoutMs ?? null,
    heartbeat_timeout_ms: a.heartbeatTimeoutMs ?? null,
    beat: a.beat !== undefined,
    beat_details: a.beat?.details === undefined ? null : json(a.beat.details)
  })
  const newEntries = entries.filter((e) => e.isNew)
  const changedEntries = entries.filter((e) => !e.isNew)
  const newAttempts = attempts.filter((a) => a.isNew)
  const finishedAttempts = attempts.filter((a) => !a.isNew && a.finished)
  const newEvents = events.filter((e) => e.isNew)
  const consumedEvents = events.filter((e) => !e.isNew)
  const runIdsOf = (rows: ReadonlyArray<{ readonly runId: string }>) => pgArray([...new Set(rows.map((r) => r.runId))])
  // Guarded: a part writes its rows only if the run update found every touched run at its revision.
  const ok = options.guarded ? sql`AND (SELECT count(*) FROM run_updates) = ${runRows.length}` : sql``
  // Only the parts with rows to write are in the statement: Postgres runs every data-modifying part of a statement,
  // rows or not. Each part finds its rows by index (`= ANY(array)`), never by a scan of the table.
  const parts: Array<Fragment> = []
  const returning = runRows.length > 0 && options.returning !== undefined && options.returning.length > 0
    ? options.returning
    : undefined
  const runIds = pgArray(runs.map((run) => run.id))
  if (options.guarded && runRows.length > 0) {
    // In id order, as every group locks runs, so this statement and a locked group never wait for each other in a
    // cycle. A row another group changed meanwhile is locked as it now is; the update below then skips it.
    parts.push(sql`locked AS (
      SELECT id FROM workflow_runs WHERE id = ANY(${runIds}::uuid[]) ORDER BY id FOR UPDATE
    )`)
  }
  // Guarded: reading `locked`'s count (an init plan, always true) makes the update wait until every lock is taken,
  // in order, before it changes a row.
  const lockedFirst = options.guarded && runRows.length > 0 ? sql`AND (SELECT count(*) FROM locked) >= 0` : sql``
  if (runRows.length > 0) {
    parts.push(sql`run_updates AS (
      UPDATE workflow_runs r SET
        state = u.state, lease_epoch = u.lease_epoch, lease_owner = u.lease_owner, lapses = u.lapses,
        failure_reason = CASE WHEN u.reopened THEN NULL ELSE COALESCE(u.failure_reason, r.failure_reason) END,
        -- A reopened run gets its timeouts again, as long as they were, from now (they were set from its creation).
        deadline_at = CASE WHEN u.reopened AND r.deadline_at IS NOT NULL THEN now() + (r.deadline_at - r.created_at)
          ELSE r.deadline_at END,
        start_deadline_at = CASE WHEN u.reopened AND r.start_deadline_at IS NOT NULL
          THEN now() + (r.start_deadline_at - r.created_at) ELSE r.start_deadline_at END,
        awaiting_events = u.awaiting_events, awaiting_children = u.awaiting_children,
        replay_version = u.replay_version,
        attempt = u.attempt, policy_attempt = u.policy_attempt, resets = u.resets,
        lease_expires_at = CASE WHEN NOT u.set_lease THEN r.lease_expires_at
          WHEN u.lease_ms IS NULL THEN NULL ELSE now() + make_interval(secs => u.lease_ms / 1000.0) END,
        wake_at = CASE WHEN u.set_wake THEN u.wake_at ELSE r.wake_at END,
        result = CASE WHEN u.set_result THEN u.result::json WHEN u.reopened THEN NULL ELSE r.result END,
        error = CASE WHEN u.set_error THEN u.error::json WHEN u.reopened THEN NULL ELSE r.error END,
        started_at = CASE WHEN u.started THEN COALESCE(r.started_at, now()) ELSE r.started_at END,
        finished_at = CASE WHEN u.finished THEN now() WHEN u.reopened THEN NULL ELSE r.finished_at END,
        updated_at = CASE WHEN u.patched THEN now() ELSE r.updated_at END,
        revision = r.revision + 1
      FROM jsonb_to_recordset(${json(runRows)}::jsonb) AS u(
        id uuid, revision bigint, patched boolean, state text, lease_epoch int, lease_owner text, lapses int, failure_reason text, awaiting_events text[],
        awaiting_children uuid[],
        replay_version int, attempt int, policy_attempt int, resets int, reopened boolean,
        set_lease boolean, lease_ms int, set_wake boolean, wake_at timestamptz, set_result boolean, result text,
        set_error boolean, error text, started boolean, finished boolean)
      WHERE r.id = u.id AND r.id = ANY(${runIds}::uuid[])
        AND (u.revision IS NULL OR r.revision = u.revision)
        ${lockedFirst}
      -- Whole rows only when some are returned: a write's run update need not carry its payload and result along.
      RETURNING ${returning === undefined ? sql`r.id` : sql`r.*`}
    )`)
  }
  if (newEntries.length > 0) {
    parts.push(sql`entry_inserts AS (
      INSERT INTO tasks (run_id, address, sequence, name, state, payload, result, error, outcome_order, not_before)
      SELECT e.run_id, e.address, e.sequence, e.name, e.state, e.payload::json, e.result::json, e.error::json,
        e.outcome_order, e.not_before
      FROM jsonb_to_recordset(${json(newEntries.map(entryRow))}::jsonb) AS e(
        run_id uuid, address text, sequence int, name text, state text, payload text, result text, error text,
        set_result boolean, outcome_order int, not_before timestamptz)
      WHERE true ${ok}
      RETURNING 1
    )`)
  }
  if (changedEntries.length > 0) {
    parts.push(sql`entry_updates AS (
      UPDATE tasks t SET state = e.state, outcome_order = e.outcome_order, not_before = e.not_before,
        result = CASE WHEN e.set_result THEN e.result::json ELSE t.result END,
        error = e.error::json, updated_at = now()
      FROM jsonb_to_recordset(${json(changedEntries.map(entryRow))}::jsonb) AS e(
        run_id uuid, address text, sequence int, name text, state text, payload text, result text, error text,
        set_result boolean, outcome_order int, not_before timestamptz)
      WHERE t.run_id = e.run_id AND t.address = e.address AND t.run_id = ANY(${runIdsOf(changedEntries)}::uuid[]) ${ok}
      RETURNING 1
    )`)
  }
  if (newAttempts.length > 0) {
    parts.push(sql`attempt_inserts AS (
      INSERT INTO task_attempts (run_id, address, attempt, lease_epoch, started_at, finished_at, error, timeout_at,
        heartbeat_timeout_ms, heartbeat_at, heartbeat_details)
      SELECT a.run_id, a.address, a.attempt, a.lease_epoch,
        now() - make_interval(secs => a.started_ago_ms / 1000.0), CASE WHEN a.finished THEN now() END, a.error::json,
        now() - make_interval(secs => a.started_ago_ms / 1000.0) + make_interval(secs => a.timeout_ms / 1000.0),
        a.heartbeat_timeout_ms, CASE WHEN a.beat THEN now() END, a.beat_details::json
      FROM jsonb_to_recordset(${json(newAttempts.map(attemptRow))}::jsonb) AS a(
        run_id uuid, address text, attempt int, lease_epoch int, started_ago_ms int, finished boolean, error text,
        timeout_ms bigint, heartbeat_timeout_ms int, beat boolean, beat_details text)
      WHERE true ${ok}
      RETURNING 1
    )`)
  }
  if (ledger.attemptBeats.length > 0) {
    parts.push(sql`attempt_beats AS (
      UPDATE task_attempts t SET heartbeat_at = now(), heartbeat_details = COALESCE(b.details::json, t.heartbeat_details)
      FROM jsonb_to_recordset(${
      json(ledger.attemptBeats.map((b) => ({
        run_id: b.runId,
        address: b.address,
        attempt: b.attempt,
        details: b.details === undefined ? null : json(b.details)
      })))
    }::jsonb) AS b(run_id uuid, address text, attempt int, details text)
      WHERE t.run_id = b.run_id AND t.address = b.address AND t.attempt = b.attempt AND t.finished_at IS NULL
        AND t.run_id = ANY(${runIdsOf(ledger.attemptBeats)}::uuid[]) ${ok}
      RETURNING 1
    )`)
  }
  if (finishedAttempts.length > 0) {
    parts.push(sql`attempt_updates AS (
      UPDATE task_attempts t SET finished_at = now(), error = a.error::json
      FROM jsonb_to_recordset(${json(finishedAttempts.map(attemptRow))}::jsonb) AS a(
        run_id uuid, address text, attempt int, lease_epoch int, started_ago_ms int, finished boolean, error text)
      WHERE t.run_id = a.run_id AND t.address = a.address AND t.attempt = a.attempt
        AND t.run_id = ANY(${runIdsOf(finishedAttempts)}::uuid[]) ${ok}
      RETURNING 1
    )`)
  }
  if (ledger.transitions.length > 0) {
    parts.push(sql`recorded AS (
      INSERT INTO transitions (run_id, task_address, from_state, to_state, reason, lease_epoch, worker_id)
      SELECT run_id, task_address, from_state, to_state, reason, lease_epoch, worker_id
      FROM jsonb_to_recordset(${
      json(ledger.transitions.map((t) => ({
        run_id: t.runId,
        task_address: t.taskAddress,
        from_state: t.from,
        to_state: t.to,
        reason: t.reason,
        lease_epoch: t.leaseEpoch,
        worker_id: t.workerId
      })))
    }::jsonb) AS t(run_id uuid, task_address text, from_state text, to_state text, reason text, lease_epoch int,
        worker_id text)
      WHERE true ${ok}
      RETURNING 1
    )`)
  }
  if (outbox.length > 0) {
    parts.push(sql`queued AS (
      INSERT INTO outbox (run_id, stream)
      SELECT run_id, stream FROM jsonb_to_recordset(${json(outbox)}::jsonb) AS o(run_id uuid, stream text)
      WHERE true ${ok}
      RETURNING id::text AS id, run_id, stream
    )`)
  }
  if (newEvents.length > 0) {
    parts.push(sql`events_inserted AS (
      INSERT INTO run_events (id, event_key, run_id, name, payload, consumed_by, consumed_at)
      SELECT id, event_key, run_id, name, payload::json, consumed_by, CASE WHEN consumed_by IS NOT NULL THEN now() END
      FROM jsonb_to_recordset(${
      json(newEvents.map((e) => ({
        id: e.id,
        event_key: e.key,
        run_id: e.runId,
        name: e.name,
        payload: json(e.payload),
        consumed_by: e.consumedBy
      })))
    }::jsonb) AS e(id bigint, event_key text, run_id uuid, name text, payload text, consumed_by text)
      WHERE true ${ok}
      RETURNING 1
    )`)
  }
  if (consumedEvents.length > 0) {
    parts.push(sql`events_consumed AS (
      UPDATE run_events v SET consumed_by = e.consumed_by, consumed_at = now()
      FROM jsonb_to_recordset(${
      json(consumedEvents.map((e) => ({ id: e.id, consumed_by: e.consumedBy })))
    }::jsonb) AS e(id bigint, consumed_by text)
      WHERE v.id = e.id AND v.id = ANY(${pgArray(consumedEvents.map((e) => e.id))}::bigint[]) ${ok}
      RETURNING 1
    )`)
  }
  if (ledger.discards.length > 0) {
    parts.push(sql`discarded AS (
      -- A reset: the entries move to discarded_tasks with their attempts (which the delete cascades to); every part
      -- of this statement reads the rows as they were before it, so the attempts are still there to copy.
      DELETE FROM tasks t
      USING jsonb_to_recordset(${json(ledger.discards.map((d) => ({ run_id: d.runId, from_sequence: d.fromSequence, reset: d.reset })))}::jsonb)
        AS d(run_id uuid, from_sequence int, reset int)
      WHERE t.run_id = d.run_id AND t.sequence >= d.from_sequence AND t.run_id = ANY(${runIdsOf(ledger.discards)}::uuid[])
        ${ok}
      RETURNING t.*, d.reset
    ), archived AS (
      INSERT INTO discarded_tasks (run_id, reset, sequence, address, entry)
      SELECT d.run_id, d.reset, d.sequence, d.address, json_build_object(
        'address', d.address, 'sequence', d.sequence, 'name', d.name, 'state', d.state, 'payload', d.payload,
        'result', d.result, 'error', d.error, 'outcome_order', d.outcome_order, 'not_before', d.not_before,
        'created_at', d.created_at, 'updated_at', d.updated_at, 'attempts', ${attemptsJson(sql, sql`d.run_id`, sql`d.address`)})
      FROM discarded d
      -- In the journal's order, which the history lists them in.
      ORDER BY d.run_id, d.sequence, d.seq
      RETURNING 1
    ), released AS (
      -- Events the discarded waits received are kept for the waits the run makes again.
      UPDATE run_events v SET consumed_by = NULL, consumed_at = NULL
      FROM discarded d WHERE v.run_id = d.run_id AND v.consumed_by = d.address
      RETURNING 1
    )`)
  }
  if (ledger.beats.size > 0) {
    parts.push(sql`beats AS (
      UPDATE workers w SET last_heartbeat_at = now(), alive_until = now() + make_interval(secs => b.liveness_ms / 1000.0)
      FROM jsonb_to_recordset(${
      json([...ledger.beats].map(([id, livenessMs]) => ({ id, liveness_ms: livenessMs })))
    }::jsonb) AS b(id text, liveness_ms int)
      WHERE w.id = b.id ${ok}
      RETURNING w.id
    )`)
  }
  if (announcements.length > 0) {
    parts.push(sql`announced AS (
      SELECT pg_notify('aiki_runs', value) FROM jsonb_array_elements_text(${json(announcements.map((a) => json(a)))}::jsonb)
      WHERE true ${ok}
    )`)
  }
  if (parts.length === 0) return Effect.succeed(nothingWritten)
  // The parts that only read what the others returned run only when the final select asks for them.
  const results = [
    announcements.length > 0 ? sql`(SELECT count(*) FROM announced) AS announced` : sql`0 AS announced`,
    ledger.discards.length > 0
      ? sql`(SELECT count(*) FROM archived) AS archived, (SELECT count(*) FROM released) AS released`
      : sql`0 AS archived, 0 AS released`,
    outbox.length > 0 ? sql`(SELECT jsonb_agg(queued) FROM queued) AS outbox` : sql`NULL::jsonb AS outbox`,
    ledger.beats.size > 0 ? sql`(SELECT jsonb_agg(id) FROM beats) AS beaten` : sql`NULL::jsonb AS beaten`,
    runRows.length > 0 ? sql`(SELECT count(*) FROM run_updates)::int AS updated` : sql`0 AS updated`
  ]
  // One row per returned run (the aggregates repeated on each), or one row with none.
  const from = returning === undefined
    ? sql``
    : sql`, now() AS server_time, r.* FROM (SELECT 1) AS one
      LEFT JOIN run_updates r ON r.id = ANY(${pgArray(returning)}::uuid[])`
  return sql<{
    readonly outbox: ReadonlyArray<{ readonly id: string; readonly run_id: string; readonly stream: string }> | null
    readonly beaten: ReadonlyArray<string> | null
    readonly updated: number
  } & Partial<RunRow & { readonly server_time: Date }>>`WITH ${sql.csv(parts)} SELECT ${sql.csv(results)}${from}`.pipe(
    Effect.map((rows): Written => {
      const row = rows[0]
      return {
        applied: !options.guarded || row?.updated === runRows.length,
        outbox: (row?.outbox ?? []).map((o): OutboxRow => ({ id: o.id, runId: o.run_id, stream: o.stream })),
        beaten: row?.beaten ?? [],
        returned: returning === undefined ? [] : rows.filter((r) => r.id != null) as Array<RunRow & { readonly server_time: Date }>
      }
    })
  )
}
