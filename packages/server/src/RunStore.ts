/**
 * Workflow runs as applications see them: start one (idempotently), read it, list a workflow's runs, read its
 * tasks and audit trail, follow it live, cancel it, send it an event. Every change goes through `RunTransitions`.
 */
import type { EventConflict, IdempotencyConflict, InvalidTransition, PayloadTooLarge } from "@aiki/contract/Errors"
import { InvalidRequest, RunNotFound } from "@aiki/contract/Errors"
import type { EventName, RunId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { type DiscardedTask, type Json, type ResetRun, RunPage, StartedRun, type RunUpdate, type SentEvent, type Task, type Transition, type WorkflowRun } from "@aiki/contract/Models"
import { isTerminal, type RunState } from "@aiki/contract/RunState"
import { Context, Effect, Layer, Stream } from "effect"
import { HttpTraceContext } from "effect/http"
import { SqlClient } from "effect/sql"
import { type DiscardedRow, type RunRow, toDiscarded, toRun, toTransition, type TransitionRow } from "./internal/rows.ts"
import { selectTasks } from "./internal/sql.ts"
import { RunNotifications } from "./RunNotifications.ts"
import { RunTransitions, type StartRunInput } from "./RunTransitions.ts"
import { StartChecks } from "./StartChecks.ts"

export type { StartRunInput }

export interface ListRunsInput {
  readonly workflowName: WorkflowName
  readonly state?: RunState | undefined
  readonly workflowVersion?: WorkflowVersion | undefined
  /** @default 50 */
  readonly limit?: number | undefined
  readonly cursor?: RunId | undefined
}

export class RunStore extends Context.Service<RunStore, {
  /**
   * Starts a run once its payload matches the schema registered for its version (`InvalidRequest` otherwise,
   * nothing written); a version no worker registered is started with a warning.
   */
  readonly start: (input: StartRunInput) => Effect.Effect<StartedRun, IdempotencyConflict | InvalidRequest>
  /** Starts several runs, each checked and answered on its own. */
  readonly startMany: (
    inputs: ReadonlyArray<StartRunInput>
  ) => Effect.Effect<ReadonlyArray<StartedRun | IdempotencyConflict | PayloadTooLarge | InvalidRequest>>
  /** Runs a failed or cancelled run again as the same run; completed tasks are replayed, the rest run again. */
  readonly retry: (id: RunId) => Effect.Effect<WorkflowRun, RunNotFound | InvalidTransition>
  /** Runs a failed or cancelled run again from a journal entry, discarding it and every entry after it. */
  readonly reset: (id: RunId, to: ResetRun) => Effect.Effect<WorkflowRun, RunNotFound | InvalidTransition | InvalidRequest>
  /** The journal entries resets discarded from the run, oldest reset first. */
  readonly discarded: (id: RunId) => Effect.Effect<ReadonlyArray<DiscardedTask>, RunNotFound>
  readonly get: (id: RunId) => Effect.Effect<WorkflowRun, RunNotFound>
  readonly list: (input: ListRunsInput) => Effect.Effect<RunPage>
  readonly tasks: (id: RunId) => Effect.Effect<ReadonlyArray<Task>, RunNotFound>
  readonly transitions: (id: RunId) => Effect.Effect<ReadonlyArray<Transition>, RunNotFound>
  /** The runs `id` started as children, oldest first. */
  readonly children: (id: RunId) => Effect.Effect<ReadonlyArray<WorkflowRun>, RunNotFound>
  /** Cancels a run that has not finished; cancelling a cancelled run returns it unchanged. */
  readonly cancel: (id: RunId) => Effect.Effect<WorkflowRun, RunNotFound | InvalidTransition>
  /** Keeps an event for the run's next wait for `name`, waking the run if it is waiting for events. */
  readonly sendEvent: (
    id: RunId,
    name: EventName,
    payload: Json,
    eventId?: string
  ) => Effect.Effect<SentEvent, RunNotFound | InvalidTransition | EventConflict>
  /**
   * The run now, then each change to it or to its tasks, whichever server replica committed it; ends once the run
   * is final. Fails with `RunNotFound` before emitting anything for an unknown id.
   */
  /** With `tasks: false` the run's own changes only (no task is read or sent). */
  readonly follow: (id: RunId, options?: { readonly tasks?: boolean }) => Effect.Effect<Stream.Stream<RunUpdate>, RunNotFound>
}>()("@aiki/server/RunStore") {
  static readonly layer = Layer.effect(
    RunStore,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const engine = yield* RunTransitions
      const notifications = yield* RunNotifications
      const checks = yield* StartChecks

      const find = (id: string) =>
        sql<RunRow>`SELECT * FROM workflow_runs WHERE id = ${id}`.pipe(Effect.map((rows) => rows[0]))

      const get = Effect.fn("RunStore.get")(function*(id: RunId) {
        const row = yield* find(id).pipe(Effect.orDie)
        if (row === undefined) return yield* RunNotFound.of(id)
        return toRun(row)
      })

      /** The trace of this request, for runs whose caller sent none: their execution continues it. */
      const requestTrace = Effect.currentSpan.pipe(
        Effect.map((span) => HttpTraceContext.toHeaders(span)["traceparent"]),
        Effect.orElseSucceed(() => undefined)
      )

      /** The answer to a start, with the warning it was flagged with. */
      const flagged = (started: StartedRun, warning: string | undefined) =>
        warning === undefined ? started : new StartedRun({ ...started, warning })

      const start = Effect.fn("RunStore.start")(function*(input: StartRunInput) {
        const [checked] = yield* checks.check([input])
        if (checked instanceof InvalidRequest) return yield* checked
        const warning = checked?.warning
        const started = yield* engine.start({ ...input, startWarning: warning, traceParent: input.traceParent ?? (yield* requestTrace) })
        return flagged(started, warning)
      })

      const startMany = Effect.fn("RunStore.startMany")(function*(inputs: ReadonlyArray<StartRunInput>) {
        const traceParent = yield* requestTrace
        const checked = yield* checks.check(inputs)
        const accepted = inputs.flatMap((input, i) => {
          const check = checked[i]!
          return check instanceof InvalidRequest ? [] : [{ ...input, startWarning: check.warning, traceParent: input.traceParent ?? traceParent }]
        })
        const results = yield* engine.startMany(accepted)
        let next = 0
        return checked.map((check) => {
          if (check instanceof InvalidRequest) return check
          const result = results[next++]!
          return result instanceof StartedRun ? flagged(result, check.warning) : result
        })
      })

      const retry = Effect.fn("RunStore.retry")((id: RunId) => engine.retry(id))

      const reset = Effect.fn("RunStore.reset")((id: RunId, to: ResetRun) =>
        engine.reset(id, to.task !== undefined ? { task: to.task, occurrence: to.occurrence ?? 0 } : { sequence: to.sequence ?? 0 })
      )

      const discarded = Effect.fn("RunStore.discarded")(function*(id: RunId) {
        yield* exists(id)
        const rows = yield* sql<DiscardedRow>`
          SELECT reset, discarded_at, entry FROM discarded_tasks WHERE run_id = ${id} ORDER BY id`.pipe(Effect.orDie)
        return rows.map(toDiscarded)
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

      const children = Effect.fn("RunStore.children")(function*(id: RunId) {
        yield* exists(id)
        const rows = yield* sql<RunRow>`SELECT * FROM workflow_runs WHERE parent_run_id = ${id} ORDER BY id`.pipe(
          Effect.orDie
        )
        return rows.map(toRun)
      })

      const cancel = Effect.fn("RunStore.cancel")((id: RunId) => engine.cancel(id))

      const follow = Effect.fn("RunStore.follow")(function*(id: RunId, options: { readonly tasks?: boolean } = {}) {
        yield* get(id)
        const withTasks = options.tasks ?? true
        return Stream.unwrap(Effect.gen(function*() {
          // Subscribe first, then read: a change committed in between is seen twice, never missed.
          const subscription = yield* notifications.subscribe
          const current = yield* get(id).pipe(Effect.orDie)
          const initialTasks = withTasks ? yield* selectTasks(sql, id).pipe(Effect.orDie) : []
          // Tasks first: the stream ends with the run's final state, so a finished run still shows its tasks.
          const initial: ReadonlyArray<RunUpdate> = [
            ...initialTasks.map((task): RunUpdate => ({ _tag: "Task", task })),
            { _tag: "Run", run: current }
          ]
          const changes = Stream.fromSubscription(subscription).pipe(
            Stream.filter((change) => change.runId === id && (withTasks || change.task === null)),
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

      const sendEvent = Effect.fn("RunStore.sendEvent")((id: RunId, name: EventName, payload: Json, eventId?: string) =>
        engine.sendEvent(id, name, payload, eventId)
      )

      return RunStore.of({ start, startMany, retry, reset, discarded, get, list, tasks, transitions, children, cancel, sendEvent, follow })
    })
  )
}
