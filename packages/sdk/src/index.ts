/**
 * Aiki for plain TypeScript: `task`, `workflow`, `client` and `worker` with async functions. A thin layer over the
 * Effect implementation (`@aiki/sdk/effect`): the same engine, journal, leases and workers.
 *
 * @example
 * ```ts
 * import { client, task, worker, workflow } from "@aiki/sdk"
 *
 * const validateOrder = task({ name: "validate-order", run: async ({ payload }) => check(payload) })
 * const orderProcessingV1 = workflow({ name: "order-processing" }).v("1.0.0", {
 *   async run(ctx, payload: Order) {
 *     const validation = await validateOrder.start(ctx, { payload })
 *     return { orderId: validation.orderId }
 *   }
 * })
 *
 * const aiki = await client({ baseUrl: "http://localhost:9090", redis: { host: "localhost", port: 6379 } })
 * const w = await worker(aiki, { id: "order-worker", maxConcurrentWorkflowRuns: 5 })
 * w.workflowRegistry.add(orderProcessingV1)
 * void w.start()
 * const handle = await orderProcessingV1.start(aiki, { payload: order, idempotencyKey: order.id })
 * const result = await handle.waitForCompletion()
 * ```
 */
import type { RunId } from "@aiki/contract/Ids"
import type { WorkflowRun as RunRecord } from "@aiki/contract/Models"
import { Cause, Context, Effect, Exit, Fiber, Layer, ManagedRuntime, Schema } from "effect"
import { AikiClient, type ClientOptions, type RedisOptions, type RunHandle } from "./AikiClient.ts"
import type { RetryPolicy } from "./Retry.ts"
import * as EffectTask from "./Task.ts"
import * as EffectWorker from "./Worker.ts"
import * as EffectWorkflow from "./Workflow.ts"
import { WorkflowRun } from "./WorkflowRun.ts"

export { NonDeterminismError, RunCancelled, RunFailed, TaskError, WaitTimeout } from "./Errors.ts"
export type { RedisOptions, RetryPolicy }

/** Payloads and results are stored as JSON: what `JSON.stringify` keeps is what a replay gets back. */
const toJson = (value: unknown): Schema.Json => value === undefined ? null : JSON.parse(JSON.stringify(value))

/** Rejects with the error itself (not a wrapper), so `catch (e)` sees what the task or workflow threw. */
const runToPromise = <A, R>(context: Context.Context<R>, effect: Effect.Effect<A, unknown, R>, signal?: AbortSignal) =>
  Effect.runPromiseExitWith(context)(effect, signal === undefined ? undefined : { signal }).then((exit) => {
    if (Exit.isSuccess(exit)) return exit.value
    throw Cause.squash(exit.cause)
  })

// ---------------------------------------------------------------------------------------------------------------
// Tasks

/** What a task's `run` receives. */
export interface TaskRunContext<Payload> {
  readonly payload: Payload
  /** 1 for the first attempt, 2 for the first retry, … */
  readonly attempt: number
  /** Aborted when the run is cancelled, its lease is lost or the worker shuts down: stop and clean up. */
  readonly signal: AbortSignal
  readonly workflowRun: { readonly id: RunId; readonly name: string; readonly version: string }
}

export interface TaskOptions<Payload, Result> {
  /** Must stay the same for as long as runs that used it may be replayed. */
  readonly name: string
  readonly run: (context: TaskRunContext<Payload>) => Promise<Result> | Result
  /** @default no retry */
  readonly retry?: RetryPolicy
}

export interface Task<Payload, Result> {
  readonly name: string
  /** Runs the task as a step of the workflow run `ctx` (or returns its recorded result). */
  readonly start: (ctx: WorkflowContext, request: { readonly payload: Payload }) => Promise<Result>
  /** The Effect task underneath. */
  readonly effect: EffectTask.Task<typeof Schema.Json, typeof Schema.Json, typeof Schema.Never, never>
}

