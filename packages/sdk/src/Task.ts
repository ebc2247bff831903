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
 * import { TimeoutMs } from "@aiki/contract/Timeouts"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
 * import { Task } from "@aiki/sdk/effect"
 *
 * const ChargeCard = Task.make("charge-card", {
 *   payload: Schema.Struct({ orderId: Schema.String, amount: Schema.Number }),
 *   success: Schema.Struct({ chargeId: Schema.String }),
 *   error: CardDeclined,
 *   retry: { type: "exponential", maxAttempts: 5, baseDelayMs: 200 },
 *   timeoutMs: 30_000,
 *   run: ({ orderId, amount }, { attempt }) => payments.charge(orderId, amount)
 * })
 * ```
 */
import { TimeoutMs } from "@aiki/contract/Timeouts"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
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
  /**
   * Start-to-close timeout of each attempt, in ms, enforced by the server: an attempt still running this long after
   * it began is failed (`TaskTimedOut`, kind `start_to_close`), interrupted, and retried per `retry`.
   * @default none
   */
  readonly timeoutMs?: number
  /**
   * Heartbeat timeout, in ms, enforced by the server: an attempt that goes this long without
   * `context.heartbeat()` is failed (`TaskTimedOut`, kind `heartbeat`), even while its worker is alive.
   * @default none
   */
  readonly heartbeatTimeoutMs?: number
  readonly run: (payload: Payload["Type"], context: TaskContext) => Effect.Effect<Success["Type"], Error["Type"], R>
}

const checkTimeout = Schema.decodeUnknownSync(Schema.UndefinedOr(TimeoutMs))

/** Defines a task. Throws at definition time for a timeout that is not a positive integer of ms. Its name must stay the same for as long as runs that used it may be replayed. */
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
    timeoutMs: checkTimeout(options.timeoutMs),
    heartbeatTimeoutMs: checkTimeout(options.heartbeatTimeoutMs),
    run: options.run,
    start: (payload) => Effect.flatMap(WorkflowRun, (run) => run.task(task, payload))
  }
  return task
}
