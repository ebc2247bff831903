/**
 * `@aiki/sdk/worker`: the worker as the seeds' Core Concepts import it. The same `worker` as `@aiki/sdk`'s.
 *
 * @example
 * ```ts
 * import { worker } from "@aiki/sdk/worker"
 *
 * const workerInstance = await worker(client, {
 *   id: "worker-1",
 *   maxConcurrentWorkflowRuns: 5,
 *   workflowRunSubscriber: { pollIntervalMs: 100, maxBatchSize: 10, maxRetryDelayMs: 30_000 }
 * })
 * workerInstance.registry.add(morningRoutine)
 * void workerInstance.start()             // resolves when the worker stops
 * ```
 */
export {
  worker,
  type Worker,
  type WorkerConfig,
  type WorkflowRegistry,
  type WorkflowRunSubscriberOptions
} from "../index.ts"