export const task = <Payload = unknown, Result = unknown>(options: TaskOptions<Payload, Result>): Task<Payload, Result> => {
  const effect = EffectTask.make(options.name, {
    payload: Schema.Json,
    success: Schema.Json,
    ...(options.retry !== undefined ? { retry: options.retry } : {}),
    run: (payload, context) =>
      Effect.tryPromise({
        try: async (signal) =>
          toJson(
            await options.run({
              payload: payload as Payload,
              attempt: context.attempt,
              signal,
              workflowRun: { id: context.runId, name: context.workflowName, version: context.workflowVersion }
            })
          ),
        catch: (error) => error
      }).pipe(Effect.orDie)
  })
  return {
    name: options.name,
    effect,
    start: (ctx, { payload }) =>
      runToPromise(ctx[services], effect.start(toJson(payload)), ctx.signal) as Promise<Result>
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Workflows

const services = Symbol.for("@aiki/sdk/services")

/** What a workflow's `run` receives first: pass it to `task.start`. */
export interface WorkflowContext {
  readonly workflowRun: { readonly id: RunId; readonly name: string; readonly version: string }
  /** Aborted when the run is cancelled, its lease is lost or the worker shuts down. */
  readonly signal: AbortSignal
  /**
   * Waits `ms` durably (a replay does not wait again; a long wait parks the run on the server, holding no
   * worker). Use it instead of `setTimeout`, which a replay would repeat.
   */
  readonly sleep: (ms: number) => Promise<void>
  /**
   * The payload of the next event `name` sent to this run (`handle.sendEvent(name, payload)`); the run waits on
   * the server, holding no worker, until one arrives. An event sent earlier is kept for it.
   */
  readonly waitForEvent: <Payload = unknown>(name: string) => Promise<Payload>
  readonly [services]: Context.Context<WorkflowRun>
}

export interface VersionOptions<Payload, Result> {
  /** Deterministic outside tasks: the same payload and task results must lead to the same task calls. */
  readonly run: (ctx: WorkflowContext, payload: Payload) => Promise<Result>
  /** Runs the workflow again when it fails: completed tasks stay memoized, failed ones run again. @default none */
  readonly retry?: RetryPolicy
}

export interface VersionedWorkflow<Payload, Result> {
  readonly name: string
  readonly version: string
  /** Starts a run; with `idempotencyKey`, starting again with the same key and payload returns the same run. */
  readonly start: (
    client: Client,
    request: { readonly payload: Payload; readonly idempotencyKey?: string }
  ) => Promise<WorkflowRunHandle<Result>>
  /** A handle on an existing run of this version. */
  readonly getHandle: (client: Client, runId: string) => WorkflowRunHandle<Result>
  /** The Effect workflow underneath. */
  readonly effect: EffectWorkflow.Workflow<typeof Schema.Json, typeof Schema.Json, typeof Schema.Never, never>
}

export interface Workflow {
  readonly name: string
  /** Defines a version; runs stay on the version they started with. */
  readonly v: <Payload = unknown, Result = unknown>(
    version: string,
    options: VersionOptions<Payload, Result>
  ) => VersionedWorkflow<Payload, Result>
  readonly versions: () => ReadonlyArray<VersionedWorkflow<unknown, unknown>>
}

export const workflow = (options: { readonly name: string }): Workflow => {
  const versions: Array<VersionedWorkflow<unknown, unknown>> = []
  const v = <Payload, Result>(version: string, definition: VersionOptions<Payload, Result>) => {
    const effect = EffectWorkflow.make(options.name, version, {
      payload: Schema.Json,
      success: Schema.Json,
      ...(definition.retry !== undefined ? { retry: definition.retry } : {}),
      run: (payload) =>
        Effect.gen(function*() {
          const run = yield* WorkflowRun
          const context = yield* Effect.context<WorkflowRun>()
          return yield* Effect.tryPromise({
            try: async (signal) =>
              toJson(
                await definition.run({
                  workflowRun: { id: run.runId, name: run.workflowName, version: run.workflowVersion },
                  signal,
                  sleep: (ms) => runToPromise(context, run.sleep(ms), signal),
                  waitForEvent: <Payload>(name: string) =>
                    runToPromise(context, run.waitForEvent(name), signal) as Promise<Payload>,
                  // The run's services travel with the context, so `task.start(ctx, …)` runs inside this run.
                  [services]: context
                }, payload as Payload)
              ),
            catch: (error) => error
          }).pipe(Effect.orDie)
        })
    })
    const versioned: VersionedWorkflow<Payload, Result> = {
      name: options.name,
      version,
      effect,
      start: async (client, request) => {
        const handle = await client.runtime.runPromise(
          Effect.flatMap(AikiClient, (aiki) =>
            aiki.start(effect, toJson(request.payload), {
              ...(request.idempotencyKey !== undefined ? { idempotencyKey: request.idempotencyKey } : {})
            }))
        )
        return toHandle(client, handle)
      },
      getHandle: (client, runId) =>
        toHandle(client, client.runtime.runSync(Effect.map(AikiClient, (aiki) => aiki.handle(effect, runId as RunId))))
    }
    versions.push(versioned as VersionedWorkflow<unknown, unknown>)
    return versioned
  }
  return { name: options.name, v, versions: () => versions }
}

// ---------------------------------------------------------------------------------------------------------------
// Client and run handles

export interface WorkflowRunHandle<Result> {
  readonly id: string
  /** The run as the server has it now (state, payload, result or error, timestamps). */
  readonly getStatus: () => Promise<RunRecord>
  /** Resolves with the result once the run completes; rejects with `RunFailed`, `RunCancelled` or `WaitTimeout`. */
  readonly waitForCompletion: (options?: { readonly timeoutMs?: number }) => Promise<Result>
  readonly cancel: () => Promise<RunRecord>
  /** Sends an event to the run, for its `ctx.waitForEvent(name)`. */
  readonly sendEvent: (name: string, payload: unknown) => Promise<void>
}

/** The promise handle of a run handle of the Effect API (to mix both styles with one client). */
export const toHandle = <Result>(client: Client, handle: RunHandle<unknown, unknown>): WorkflowRunHandle<Result> => ({
  id: handle.id,
  getStatus: () => client.runtime.runPromise(handle.status),
  waitForCompletion: (options) => client.runtime.runPromise(handle.result(options)) as Promise<Result>,
  cancel: () => client.runtime.runPromise(handle.cancel),
  sendEvent: (name, payload) => client.runtime.runPromise(handle.sendEvent(name, toJson(payload))).then(() => undefined)
})

export interface Client {
  readonly baseUrl: string
  readonly runtime: ManagedRuntime.ManagedRuntime<AikiClient, never>
  /** Releases the client's connections. */
  readonly close: () => Promise<void>
}

export interface ClientConfig {
  /** e.g. `http://localhost:9090` (`localhost:9090` is read as http). */
  readonly baseUrl: string
  readonly apiKey?: string
  /** Workers of this client read runs from Redis Streams; without it they long-poll the server. */
  readonly redis?: RedisOptions
}

export const client = async (config: ClientConfig): Promise<Client> => {
  const baseUrl = /^https?:\/\//.test(config.baseUrl) ? config.baseUrl : `http://${config.baseUrl}`
  const options: ClientOptions = {
    baseUrl,
    ...(config.apiKey !== undefined ? { apiKey: config.apiKey } : {}),
    ...(config.redis !== undefined ? { redis: config.redis } : {})
  }
  const runtime = ManagedRuntime.make(AikiClient.layer(options))
  await runtime.runPromise(Effect.void)
  return { baseUrl, runtime, close: () => runtime.dispose() }
}

// ---------------------------------------------------------------------------------------------------------------
// Workers

export type WorkerConfig = Omit<EffectWorker.WorkerOptions, "workflows">

export interface WorkflowRegistry {
  /** Adds a version, or every version of a workflow. */
  readonly add: (workflow: VersionedWorkflow<never, unknown> | Workflow) => WorkflowRegistry
  readonly list: () => ReadonlyArray<{ readonly name: string; readonly version: string }>
}

export interface Worker {
  readonly id: string | undefined
  readonly workflowRegistry: WorkflowRegistry
  /** The same registry (the name older examples use). */
  readonly registry: WorkflowRegistry
  /** Starts receiving runs; resolves when the worker has stopped. */
  readonly start: () => Promise<void>
  /** Stops receiving, lets runs in flight finish (up to `gracefulShutdownTimeoutMs`), hands the rest over. */
  readonly stop: () => Promise<void>
}

export const worker = async (client: Client, config: WorkerConfig = {}): Promise<Worker> => {
  const registered = new Map<string, EffectWorkflow.Any>()
  const registry: WorkflowRegistry = {
    add: (added) => {
      const versions = "v" in added ? added.versions() : [added as VersionedWorkflow<unknown, unknown>]
      for (const version of versions) registered.set(EffectWorkflow.key(version.effect), version.effect)
      return registry
    },
    list: () => [...registered.values()].map(({ name, version }) => ({ name, version }))
  }
  let running: Fiber.Fiber<unknown, unknown> | undefined
  let stopped: Promise<void> | undefined
  return {
    id: config.id,
    workflowRegistry: registry,
    registry,
    start: () => {
      if (stopped !== undefined) return stopped
      const layer = EffectWorker.layer({ ...config, workflows: [...registered.values()] })
      running = client.runtime.runFork(Layer.launch(layer as Layer.Layer<never, never, AikiClient>))
      stopped = client.runtime.runPromise(Fiber.await(running)).then(() => undefined)
      return stopped
    },
    stop: async () => {
      if (running !== undefined) await client.runtime.runPromise(Fiber.interrupt(running))
      await stopped
    }
  }
}
