/**
 * `@aiki/sdk/task`: tasks as the seeds' Core Concepts import them. The same `task` as `@aiki/sdk`'s.
 *
 * @example
 * ```ts
 * import { task } from "@aiki/sdk/task"
 *
 * const ringAlarm = task({
 *   name: "ring-alarm",
 *   run: ({ payload }: { payload: { song: string } }) => Promise.resolve(payload.song),
 *   retry: { type: "fixed", maxAttempts: 3, delayMs: 1_000 }
 * })
 * ```
 */
export {
  type InWorkflowRun,
  type RetryPolicy,
  task,
  type Task,
  type TaskOptions,
  type TaskRequest,
  type TaskRunContext,
  TaskTimedOut
} from "../index.ts"
