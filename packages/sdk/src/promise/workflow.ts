/**
 * `@aiki/sdk/workflow`: workflows as the seeds' Core Concepts import them. The same `workflow` as `@aiki/sdk`'s.
 *
 * @example
 * ```ts
 * import { workflow } from "@aiki/sdk/workflow"
 *
 * const morningRoutine = workflow({
 *   name: "morning-routine",
 *   version: "1.0.0",
 *   async run({ workflowRun }) {
 *     return await ringAlarm.run(workflowRun, { payload: { song: "Wake up!" } })
 *   }
 * })
 * const handle = await morningRoutine.enqueue(client, { payload: {} })
 * ```
 */
export {
  type ChildRequest,
  type ChildRunHandle,
  type StartRequest,
  type StartTimeoutOptions,
  type VersionedWorkflow,
  type VersionOptions,
  workflow,
  type Workflow,
  type WorkflowConstructor,
  type WorkflowContext,
  type WorkflowRunContext,
  type WorkflowRunHandle,
  type WorkflowVersionOptions
} from "../index.ts"
