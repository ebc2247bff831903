/**
 * Leases: how a run is handed to exactly one worker at a time. A claim grants the run (a new epoch, an owner, an
 * expiry decided by the database's clock) when it is pending or its previous lease lapsed, and returns its journal.
 * Heartbeats extend the leases a worker holds and tell it which runs were cancelled or lost. Finishing or releasing
 * a run is fenced by the epoch: a stale one is rejected with `LeaseLost` and changes nothing.
 */
import {
  type InvalidTransition,
  LeaseLost,
  RunNotClaimable,
  RunNotFound,
  type TaskNotFound,
  WorkerNotFound
} from "@aiki/contract/Errors"
import type { LeaseEpoch, RunId, TaskAddress, WorkerId } from "@aiki/contract/Ids"
import { type ErrorDetails, HeartbeatReply, type HeldRun, type Json, Lease, type PollRuns, type ReceivedEvent, type ReceiveEvent, type Task, type WorkerSignal, type WorkflowRun } from "@aiki/contract/Models"
import type { RunState } from "@aiki/contract/RunState"
import { Clock, Context, DateTime, Effect, Layer, PubSub, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { holdLease, leaseLost } from "./internal/fence.ts"
import { type RunRow, toRun } from "./internal/rows.ts"
import { announced, recordTransitions, selectTasks } from "./internal/sql.ts"
import { Outbox } from "./Outbox.ts"
import { RunEvents } from "./RunEvents.ts"
import { RunNotifications } from "./RunNotifications.ts"
import { ServerConfig } from "./ServerConfig.ts"
import { TaskJournal } from "./TaskJournal.ts"

export class RunLeases extends Context.Service<RunLeases, {
  readonly claim: (
    runId: RunId,
    workerId: WorkerId,
    leaseMs?: number
  ) => Effect.Effect<Lease, RunNotFound | RunNotClaimable>
  /** Long-poll for runs (workers without Redis): claims up to `max`, waiting up to `waitMs` for the first. */
  readonly poll: (workerId: WorkerId, input: PollRuns) => Effect.Effect<ReadonlyArray<Lease>>
  /** Cancellations of the runs `workerId` holds, pushed as they commit (on any replica). */
  readonly signals: (workerId: WorkerId) => Stream.Stream<WorkerSignal>
  readonly heartbeat: (
    workerId: WorkerId,
    runs: ReadonlyArray<HeldRun>,
    leaseMs?: number
  ) => Effect.Effect<HeartbeatReply, WorkerNotFound>
  readonly complete: (runId: RunId, leaseEpoch: LeaseEpoch, result: Json) => Effect.Effect<WorkflowRun, RunNotFound | LeaseLost>
  readonly fail: (runId: RunId, leaseEpoch: LeaseEpoch, error: ErrorDetails) => Effect.Effect<WorkflowRun, RunNotFound | LeaseLost>
  /** Parks the run with no worker until `delayMs` passed (the reaper wakes it): a long retry delay or a sleep. */
  readonly suspend: (
    runId: RunId,
    leaseEpoch: LeaseEpoch,
    state: "awaiting_retry" | "sleeping",
    delayMs: number,
    /** A journal entry completed in the same transaction (a sleep's). */
    completeTask?: { readonly address: TaskAddress; readonly attempt: number; readonly result: Json }
  ) => Effect.Effect<WorkflowRun, RunNotFound | LeaseLost | InvalidTransition | TaskNotFound>
  /**
   * Hands the run's oldest unconsumed event `name` to the journal entry `address` (completing it with the
   * event's payload), or, when there is none, parks the run in `awaiting_event` until one is sent. One
   * transaction, under the run's lock, so an event sent meanwhile is never missed.
   */
  readonly receiveEvent: (
    runId: RunId,
    input: ReceiveEvent
  ) => Effect.Effect<ReceivedEvent, RunNotFound | LeaseLost | InvalidTransition | TaskNotFound>
  /** Gives the run back (graceful shutdown): it is pending again and requeued at once, no lease to wait out. */
  readonly release: (runId: RunId, leaseEpoch: LeaseEpoch) => Effect.Effect<WorkflowRun, RunNotFound | LeaseLost>
}>()("@aiki/server/RunLeases") {
  static readonly layer = Layer.effect(
    RunLeases,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const config = yield* ServerConfig
      const outbox = yield* Outbox
      const events = yield* RunEvents
      const notifications = yield* RunNotifications
      const journal = yield* TaskJournal

      /** Grants the runs `rows` just moved to running: audit trail, journals, events. Inside the transaction. */
      const granted = Effect.fnUntraced(function*(
        workerId: WorkerId,
        rows: ReadonlyArray<RunRow & { readonly previous_state: RunState }>
      ) {
        yield* recordTransitions(sql, rows.map((row) => ({
          runId: row.id,
          from: row.previous_state,
          to: "running",
          reason: row.previous_state === "running" ? "lease_taken_over" : "claimed",
          leaseEpoch: row.lease_epoch,
          workerId
        })))
        return yield* Effect.forEach(rows, (row) =>
          Effect.map(selectTasks(sql, row.id), (journal) => ({ row, journal })))
      })

      const toLease = ({ journal, row }: { readonly row: RunRow; readonly journal: ReadonlyArray<Task> }) =>
        new Lease({
          run: toRun(row),
          leaseEpoch: row.lease_epoch as LeaseEpoch,
          leaseExpiresAt: DateTime.fromDateUnsafe(row.lease_expires_at!),
          journal
        }, { disableChecks: true })

      const publishGranted = (leases: ReadonlyArray<Lease>, previous: (lease: Lease) => RunState) =>
        Effect.forEach(leases, (lease) =>
          previous(lease) === "running" ? Effect.void : events.publish(lease.run, previous(lease)), { discard: true })

      const claim = Effect.fn("RunLeases.claim")(function*(runId: RunId, workerId: WorkerId, leaseMs?: number) {
        const ms = leaseMs ?? config.defaultLeaseMs
        // One statement grants the lease and records (and announces) it; the journal is read after it commits.
        const [row] = yield* sql<RunRow & { readonly previous_state: RunState }>`
          WITH previous AS (SELECT id, state FROM workflow_runs WHERE id = ${runId} FOR UPDATE),
          claimed AS (
            UPDATE workflow_runs r
            SET state = 'running', lease_epoch = r.lease_epoch + 1, lease_owner = ${workerId},
                lease_expires_at = now() + make_interval(secs => ${ms / 1000}),
                started_at = COALESCE(r.started_at, now()), updated_at = now()
            FROM previous
            WHERE r.id = previous.id
              AND (r.state = 'pending' OR (r.state = 'running' AND r.lease_expires_at < now()))
            RETURNING r.*, previous.state AS previous_state
          ), recorded AS (
            INSERT INTO transitions (run_id, from_state, to_state, reason, lease_epoch, worker_id)
            SELECT id, previous_state, 'running',
              CASE WHEN previous_state = 'running' THEN 'lease_taken_over' ELSE 'claimed' END, lease_epoch, lease_owner
            FROM claimed
            RETURNING run_id, task_address, to_state
          ), ${sql.literal(announced)}
          SELECT claimed.*, (SELECT count(*) FROM announced) AS announced FROM claimed`.pipe(Effect.orDie)
        if (row === undefined) {
          const [current] = yield* sql<RunRow>`SELECT * FROM workflow_runs WHERE id = ${runId}`.pipe(Effect.orDie)
          if (current === undefined) return yield* RunNotFound.of(runId)
          return yield* new RunNotClaimable({
            runId,
            state: current.state,
            ...(current.lease_owner !== null && current.state === "running"
              ? { leaseOwner: current.lease_owner as WorkerId }
              : {}),
            message: current.state === "running"
              ? `Run ${runId} is leased to ${current.lease_owner} until ${current.lease_expires_at?.toISOString()}`
              : `Run ${runId} is ${current.state} and cannot be claimed`
          })
        }
        const journal = yield* selectTasks(sql, runId).pipe(Effect.orDie)
        const grant = { lease: toLease({ row, journal }), previous: row.previous_state }
        yield* publishGranted([grant.lease], () => grant.previous)
        return grant.lease
      })

      /** Claims up to `max` pending runs of `workflows`, oldest first; skips runs another poller is claiming. */
      const claimPending = (workerId: WorkerId, input: PollRuns) =>
        sql.withTransaction(Effect.gen(function*() {
          const ms = input.leaseMs ?? config.defaultLeaseMs
          const rows = yield* sql<RunRow & { readonly previous_state: RunState }>`
            WITH wanted AS (
              SELECT name, version FROM jsonb_to_recordset(${JSON.stringify(input.workflows)}::jsonb)
                AS w(name text, version text)
            ), candidates AS (
              SELECT r.id FROM workflow_runs r JOIN wanted w
                ON r.workflow_name = w.name AND r.workflow_version = w.version
              WHERE r.state = 'pending'
              ORDER BY r.id LIMIT ${input.max} FOR UPDATE OF r SKIP LOCKED
            )
            UPDATE workflow_runs r
            SET state = 'running', lease_epoch = r.lease_epoch + 1, lease_owner = ${workerId},
                lease_expires_at = now() + make_interval(secs => ${ms / 1000}),
                started_at = COALESCE(r.started_at, now()), updated_at = now()
            FROM candidates WHERE r.id = candidates.id
            RETURNING r.*, 'pending'::text AS previous_state`
          return (yield* granted(workerId, rows)).map(toLease)
        })).pipe(Effect.orDie)

      const poll = Effect.fn("RunLeases.poll")(function*(workerId: WorkerId, input: PollRuns) {
        if (input.workflows.length === 0) return []
        const deadline = (yield* Clock.currentTimeMillis) + (input.waitMs ?? 0)
        return yield* Effect.scoped(Effect.gen(function*() {
          // Listen before looking, so a run that becomes pending in between wakes us.
          const subscription = yield* notifications.subscribe
          while (true) {
            const leases = yield* claimPending(workerId, input)
            if (leases.length > 0) {
              yield* publishGranted(leases, () => "pending")
              return leases
            }
            const remaining = deadline - (yield* Clock.currentTimeMillis)
            if (remaining <= 0) return []
            const woken = yield* Effect.gen(function*() {
              while (true) {
                const change = yield* PubSub.take(subscription)
                if (change.task === null && change.state === "pending") return true
              }
            }).pipe(Effect.timeoutOption(`${remaining} millis`))
            if (woken._tag === "None") return []
          }
        }))
      })

      const heartbeat = Effect.fn("RunLeases.heartbeat")(
        function*(workerId: WorkerId, runs: ReadonlyArray<HeldRun>, leaseMs?: number) {
          const ms = leaseMs ?? config.defaultLeaseMs
          const touched = yield* sql`UPDATE workers SET last_heartbeat_at = now() WHERE id = ${workerId} RETURNING id`
            .pipe(Effect.orDie)
          if (touched.length === 0) {
            return yield* new WorkerNotFound({
              workerId,
              message: `Worker ${workerId} is not registered; register it before sending heartbeats`
            })
          }
          if (runs.length === 0) return new HeartbeatReply({ extended: [], cancelled: [], lost: [] })
          const held = JSON.stringify(runs.map((r) => ({ run_id: r.runId, lease_epoch: r.leaseEpoch })))
          const rows = yield* sql<{ readonly id: string; readonly state: RunState | "missing"; readonly extended: boolean }>`
            WITH held AS (
              SELECT run_id, lease_epoch FROM jsonb_to_recordset(${held}::jsonb) AS h(run_id uuid, lease_epoch int)
            ), extended AS (
              UPDATE workflow_runs r
              SET lease_expires_at = now() + make_interval(secs => ${ms / 1000}), updated_at = now()
              FROM held
              WHERE r.id = held.run_id AND r.lease_epoch = held.lease_epoch
                AND r.state = 'running' AND r.lease_owner = ${workerId}
              RETURNING r.id
            )
            SELECT held.run_id AS id, COALESCE(r.state, 'missing') AS state,
              EXISTS (SELECT 1 FROM extended e WHERE e.id = held.run_id) AS extended
            FROM held LEFT JOIN workflow_runs r ON r.id = held.run_id`.pipe(Effect.orDie)
          const ids = (predicate: (row: (typeof rows)[number]) => boolean) =>
            rows.filter(predicate).map((row) => row.id as RunId)
          return new HeartbeatReply({
            extended: ids((row) => row.extended),
            cancelled: ids((row) => !row.extended && row.state === "cancelled"),
            lost: ids((row) => !row.extended && row.state !== "cancelled")
          })
        }
      )

      const signals = (workerId: WorkerId) =>
        Stream.unwrap(Effect.gen(function*() {
          const subscription = yield* notifications.subscribe
          const cancelled = Stream.fromSubscription(subscription).pipe(
            Stream.filter((change) => change.task === null && change.state === "cancelled"),
            Stream.filterEffect((change) =>
              sql<{ readonly lease_owner: string | null }>`SELECT lease_owner FROM workflow_runs WHERE id = ${change.runId}`
                .pipe(Effect.map((rows) => rows[0]?.lease_owner === workerId), Effect.orDie)
            ),
            Stream.map((change): WorkerSignal => ({ _tag: "Cancelled", runId: change.runId as RunId }))
          )
          const pings = Stream.tick("15 seconds").pipe(Stream.drop(1), Stream.map((): WorkerSignal => ({ _tag: "Ping" })))
          return Stream.make({ _tag: "Connected" } as WorkerSignal).pipe(Stream.concat(Stream.merge(cancelled, pings)))
        }))

      /**
       * Moves a held run out of `running` in one fenced statement (the lease check, the change and its record):
       * to a final state, or suspended until `delayMs` passed (no owner, no lease: the reaper wakes it).
       */
      const conclude = (
        runId: RunId,
        leaseEpoch: LeaseEpoch,
        to: "completed" | "failed" | "awaiting_retry" | "sleeping" | "awaiting_event",
        set: { readonly result?: Json; readonly error?: ErrorDetails; readonly delayMs?: number }
      ) =>
        Effect.gen(function*() {
          const [row] = yield* sql<RunRow & { readonly current_state: RunState; readonly current_epoch: number }>`
            WITH run AS (SELECT id, state, lease_epoch, lease_owner FROM workflow_runs WHERE id = ${runId} FOR UPDATE),
            concluded AS (
              UPDATE workflow_runs w
              SET state = ${to},
                  result = ${set.result === undefined ? null : JSON.stringify(set.result)}::jsonb,
                  error = ${set.error === undefined ? null : JSON.stringify(set.error)}::jsonb,
                  lease_expires_at = NULL,
                  ${to === "completed" || to === "failed"
                    ? sql`finished_at = now(),`
                    : set.delayMs === undefined
                    ? sql`lease_owner = NULL, wake_at = NULL,`
                    : sql`lease_owner = NULL, wake_at = now() + make_interval(secs => ${set.delayMs / 1000}),`}
                  updated_at = now()
              FROM run
              WHERE w.id = run.id AND run.lease_epoch = ${leaseEpoch} AND run.state = 'running'
              RETURNING w.*
            ), recorded AS (
              INSERT INTO transitions (run_id, from_state, to_state, reason, lease_epoch, worker_id)
              SELECT id, 'running', state, CASE WHEN state IN ('completed', 'failed') THEN state ELSE 'suspended' END,
                ${leaseEpoch}, (SELECT lease_owner FROM run) FROM concluded
              RETURNING run_id, task_address, to_state
            ), ${sql.literal(announced)}
            SELECT concluded.*, run.state AS current_state, run.lease_epoch AS current_epoch,
              (SELECT count(*) FROM announced) AS announced
            FROM run LEFT JOIN concluded ON true`.pipe(Effect.orDie)
          if (row === undefined) return yield* RunNotFound.of(runId)
          if (row.id === null) {
            return yield* leaseLost(runId, leaseEpoch, { state: row.current_state, epoch: row.current_epoch })
          }
          const run = toRun(row)
          yield* events.publish(run, "running")
          return run
        })

      /** Gives a held run back (rare: shutdown), requeued through the outbox in the same transaction. */
      const release = (runId: RunId, leaseEpoch: LeaseEpoch) =>
        sql.withTransaction(Effect.gen(function*() {
          const held = yield* holdLease(sql, runId, leaseEpoch)
          const [row] = yield* sql<RunRow>`
            UPDATE workflow_runs
            SET state = 'pending', lease_expires_at = NULL, lease_owner = NULL, updated_at = now()
            WHERE id = ${runId} RETURNING *`
          yield* recordTransitions(sql, [{
            runId,
            from: "running",
            to: "pending",
            reason: "released",
            leaseEpoch,
            ...(held.lease_owner !== null ? { workerId: held.lease_owner } : {})
          }])
          yield* outbox.enqueue([{ id: runId, workflowName: held.workflow_name, workflowVersion: held.workflow_version }])
          return row!
        })).pipe(
          Effect.catchTag("SqlError", Effect.die),
          Effect.flatMap((row) =>
            Effect.gen(function*() {
              yield* outbox.notify
              const run = toRun(row)
              yield* events.publish(run, "running")
              return run
            })
          )
        )

      return RunLeases.of({
        claim,
        poll,
        signals,
        heartbeat,
        complete: Effect.fn("RunLeases.complete")((runId: RunId, leaseEpoch: LeaseEpoch, result: Json) =>
          conclude(runId, leaseEpoch, "completed", { result })
        ),
        fail: Effect.fn("RunLeases.fail")((runId: RunId, leaseEpoch: LeaseEpoch, error: ErrorDetails) =>
          conclude(runId, leaseEpoch, "failed", { error })
        ),
        suspend: Effect.fn("RunLeases.suspend")(function*(
          runId: RunId,
          leaseEpoch: LeaseEpoch,
          state: "awaiting_retry" | "sleeping",
          delayMs: number,
          completeTask?: { readonly address: TaskAddress; readonly attempt: number; readonly result: Json }
        ) {
          if (completeTask === undefined) return yield* conclude(runId, leaseEpoch, state, { delayMs })
          return yield* sql.withTransaction(
            Effect.andThen(
              journal.complete({ runId, leaseEpoch, ...completeTask }),
              conclude(runId, leaseEpoch, state, { delayMs })
            )
          ).pipe(Effect.catchTag("SqlError", Effect.die))
        }),
        receiveEvent: Effect.fn("RunLeases.receiveEvent")(function*(runId: RunId, input: ReceiveEvent) {
          return yield* sql.withTransaction(Effect.gen(function*() {
            yield* holdLease(sql, runId, input.leaseEpoch)
            const [event] = yield* sql<{ readonly id: string; readonly payload: Json }>`
              UPDATE run_events SET consumed_by = ${input.address}, consumed_at = now()
              WHERE id = (
                SELECT id FROM run_events WHERE run_id = ${runId} AND name = ${input.name} AND consumed_by IS NULL
                ORDER BY id LIMIT 1 FOR UPDATE
              )
              RETURNING id::text AS id, payload`
            if (event === undefined) {
              const run = yield* conclude(runId, input.leaseEpoch, "awaiting_event", {})
              return { _tag: "Waiting", run } as const
            }
            const task = yield* journal.complete({
              runId,
              leaseEpoch: input.leaseEpoch,
              address: input.address,
              attempt: input.attempt,
              result: event.payload
            })
            return { _tag: "Received", payload: event.payload, task } as const
          })).pipe(Effect.catchTag("SqlError", Effect.die))
        }),
        release: Effect.fn("RunLeases.release")(release)
      })
    })
  )
}
