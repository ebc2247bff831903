/**
 * Tasks: the steps of a workflow whose results are persisted. Inside a workflow, `yield* SomeTask.start(payload)`
 * runs the task once and records its result; when the run is replayed (on another worker, after a crash) the
 * recorded result is returned and the task does not run again.
 *
 * Tasks are where side effects belong: payments, emails, writes to other systems. A task may run more than once
 * if a worker dies after the effect but before its result is recorded, so make it idempotent where that matters.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Task } from "@aiki/sdk/effect"
 *
 * const ChargeCard = Task.make("charge-card", {
 *   payload: Schema.Struct({ orderId: Schema.String, amount: Schema.Number }),
 *   success: Schema.Struct({ chargeId: Schema.String }),
 *   error: CardDeclined,
 *   retry: { type: "exponential", maxAttempts: 5, baseDelayMs: 200 },
 *   run: ({ orderId, amount }, { attempt }) => payments.charge(orderId, amount)
 * })
 * ```
 */
import { Effect, Schema } from "effect"
import type { Retry } from "./Retry.ts"
import { type TaskContext, type TaskDefinition, WorkflowRun } from "./WorkflowRun.ts"

export type { TaskContext }

const TypeId = "~@aiki/sdk/Task"

export interface Task<
  Payload extends Schema.Top,
  Success extends Schema.Top,
  Error extends Schema.Top,
  R
> extends TaskDefinition<Payload["Type"], Success["Type"], Error["Type"], R> {
  readonly [TypeId]: typeof TypeId
  readonly payloadSchema: Payload
  readonly successSchema: Success
  readonly errorSchema: Error
  /** Runs the task as a step of the current workflow run (or returns its recorded result). */
  readonly start: (payload: Payload["Type"]) => Effect.Effect<Success["Type"], Error["Type"], R | WorkflowRun>
}

export interface Options<
  Payload extends Schema.Top,
  Success extends Schema.Top,
  Error extends Schema.Top,
  R
> {
  readonly payload: Payload
  readonly success: Success
  /** The task's expected failures; they are stored encoded and reach the workflow decoded. @default Schema.Never */
  readonly error?: Error
  /** @default no retry */
  readonly retry?: Retry
  readonly run: (payload: Payload["Type"], context: TaskContext) => Effect.Effect<Success["Type"], Error["Type"], R>
}

/** Defines a task. Its name must stay the same for as long as runs that used it may be replayed. */
export const make = <
  Payload extends Schema.Top,
  Success extends Schema.Top,
  R,
  Error extends Schema.Top = typeof Schema.Never
>(name: string, options: Options<Payload, Success, Error, R>): Task<Payload, Success, Error, R> => {
  const task: Task<Payload, Success, Error, R> = {
    [TypeId]: TypeId,
    name,
    payloadSchema: options.payload,
    successSchema: options.success,
    errorSchema: (options.error ?? Schema.Never) as Error,
    retry: options.retry,
    run: options.run,
    start: (payload) => Effect.flatMap(WorkflowRun, (run) => run.task(task, payload))
  }
  return task
}
