/**
 * Workflow runs as applications see them: start one (idempotently, with its outbox message in the same
 * transaction), read it, list a workflow's runs, read its tasks and audit trail, cancel it.
 */
import { IdempotencyConflict, InvalidTransition, RunNotFound } from "@aiki/contract/Errors"
import type { EventName, IdempotencyKey, RunId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { type Json, RunPage, type RunUpdate, SentEvent, StartedRun, type Task, type Transition, type WorkflowRun } from "@aiki/contract/Models"
import { isTerminal, type RunState } from "@aiki/contract/RunState"
import { Clock, Context, Effect, Layer, Stream } from "effect"
import { HttpTraceContext } from "effect/http"
import { SqlClient } from "effect/sql"
import { v7 as uuidv7 } from "uuid"
import { type RunRow, toRun, toTransition, type TransitionRow } from "./internal/rows.ts"
import { announced, recordTransitions, selectTasks } from "./internal/sql.ts"
import { Outbox } from "./Outbox.ts"
import { RunEvents } from "./RunEvents.ts"
import { RunNotifications } from "./RunNotifications.ts"

export interface StartRunInput {
  readonly workflowName: WorkflowName
  readonly workflowVersion: WorkflowVersion
  readonly payload: Json
  readonly idempotencyKey?: IdempotencyKey | undefined
  /** The caller's W3C `traceparent`, when its request carried one. */
  readonly traceParent?: string | undefined
}

export interface ListRunsInput {
  readonly workflowName: WorkflowName
  readonly state?: RunState | undefined
  readonly workflowVersion?: WorkflowVersion | undefined
  /** @default 50 */
  readonly limit?: number | undefined
  readonly cursor?: RunId | undefined
}

export class RunStore extends Context.Service<RunStore, {
  readonly start: (input: StartRunInput) => Effect.Effect<StartedRun, IdempotencyConflict>
  readonly get: (id: RunId) => Effect.Effect<WorkflowRun, RunNotFound>
  readonly list: (input: ListRunsInput) => Effect.Effect<RunPage>
  readonly tasks: (id: RunId) => Effect.Effect<ReadonlyArray<Task>, RunNotFound>
  readonly transitions: (id: RunId) => Effect.Effect<ReadonlyArray<Transition>, RunNotFound>
  /** Cancels a run that has not finished; cancelling a cancelled run returns it unchanged. */
  readonly cancel: (id: RunId) => Effect.Effect<WorkflowRun, RunNotFound | InvalidTransition>
  /** Keeps an event for the run's next wait for `name`, waking the run if it is waiting for events. */
  readonly sendEvent: (id: RunId, name: EventName, payload: Json) => Effect.Effect<SentEvent, RunNotFound | InvalidTransition>
  /**
   * The run now, then each change to it or to its tasks, whichever server replica committed it; ends once the run
   * is final. Fails with `RunNotFound` before emitting anything for an unknown id.
   */
  readonly follow: (id: RunId) => Effect.Effect<Stream.Stream<RunUpdate>, RunNotFound>
}>()("@aiki/server/RunStore") {
  static readonly layer = Layer.effect(
    RunStore,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const outbox = yield* Outbox
      const events = yield* RunEvents
      const notifications = yield* RunNotifications

      const find = (id: string) =>
        sql<RunRow>`SELECT * FROM workflow_runs WHERE id = ${id}`.pipe(Effect.map((rows) => rows[0]))

      const get = Effect.fn("RunStore.get")(function*(id: RunId) {
        const row = yield* find(id).pipe(Effect.orDie)
        if (row === undefined) return yield* RunNotFound.of(id)
        return toRun(row)
      })

      const start = Effect.fn("RunStore.start")(function*(input: StartRunInput) {
        const id = uuidv7({ msecs: yield* Clock.currentTimeMillis })
        const payload = JSON.stringify(input.payload)
        const key = input.idempotencyKey ?? null
        const stream = outbox.streamOf(input.workflowName, input.workflowVersion)
        // The trace the run was started in (the caller's, else this request's), for the worker to continue.
        const traceParent = input.traceParent ?? (yield* Effect.currentSpan.pipe(
          Effect.map((span) => HttpTraceContext.toHeaders(span)["traceparent"] ?? null),
          Effect.orElseSucceed(() => null)
        ))
        // One statement: the run, its first transition (announced) and its outbox row commit together.
        const [inserted] = yield* sql<RunRow>`
          WITH inserted AS (
            INSERT INTO workflow_runs (id, workflow_name, workflow_version, state, payload, idempotency_key, trace_parent)
            VALUES (${id}, ${input.workflowName}, ${input.workflowVersion}, 'pending', ${payload}::jsonb, ${key}, ${traceParent})
            ON CONFLICT (workflow_name, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
            RETURNING *
          ), recorded AS (
            INSERT INTO transitions (run_id, from_state, to_state, reason)
            SELECT id, NULL, 'pending', 'started' FROM inserted
            RETURNING run_id, task_address, to_state
          ), queued AS (
            INSERT INTO outbox (run_id, stream) SELECT id, ${stream}::text FROM inserted WHERE ${stream}::text IS NOT NULL
          ), ${sql.literal(announced)}
          SELECT inserted.*, (SELECT count(*) FROM announced) AS announced FROM inserted`.pipe(Effect.orDie)
        const outcome = inserted !== undefined ? { row: inserted, created: true } : yield* Effect.gen(function*() {
          // The key was taken (possibly by a concurrent start that we just waited for): same request, same run.
          const [existing] = yield* sql<RunRow & { readonly same: boolean }>`
            SELECT *, (payload = ${payload}::jsonb AND workflow_version = ${input.workflowVersion}) AS same
            FROM workflow_runs WHERE workflow_name = ${input.workflowName} AND idempotency_key = ${key}`.pipe(Effect.orDie)
          if (existing === undefined) return yield* Effect.die(new Error("idempotency key conflict without a row"))
          if (!existing.same) {
            return yield* new IdempotencyConflict({
              idempotencyKey: key ?? "",
              existingRunId: existing.id as RunId,
              message:
                `Idempotency key "${key}" was already used for run ${existing.id} of ${input.workflowName} with a different payload or version`
            })
          }
          return { row: existing as RunRow, created: false }
        })
        if (outcome.created) {
          yield* outbox.notify
          yield* events.publish(toRun(outcome.row), null)
        }
        return new StartedRun({ id: outcome.row.id as RunId, state: outcome.row.state, created: outcome.created })
      })

      const list = Effect.fn("RunStore.list")(function*(input: ListRunsInput) {
        const limit = input.limit ?? 50
        const rows = yield* sql<RunRow>`
          SELECT * FROM workflow_runs
          WHERE workflow_name = ${input.workflowName}
            ${input.state === undefined ? sql`` : sql`AND state = ${input.state}`}
            ${input.workflowVersion === undefined ? sql`` : sql`AND workflow_version = ${input.workflowVersion}`}
            ${input.cursor === undefined ? sql`` : sql`AND id < ${input.cursor}`}
          ORDER BY id DESC
          LIMIT ${limit + 1}`.pipe(Effect.orDie)
        const page = rows.slice(0, limit).map(toRun)
        const last = page[page.length - 1]
        return new RunPage({
          runs: page,
          ...(rows.length > limit && last !== undefined ? { nextCursor: last.id } : {})
        })
      })

      const exists = (id: RunId) =>
        sql`SELECT 1 FROM workflow_runs WHERE id = ${id}`.pipe(
          Effect.orDie,
          Effect.flatMap((rows) => rows.length === 0 ? Effect.fail(RunNotFound.of(id)) : Effect.void)
        )

      const tasks = Effect.fn("RunStore.tasks")(function*(id: RunId) {
        yield* exists(id)
        return yield* selectTasks(sql, id).pipe(Effect.orDie)
      })

      const transitions = Effect.fn("RunStore.transitions")(function*(id: RunId) {
        yield* exists(id)
        const rows = yield* sql<TransitionRow>`SELECT * FROM transitions WHERE run_id = ${id} ORDER BY id`.pipe(
          Effect.orDie
        )
        return rows.map(toTransition)
      })

      const cancel = Effect.fn("RunStore.cancel")(function*(id: RunId) {
        const row = yield* sql.withTransaction(Effect.gen(function*() {
          const [current] = yield* sql<RunRow>`SELECT * FROM workflow_runs WHERE id = ${id} FOR UPDATE`
          if (current === undefined) return yield* RunNotFound.of(id)
          if (current.state === "cancelled") return current
          if (isTerminal(current.state)) {
            return yield* new InvalidTransition({
              runId: id,
              from: current.state,
              to: "cancelled",
              message: `Run ${id} is already ${current.state} and cannot be cancelled`
            })
          }
          // The owner keeps its epoch: its next heartbeat or write finds the run cancelled and stops it.
          const [updated] = yield* sql<RunRow>`
            UPDATE workflow_runs
            SET state = 'cancelled', lease_expires_at = NULL, finished_at = now(), updated_at = now()
            WHERE id = ${id} RETURNING *`
          yield* recordTransitions(sql, [{ runId: id, from: current.state, to: "cancelled", reason: "cancelled" }])
          return { updated: updated!, previous: current.state }
        })).pipe(Effect.catchTag("SqlError", Effect.die))
        const run = toRun("updated" in row ? row.updated : row)
        if ("updated" in row) yield* events.publish(run, row.previous)
        return run
      })

      const follow = Effect.fn("RunStore.follow")(function*(id: RunId) {
        yield* get(id)
        return Stream.unwrap(Effect.gen(function*() {
          // Subscribe first, then read: a change committed in between is seen twice, never missed.
          const subscription = yield* notifications.subscribe
          const current = yield* get(id).pipe(Effect.orDie)
          const initialTasks = yield* selectTasks(sql, id).pipe(Effect.orDie)
          // Tasks first: the stream ends with the run's final state, so a finished run still shows its tasks.
          const initial: ReadonlyArray<RunUpdate> = [
            ...initialTasks.map((task): RunUpdate => ({ _tag: "Task", task })),
            { _tag: "Run", run: current }
          ]
          const changes = Stream.fromSubscription(subscription).pipe(
            Stream.filter((change) => change.runId === id),
            Stream.mapEffect((change): Effect.Effect<ReadonlyArray<RunUpdate>> =>
              change.task === null
                ? get(id).pipe(Effect.orDie, Effect.map((run) => [{ _tag: "Run", run }]))
                : selectTasks(sql, id, change.task).pipe(
                  Effect.orDie,
                  Effect.map((tasks) => tasks.map((task): RunUpdate => ({ _tag: "Task", task })))
                )
            ),
            Stream.flatMap(Stream.fromIterable)
          )
          return Stream.fromIterable(initial).pipe(
            Stream.concat(isTerminal(current.state) ? Stream.empty : changes),
            Stream.takeUntil((update) => update._tag === "Run" && isTerminal(update.run.state))
          )
        }))
      })

      const sendEvent = Effect.fn("RunStore.sendEvent")(function*(id: RunId, name: EventName, payload: Json) {
        const sent = yield* sql.withTransaction(Effect.gen(function*() {
          // Under the run's lock: a worker deciding to park the run for lack of an event cannot miss this one.
          const [run] = yield* sql<RunRow>`SELECT * FROM workflow_runs WHERE id = ${id} FOR UPDATE`
          if (run === undefined) return yield* RunNotFound.of(id)
          if (isTerminal(run.state)) {
            return yield* new InvalidTransition({
              runId: id,
              from: run.state,
              to: "event",
              message: `Run ${id} is ${run.state}; it can no longer receive events`
            })
          }
          const [event] = yield* sql<{ readonly id: string }>`
            INSERT INTO run_events (run_id, name, payload) VALUES (${id}, ${name}, ${JSON.stringify(payload)}::jsonb)
            RETURNING id::text AS id`
          if (run.state !== "awaiting_event") return { eventId: event!.id, run, woke: false }
          const [woken] = yield* sql<RunRow>`
            UPDATE workflow_runs SET state = 'pending', updated_at = now() WHERE id = ${id} RETURNING *`
          yield* recordTransitions(sql, [{ runId: id, from: "awaiting_event", to: "pending", reason: "event_received" }])
          yield* outbox.enqueue([{ id, workflowName: run.workflow_name, workflowVersion: run.workflow_version }])
          return { eventId: event!.id, run: woken!, woke: true }
        })).pipe(Effect.catchTag("SqlError", Effect.die))
        if (sent.woke) {
          yield* outbox.notify
          yield* events.publish(toRun(sent.run), "awaiting_event")
        }
        return new SentEvent({ eventId: sent.eventId, runState: sent.run.state })
      })

      return RunStore.of({ start, get, list, tasks, transitions, cancel, sendEvent, follow })
    })
  )
}
