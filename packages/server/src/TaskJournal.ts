/**
 * A run's journal of tasks, written by the worker that holds the run. Starting a task records an attempt;
 * completing it stores the result that every later replay returns instead of running the task again. Every write
 * is fenced by the lease epoch and validated by the task state machine.
 */
import { InvalidTransition, type LeaseLost, type RunNotFound, TaskNotFound } from "@aiki/contract/Errors"
import type { LeaseEpoch, RunId, TaskAddress, TaskName } from "@aiki/contract/Ids"
import { type ErrorDetails, type Json, Task, TaskAttempt } from "@aiki/contract/Models"
import { canTransition, type TaskState } from "@aiki/contract/TaskState"
import { Context, DateTime, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { holdLeaseForTask } from "./internal/fence.ts"
import { type TaskRow, toTask } from "./internal/rows.ts"
import { announced, attemptsJson, insertTransitions, recordedForTask, transitionColumns, transitionRows } from "./internal/sql.ts"
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

      /** The audit trail of ending an attempt: running → completed | failed, and failed → retrying on a retry. */
      const finishTransitions = (input: FinishTaskInput, to: TaskState, next: TaskState, workerId: string | null) => {
        const entry = { runId: input.runId, taskAddress: input.address, leaseEpoch: input.leaseEpoch, ...(workerId !== null ? { workerId } : {}) }
        return transitionRows([
          { ...entry, from: "running", to, reason: to === "completed" ? "task_completed" : "task_failed" },
          ...(next === "retrying" ? [{ ...entry, from: "failed", to: "retrying", reason: "task_retrying" }] : [])
        ])
      }

      /** Publishes the task when the write changed it; repeated requests answered as they are change nothing. */
      const written = (runId: RunId) => ({ changed, task }: { readonly task: Task; readonly changed: boolean }) =>
        changed ? Effect.as(events.publishTask(runId, task), task) : Effect.succeed(task)
      const unchanged = (task: Task) => ({ task, changed: false })

      /** The task after a write, from what was read before it and what the write returned (no second read). */
      const after = (row: TaskRow, attempts: ReadonlyArray<TaskAttempt>) => ({
        task: new Task({ ...toTask({ ...row, attempts: [] }), attempts }, { disableChecks: true }),
        changed: true
      })

      const lost = { name: "LeaseLost", message: "The worker running this attempt lost its lease" }

      /** Any start: locks the run, reads the task, decides by the state machine, writes. */
      const startCarefully = (input: StartTaskInput) => {
        const { address, leaseEpoch, runId } = input
        return sql.withTransaction(Effect.gen(function*() {
          const { run, task: existing } = yield* holdLeaseForTask(sql, runId, leaseEpoch, address)
          // A failed task runs again only when the workflow is retried (failed → retrying → running).
          const restarting = existing?.state === "failed" && input.restart === true
          if (existing !== undefined) {
            if (existing.state === "completed") return unchanged(existing)
            const last = existing.attempts[existing.attempts.length - 1]
            if (existing.state === "running" && last !== undefined && last.leaseEpoch === leaseEpoch) return unchanged(existing)
            // A running task whose attempt belongs to an earlier lease was cut off by a crash: its attempt is closed.
            if (existing.state !== "running" && !restarting && !canTransition(existing.state, "running")) {
              return yield* invalid(runId, address, existing.state, "running")
            }
          }
          const from: TaskState = restarting ? "retrying" : existing?.state ?? "pending"
          const attempt = (existing?.attempts.reduce((max, a) => Math.max(max, a.attempt), 0) ?? 0) + 1
          const worker = run.lease_owner !== null ? { workerId: run.lease_owner } : {}
          const entries = transitionRows([
            ...(restarting
              ? [{ runId, taskAddress: address, from: "failed", to: "retrying", reason: "workflow_retry", leaseEpoch, ...worker }]
              : []),
            {
              runId,
              taskAddress: address,
              from,
              to: "running",
              reason: from === "running" ? "attempt_abandoned" : "task_started",
              leaseEpoch,
              ...worker
            }
          ])
          const [row] = yield* sql<TaskRow & { readonly now: Date }>`
            WITH task AS (
              INSERT INTO tasks (run_id, address, sequence, name, state, payload)
              VALUES (${runId}, ${address}, ${input.sequence}, ${input.name}, 'running', ${JSON.stringify(input.payload)}::jsonb)
              ON CONFLICT (run_id, address) DO UPDATE SET state = 'running', error = NULL, updated_at = now()
              RETURNING *
            ), closed AS (
              UPDATE task_attempts SET finished_at = now(), error = ${JSON.stringify(lost)}::jsonb
              WHERE run_id = ${runId} AND address = ${address} AND finished_at IS NULL
              RETURNING attempt
            ), opened AS (
              INSERT INTO task_attempts (run_id, address, attempt, lease_epoch)
              VALUES (${runId}, ${address}, ${attempt}, ${leaseEpoch})
              RETURNING attempt
            ), recorded AS (
              ${sql.literal(insertTransitions)} ${entries}::jsonb) AS t(${sql.literal(transitionColumns)})
              RETURNING run_id, task_address, to_state
            ), ${sql.literal(announced)}
            SELECT task.*, now() AS now,
              (SELECT count(*) FROM closed) + (SELECT count(*) FROM opened) + (SELECT count(*) FROM announced) AS writes
            FROM task`
          const now = DateTime.fromDateUnsafe(row!.now)
          const attempts = [
            ...(existing?.attempts ?? []).map((a) =>
              a.finishedAt === undefined
                ? new TaskAttempt({ ...a, finishedAt: now, error: lost }, { disableChecks: true })
                : a
            ),
            new TaskAttempt({ attempt, leaseEpoch, startedAt: now }, { disableChecks: true })
          ]
          return after(row!, attempts)
        })).pipe(Effect.catchTag("SqlError", Effect.die), Effect.flatMap(written(runId)))
      }

      /**
       * The common start, a task the run never started, in one statement (no transaction, so it pipelines with
       * other fibers' statements): written only if the lease holds and the task is new; otherwise nothing is
       * written and the careful path decides.
       */
      const startNew = (input: StartTaskInput) => {
        const { address, leaseEpoch, runId } = input
        const entries = transitionRows([{ runId, taskAddress: address, from: "pending", to: "running", reason: "task_started", leaseEpoch }])
        return sql<TaskRow & { readonly started_at: Date }>`
          WITH run AS (
            SELECT id, lease_owner FROM workflow_runs
            WHERE id = ${runId} AND lease_epoch = ${leaseEpoch} AND state = 'running' FOR UPDATE
          ), task AS (
            INSERT INTO tasks (run_id, address, sequence, name, state, payload)
            SELECT id, ${address}, ${input.sequence}, ${input.name}, 'running', ${JSON.stringify(input.payload)}::jsonb FROM run
            ON CONFLICT (run_id, address) DO NOTHING
            RETURNING *
          ), opened AS (
            INSERT INTO task_attempts (run_id, address, attempt, lease_epoch)
            SELECT run_id, address, 1, ${leaseEpoch} FROM task
            RETURNING started_at
          ), ${recordedForTask(sql, entries)}, ${sql.literal(announced)}
          SELECT task.*, (SELECT started_at FROM opened) AS started_at, (SELECT count(*) FROM announced) AS announced
          FROM task`.pipe(
          Effect.map(([row]) =>
            row === undefined ? undefined : after(row, [
              new TaskAttempt({ attempt: 1, leaseEpoch, startedAt: DateTime.fromDateUnsafe(row.started_at) }, { disableChecks: true })
            ])
          ),
          Effect.orDie
        )
      }

      const start = Effect.fn("TaskJournal.start")(function*(input: StartTaskInput) {
        const fast = input.restart === true ? undefined : yield* startNew(input)
        return fast === undefined ? yield* startCarefully(input) : yield* written(input.runId)(fast)
      })

      /** Ends the current attempt of a running task: `completed`, or `failed` (then maybe `retrying`). */
      const finishCarefully = (
        input: FinishTaskInput,
        outcome: { readonly result: Json } | { readonly error: ErrorDetails; readonly willRetry: boolean }
      ) => {
        const { address, attempt, leaseEpoch, runId } = input
        const to: TaskState = "result" in outcome ? "completed" : "failed"
        return sql.withTransaction(Effect.gen(function*() {
          const { run, task: existing } = yield* holdLeaseForTask(sql, runId, leaseEpoch, address)
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
          const error = "error" in outcome ? outcome.error : undefined
          const next: TaskState = "error" in outcome && outcome.willRetry ? "retrying" : to
          const entries = finishTransitions(input, to, next, run.lease_owner)
          const encodedError = error === undefined ? null : JSON.stringify(error)
          const [row] = yield* sql<TaskRow & { readonly now: Date }>`
            WITH closed AS (
              UPDATE task_attempts SET finished_at = now(), error = ${encodedError}::jsonb
              WHERE run_id = ${runId} AND address = ${address} AND attempt = ${attempt}
              RETURNING attempt
            ), task AS (
              UPDATE tasks SET state = ${next}, updated_at = now(),
                result = ${"result" in outcome ? JSON.stringify(outcome.result) : null}::jsonb,
                error = ${encodedError}::jsonb
              WHERE run_id = ${runId} AND address = ${address}
              RETURNING *
            ), recorded AS (
              ${sql.literal(insertTransitions)} ${entries}::jsonb) AS t(${sql.literal(transitionColumns)})
              RETURNING run_id, task_address, to_state
            ), ${sql.literal(announced)}
            SELECT task.*, now() AS now, (SELECT count(*) FROM closed) + (SELECT count(*) FROM announced) AS writes
            FROM task`
          const now = DateTime.fromDateUnsafe(row!.now)
          const attempts = existing.attempts.map((a) =>
            a.attempt === attempt
              ? new TaskAttempt({ ...a, finishedAt: now, ...(error !== undefined ? { error } : {}) }, { disableChecks: true })
              : a
          )
          return after(row!, attempts)
        })).pipe(Effect.catchTag("SqlError", Effect.die), Effect.flatMap(written(runId)))
      }

      /**
       * The common finish, the current attempt of a running task reported by the lease that started it, in one
       * statement; anything else (a repeated report, a lost lease, a stale attempt) writes nothing here and goes
       * the careful way.
       */
      const finishCurrent = (
        input: FinishTaskInput,
        outcome: { readonly result: Json } | { readonly error: ErrorDetails; readonly willRetry: boolean }
      ) => {
        const { address, attempt, leaseEpoch, runId } = input
        const to: TaskState = "result" in outcome ? "completed" : "failed"
        const error = "error" in outcome ? outcome.error : undefined
        const next: TaskState = "error" in outcome && outcome.willRetry ? "retrying" : to
        const encodedError = error === undefined ? null : JSON.stringify(error)
        // The worker is filled in by the statement, from the run it locks.
        const entries = finishTransitions(input, to, next, null)
        return sql<TaskRow & { readonly finished_at: Date }>`
          WITH run AS (
            SELECT id, lease_owner FROM workflow_runs
            WHERE id = ${runId} AND lease_epoch = ${leaseEpoch} AND state = 'running' FOR UPDATE
          ), current AS (
            SELECT a.run_id, a.address, a.attempt FROM task_attempts a
            JOIN run ON run.id = a.run_id
            JOIN tasks t ON t.run_id = a.run_id AND t.address = a.address AND t.state = 'running'
            WHERE a.run_id = ${runId} AND a.address = ${address} AND a.attempt = ${attempt}
              AND a.lease_epoch = ${leaseEpoch} AND a.finished_at IS NULL
              AND a.attempt = (SELECT max(attempt) FROM task_attempts WHERE run_id = ${runId} AND address = ${address})
          ), closed AS (
            UPDATE task_attempts a SET finished_at = now(), error = ${encodedError}::jsonb
            FROM current WHERE a.run_id = current.run_id AND a.address = current.address AND a.attempt = current.attempt
            RETURNING a.finished_at
          ), task AS (
            UPDATE tasks t SET state = ${next}, updated_at = now(),
              result = ${"result" in outcome ? JSON.stringify(outcome.result) : null}::jsonb, error = ${encodedError}::jsonb
            FROM current WHERE t.run_id = current.run_id AND t.address = current.address
            RETURNING t.*
          ), ${recordedForTask(sql, entries)}, ${sql.literal(announced)}
          SELECT task.*, (SELECT finished_at FROM closed) AS finished_at,
            ${attemptsJson(sql, runId, address)} AS attempts,
            (SELECT count(*) FROM announced) AS announced
          FROM task`.pipe(
          Effect.map(([row]) => {
            if (row === undefined) return undefined
            // The attempts were read before this statement's own change: patch the attempt it closed.
            const finishedAt = DateTime.fromDateUnsafe(row.finished_at)
            const attempts = toTask(row).attempts.map((a) =>
              a.attempt === attempt
                ? new TaskAttempt({ ...a, finishedAt, ...(error !== undefined ? { error } : {}) }, { disableChecks: true })
                : a
            )
            return after(row, attempts)
          }),
          Effect.orDie
        )
      }

      const finish = (
        input: FinishTaskInput,
        outcome: { readonly result: Json } | { readonly error: ErrorDetails; readonly willRetry: boolean }
      ) =>
        Effect.flatMap(finishCurrent(input, outcome), (fast) =>
          fast === undefined ? finishCarefully(input, outcome) : written(input.runId)(fast))

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
