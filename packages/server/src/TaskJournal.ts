/**
 * A run's journal of tasks, written by the worker that holds the run. Starting a task records an attempt;
 * completing it stores the result that every later replay returns instead of running the task again. Every write
 * is fenced by the lease epoch and validated by the task state machine.
 */
import { InvalidTransition, type LeaseLost, type RunNotFound, TaskNotFound } from "@aiki/contract/Errors"
import type { LeaseEpoch, RunId, TaskAddress, TaskName } from "@aiki/contract/Ids"
import type { ErrorDetails, Json, Task } from "@aiki/contract/Models"
import { canTransition, type TaskState } from "@aiki/contract/TaskState"
import { Context, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { holdLease } from "./internal/fence.ts"
import { recordTransitions, selectTasks } from "./internal/sql.ts"
import { RunEvents } from "./RunEvents.ts"

export interface StartTaskInput {
  readonly runId: RunId
  readonly leaseEpoch: LeaseEpoch
  readonly address: TaskAddress
  readonly name: TaskName
  readonly payload: Json
  readonly sequence: number
  readonly restart?: boolean | undefined
}

export interface FinishTaskInput {
  readonly runId: RunId
  readonly leaseEpoch: LeaseEpoch
  readonly address: TaskAddress
  readonly attempt: number
}

type WriteError = RunNotFound | LeaseLost | InvalidTransition

export class TaskJournal extends Context.Service<TaskJournal, {
  /**
   * Records a new attempt of a task and returns the task with its attempts (the last one is the one to run).
   * A completed task is returned as it is: the worker uses its stored result. Repeating the call for an attempt
   * this lease already started returns that attempt rather than counting a new one.
   */
  readonly start: (input: StartTaskInput) => Effect.Effect<Task, WriteError>
  readonly complete: (input: FinishTaskInput & { readonly result: Json }) => Effect.Effect<Task, WriteError | TaskNotFound>
  readonly fail: (
    input: FinishTaskInput & { readonly error: ErrorDetails; readonly willRetry: boolean }
  ) => Effect.Effect<Task, WriteError | TaskNotFound>
}>()("@aiki/server/TaskJournal") {
  static readonly layer = Layer.effect(
    TaskJournal,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const events = yield* RunEvents

      const invalid = (runId: RunId, address: TaskAddress, from: string, to: TaskState) =>
        new InvalidTransition({
          runId,
          taskAddress: address,
          from,
          to,
          message: `Task ${address} of run ${runId} cannot go from ${from} to ${to}`
        })

      const current = (runId: RunId, address: TaskAddress) =>
        selectTasks(sql, runId, address).pipe(Effect.map((tasks) => tasks[0]))

      /** Publishes the task when the write changed it; repeated requests answered as they are change nothing. */
      const written = (runId: RunId) => ({ changed, task }: { readonly task: Task; readonly changed: boolean }) =>
        changed ? Effect.as(events.publishTask(runId, task), task) : Effect.succeed(task)
      const unchanged = (task: Task) => ({ task, changed: false })
      const changed = (task: Task | undefined) => ({ task: task!, changed: true })

      const start = Effect.fn("TaskJournal.start")(function*(input: StartTaskInput) {
        const { address, leaseEpoch, runId } = input
        return yield* sql.withTransaction(Effect.gen(function*() {
          const held = yield* holdLease(sql, runId, leaseEpoch)
          const existing = yield* current(runId, address)
          const from: TaskState = existing?.state === "failed" ? "retrying" : existing?.state ?? "pending"
          if (existing !== undefined) {
            if (existing.state === "completed") return unchanged(existing)
            const last = existing.attempts[existing.attempts.length - 1]
            if (existing.state === "running" && last !== undefined && last.leaseEpoch === leaseEpoch) return unchanged(existing)
            // A running task whose attempt belongs to an earlier lease was cut off by a crash: close that attempt.
            // A failed one runs again only when the workflow is retried (failed → retrying → running).
            const restarting = existing.state === "failed" && input.restart === true
            if (existing.state !== "running" && !restarting && !canTransition(existing.state, "running")) {
              return yield* invalid(runId, address, existing.state, "running")
            }
            if (restarting) {
              yield* recordTransitions(sql, [{
                runId,
                taskAddress: address,
                from: "failed",
                to: "retrying",
                reason: "workflow_retry",
                leaseEpoch,
                ...(held.lease_owner !== null ? { workerId: held.lease_owner } : {})
              }])
            }
          }
          yield* sql`
            INSERT INTO tasks (run_id, address, sequence, name, state, payload)
            VALUES (${runId}, ${address}, ${input.sequence}, ${input.name}, 'running', ${JSON.stringify(input.payload)}::jsonb)
            ON CONFLICT (run_id, address) DO UPDATE SET state = 'running', error = NULL, updated_at = now()`
          yield* sql`
            UPDATE task_attempts SET finished_at = now(),
              error = ${JSON.stringify({ name: "LeaseLost", message: "The worker running this attempt lost its lease" })}::jsonb
            WHERE run_id = ${runId} AND address = ${address} AND finished_at IS NULL`
          yield* sql`
            INSERT INTO task_attempts (run_id, address, attempt, lease_epoch)
            SELECT ${runId}, ${address}, COALESCE(MAX(attempt), 0) + 1, ${leaseEpoch}
            FROM task_attempts WHERE run_id = ${runId} AND address = ${address}`
          yield* recordTransitions(sql, [{
            runId,
            taskAddress: address,
            from,
            to: "running",
            reason: from === "running" ? "attempt_abandoned" : "task_started",
            leaseEpoch,
            ...(held.lease_owner !== null ? { workerId: held.lease_owner } : {})
          }])
          return changed(yield* current(runId, address))
        })).pipe(Effect.catchTag("SqlError", Effect.die), Effect.flatMap(written(runId)))
      })

      /** Ends the current attempt of a running task; `to` is `completed` or `failed` (then maybe `retrying`). */
      const finish = (
        input: FinishTaskInput,
        outcome: { readonly result: Json } | { readonly error: ErrorDetails; readonly willRetry: boolean }
      ) => {
        const { address, attempt, leaseEpoch, runId } = input
        const to: TaskState = "result" in outcome ? "completed" : "failed"
        return sql.withTransaction(Effect.gen(function*() {
          const held = yield* holdLease(sql, runId, leaseEpoch)
          const existing = yield* current(runId, address)
          if (existing === undefined) {
            return yield* new TaskNotFound({
              runId,
              address,
              message: `Run ${runId} has no task ${address}; start it before reporting its outcome`
            })
          }
          const last = existing.attempts[existing.attempts.length - 1]
          const sameAttempt = last !== undefined && last.attempt === attempt && last.leaseEpoch === leaseEpoch
          // A repeated report of an outcome already recorded (the worker retried the request) is answered as is.
          if (sameAttempt && existing.state === "completed" && to === "completed") return unchanged(existing)
          if (existing.state !== "running" || !sameAttempt) {
            return yield* invalid(
              runId,
              address,
              existing.state === "running" ? `running (attempt ${last?.attempt})` : existing.state,
              to
            )
          }
          const error = "error" in outcome ? JSON.stringify(outcome.error) : null
          const next: TaskState = "error" in outcome && outcome.willRetry ? "retrying" : to
          yield* sql`
            UPDATE task_attempts SET finished_at = now(), error = ${error}::jsonb
            WHERE run_id = ${runId} AND address = ${address} AND attempt = ${attempt}`
          yield* sql`
            UPDATE tasks SET state = ${next}, updated_at = now(),
              result = ${"result" in outcome ? JSON.stringify(outcome.result) : null}::jsonb,
              error = ${error}::jsonb
            WHERE run_id = ${runId} AND address = ${address}`
          const worker = held.lease_owner !== null ? { workerId: held.lease_owner } : {}
          yield* recordTransitions(sql, [
            { runId, taskAddress: address, from: "running", to, reason: to === "completed" ? "task_completed" : "task_failed", leaseEpoch, ...worker },
            ...(next === "retrying"
              ? [{ runId, taskAddress: address, from: "failed", to: "retrying", reason: "task_retrying", leaseEpoch, ...worker }]
              : [])
          ])
          return changed(yield* current(runId, address))
        })).pipe(Effect.catchTag("SqlError", Effect.die), Effect.flatMap(written(runId)))
      }

      return TaskJournal.of({
        start,
        complete: Effect.fn("TaskJournal.complete")((input: FinishTaskInput & { readonly result: Json }) =>
          finish(input, { result: input.result })
        ),
        fail: Effect.fn("TaskJournal.fail")(
          (input: FinishTaskInput & { readonly error: ErrorDetails; readonly willRetry: boolean }) =>
            finish(input, { error: input.error, willRetry: input.willRetry })
        )
      })
    })
  )
}
