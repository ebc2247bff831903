/**
 * The Effect-native API of Aiki: workflows and tasks as values with Schema-typed payloads, results and errors;
 * the client and the worker as Layers.
 *
 * @example
 * ```ts
 * import { AikiClient, Task, Worker, Workflow } from "@aiki/sdk/effect"
 * ```
 */
export {
  AikiClient,
  type ClientOptions,
  type CreateScheduleOptions,
  type RedisOptions,
  type RunHandle,
  type Schedules,
  type StartOptions,
  type StartTimeoutOptions
} from "./AikiClient.ts"
export * as Errors from "./Errors.ts"
export * as Event from "./Event.ts"
export * as FlowControl from "./FlowControl.ts"
export * as Retry from "./Retry.ts"
export * as Task from "./Task.ts"
export * as Tracing from "./Tracing.ts"
export * as Worker from "./Worker.ts"
export * as Workflow from "./Workflow.ts"
export { WorkflowRun } from "./WorkflowRun.ts"
