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
 * void w.start()                      // resolves only when the worker stops: do not await it here
 * const handle = await orderProcessingV1.start(aiki, { payload: order, idempotencyKey: order.id })
 * const result = await handle.waitForCompletion()
 * ```
 *
 * The seeds' Core Concepts style is the same implementation under other names: `workflow({ name, version, run })`
 * for one version, `task.run(workflowRun, { payload })` for `task.start(ctx, …)`, `workflow.enqueue` for
 * `start`, `createClient({ url })` for `client({ baseUrl })`, and the worker option `workflowRunSubscriber` for
 * the HTTP subscriber's polling options; also importable as `@aiki/sdk/workflow`, `/task`, `/worker`, `/client`.
 *
 * Options are checked when given: an option this SDK does not know is a type error in an object literal and, in
 * any case, an `InvalidOptions` thrown at once naming it.
 */
import type { RunId } from "@aiki/contract/Ids"
import type { WorkflowRun as RunRecord, StartedRun } from "@aiki/contract/Models"
import type { BackfillResult, Schedule } from "@aiki/contract/Schedules"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import {
  AikiClient,
  type ClientOptions,
  type CreateScheduleOptions,
  type RedisOptions,
  type ResetTarget,
  type RunHandle,
  type StartTimeoutOptions
} from "./AikiClient.ts"
import { InvalidOptions } from "./Errors.ts"
import type { FlowControlOptions, ScheduleOptions, StartFlowOptions } from "./FlowControl.ts"
import * as JsonCodec from "./internal/json.ts"
import * as Options from "./internal/options.ts"
import type { RetryPolicy } from "./Retry.ts"
import * as Tracing from "./Tracing.ts"
import * as EffectTask from "./Task.ts"
import * as EffectWorker from "./Worker.ts"
import * as EffectWorkflow from "./Workflow.ts"
import { WorkflowRun } from "./WorkflowRun.ts"

export {
  ChildWorkflowFailed,
  InvalidOptions,
  NonDeterminismError,
  RunCancelled,
  RunFailed,
  TaskError,
  TaskTimedOut,
  WaitTimeout
} from "./Errors.ts"
export type { CreateScheduleOptions, ResetTarget, StartTimeoutOptions }
export type {
  DebounceOptions,
  FlowControlOptions,
  OverlapPolicy,
  ScheduleOptions,
  StartFlowOptions
} from "./FlowControl.ts"
export type { BackfillResult, RedisOptions, RetryPolicy, Schedule, StartedRun }
export type { TracingOptions } from "./Tracing.ts"

/** Payloads and results are stored as JSON: what `JSON.stringify` keeps is what a replay gets back. */
const toJson = (value: unknown): Schema.Json => value === undefined ? null : JSON.parse(JSON.stringify(value))

/** Rejects with the error itself (not a wrapper), so `catch (e)` sees what the task or workflow threw. */
const settle = <A>(exit: Exit.Exit<A, unknown>, resolve: (value: A) => void, reject: (error: unknown) => void) =>
  Exit.isSuccess(exit) ? resolve(exit.value) : reject(Cause.squash(exit.cause))

const services = Symbol.for("@aiki/sdk/services")

/** How the code of a run makes durable calls from promises: each runs with the run's services until the run stops. */
interface RunServices {
  readonly run: <A>(effect: Effect.Effect<A, unknown, WorkflowRun>) => Promise<A>
}

/**
 * The bridge from a run's promises to its effects: each call is a fiber of its own with the run's services, and
 * every fiber still running is interrupted when the run's signal aborts. One listener serves the whole run rather
 * than one added and removed per call (`runPromise`'s `signal` option).
 */
const runServices = (context: Context.Context<WorkflowRun>, signal: AbortSignal): RunServices => {
  const fork = Effect.runForkWith(context)
  const running = new Set<Fiber.Fiber<unknown, unknown>>()
  signal.addEventListener("abort", () => {
    for (const fiber of running) fiber.interruptUnsafe()
  }, { once: true })
  return {
    run: <A>(effect: Effect.Effect<A, unknown, WorkflowRun>) =>
      new Promise<A>((resolve, reject) => {
        const fiber = fork(effect)
        if (signal.aborted) fiber.interruptUnsafe()
        else running.add(fiber)
        fiber.addObserver((exit) => {
          running.delete(fiber)
          settle(exit, resolve, reject)
        })
      })
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Tasks

/** What a task's `run` receives. */
export interface TaskRunContext<Payload> {
  readonly payload: Payload
  /** 1 for the first attempt, 2 for the first retry, … */
  readonly attempt: number
  /**
   * Aborted when the run is cancelled, its lease is lost, the worker shuts down or the server timed the attempt
   * out: stop and clean up.
   */
  readonly signal: AbortSignal
  /**
   * Tells the server the attempt is alive (for `heartbeatTimeoutMs`), with optional JSON progress details kept on
   * the attempt. Cheap to call often: sent at most every third of the heartbeat timeout.
   */
  readonly heartbeat: (details?: unknown) => void
  /** The run the task is a step of; `params.payload` is what the run was started with. */
  readonly workflowRun: {
    readonly id: RunId
    readonly name: string
    readonly version: string
    readonly params: { readonly payload: unknown }
  }
}

/**
 * A task's definition. Type the payload where you write `run` — `run: async ({ payload }: { payload: Order }) =>
 * …` — or as `task<Order, Receipt>({ … })`: nothing else tells TypeScript what a task will be given, so an
 * unannotated `({ payload })` is `unknown` under `strict`.
 */
export interface TaskOptions<Payload, Result> {
  /** Must stay the same for as long as runs that used it may be replayed. */
  readonly name: string
  readonly run: (context: TaskRunContext<Payload>) => Promise<Result> | Result
  /** @default no retry */
  readonly retry?: RetryPolicy
  /**
   * Each attempt's start-to-close timeout (ms), enforced by the server: an attempt still running then is failed
   * (`TaskTimedOut`), its `signal` aborted, and it is retried per `retry`. @default none
   */
  readonly timeoutMs?: number
  /**
   * The attempt must call `heartbeat()` at least this often (ms), or the server fails it (`TaskTimedOut`), even
   * while its worker is alive. @default none
   */
  readonly heartbeatTimeoutMs?: number
}

/** `ctx`, or `ctx.workflowRun`: what places a task call in the run whose code makes it. */
export interface InWorkflowRun {
  readonly [services]: RunServices
}

/** How a workflow starts a task: the payload it is given. */
export interface TaskRequest<Payload> {
  readonly payload: Payload
}

export interface Task<Payload, Result> {
  readonly name: string
  /** Runs the task as a step of the workflow run `ctx` (or returns its recorded result). */
  readonly start: (ctx: InWorkflowRun, request: TaskRequest<Payload>) => Promise<Result>
  /** `start` by the name the seeds' Core Concepts use: `await ringAlarm.run(workflowRun, { payload })`. */
  readonly run: (workflowRun: InWorkflowRun, request: TaskRequest<Payload>) => Promise<Result>
  /** The Effect task underneath. */
  readonly effect: EffectTask.Task<typeof Schema.Json, typeof Schema.Json, typeof Schema.Never, never>
}

const retryShape: Options.Shape = {
  byType: {
    fixed: { known: ["type", "maxAttempts", "delayMs"] },
    exponential: { known: ["type", "maxAttempts", "baseDelayMs", "maxDelayMs"] }
  }
}
const taskShape: Options.Shape = {
  known: ["name", "run", "retry", "timeoutMs", "heartbeatTimeoutMs"],
  nested: { retry: retryShape }
}
const taskRequestShape: Options.Shape = { known: ["payload"] }

/**
 * Defines a task: a step whose result is recorded, so a replay returns it instead of running the task again.
 *
 * @example
 * ```ts
 * const ringAlarm = task({
 *   name: "ring-alarm",
 *   run: async ({ payload }: { payload: { song: string } }) => `ringing ${payload.song}`,
 *   retry: { type: "fixed", maxAttempts: 3, delayMs: 1_000 }
 * })
 * ```
 */
export const task = <Payload = unknown, Result = unknown>(options: TaskOptions<Payload, Result>): Task<Payload, Result> => {
  Options.check("task()", options, taskShape)
  Options.requireKind("task()", "name", options.name, "string")
  Options.requireKind("task()", "run", options.run, "function")
  const effect = EffectTask.make(options.name, {
    payload: JsonCodec.PlainJson,
    success: JsonCodec.PlainJson,
    ...(options.retry !== undefined ? { retry: options.retry } : {}),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    ...(options.heartbeatTimeoutMs !== undefined ? { heartbeatTimeoutMs: options.heartbeatTimeoutMs } : {}),
    run: (payload, context) =>
      Effect.tryPromise({
        try: async (signal) =>
          toJson(
            await options.run({
              payload: payload as Payload,
              attempt: context.attempt,
              signal,
              heartbeat: (details) =>
                void Effect.runFork(context.heartbeat(details === undefined ? undefined : toJson(details))),
              workflowRun: {
                id: context.runId,
                name: context.workflowName,
                version: context.workflowVersion,
                params: { payload: context.workflowPayload }
              }
            })
          ),
        catch: (error) => error
      }).pipe(Effect.orDie)
  })
  const start = async (ctx: InWorkflowRun, request: TaskRequest<Payload>): Promise<Result> => {
    const where = `${options.name}.start()`
    const run = typeof ctx === "object" && ctx !== null ? ctx[services] : undefined
    if (run === undefined) {
      throw new InvalidOptions({
        where,
        option: "ctx",
        reason: "the first argument must be the workflow's `ctx` or `ctx.workflowRun`"
      })
    }
    Options.check(where, request, taskRequestShape)
    return run.run(effect.start(toJson(request.payload))) as Promise<Result>
  }
  return { name: options.name, effect, start, run: start }
}

// ---------------------------------------------------------------------------------------------------------------
// Workflows

/** The run a workflow's code is executing (`ctx.workflowRun`); pass it, or `ctx`, to `task.start` / `task.run`. */
export interface WorkflowRunContext<Payload = unknown> {
  readonly id: RunId
  readonly name: string
  readonly version: string
  /** What the run was started with: `params.payload` is the workflow's payload. */
  readonly params: { readonly payload: Payload }
  readonly [services]: RunServices
}

/** What a workflow's `run` receives first: pass it (or its `workflowRun`) to `task.start`. */
export interface WorkflowContext<Payload = unknown> {
  readonly workflowRun: WorkflowRunContext<Payload>
  /** Aborted when the run is cancelled, its lease is lost or the worker shuts down. */
  readonly signal: AbortSignal
  /**
   * Waits `ms` durably (a replay does not wait again; a long wait parks the run on the server, holding no
   * worker). Use it instead of `setTimeout`, which a replay would repeat.
   */
  readonly sleep: (ms: number) => Promise<void>
  /**
   * The payload of the next event `name` sent to this run (`handle.sendEvent(name, payload)`); the run waits on
   * the server, holding no worker, until one arrives, and only an event of that name wakes it. An event sent
   * before the wait is kept for it (events are kept from when they are sent until a wait receives them or the run
   * ends; each wait receives the oldest one of its name no earlier wait received).
   *
   * With `{ timeoutMs }` it waits at most that long (from when the wait was first made, by the server's clock, so
   * it holds with no worker) and resolves with `{ timedOut: true }` or `{ timedOut: false, payload }`; an event
   * sent after the timeout is kept for the next wait of that name. Prefer it to `Promise.race` with `ctx.sleep`:
   * a wait that lost a race still receives the next event of its name (a promise cannot be cancelled).
   *
   * @example
   * ```ts
   * const approval = await ctx.waitForEvent<Approval>("approval", { timeoutMs: 86_400_000 })
   * if (approval.timedOut) return { status: "expired" }
   * ```
   */
  readonly waitForEvent: {
    <Payload = unknown>(name: string, options: { readonly timeoutMs: number }): Promise<EventWaitResult<Payload>>
    <Payload = unknown>(name: string): Promise<Payload>
  }
  /**
   * Whether this run takes the code path of change `changeId`, to change a workflow's code for runs in flight
   * without a new version: true for runs that reach this point under the changed code (recorded in the journal),
   * false for runs that had already passed it under the code before. See `Workflow.patched`.
   *
   * @example
   * ```ts
   * if (ctx.patched("send-receipt")) await sendReceipt.start(ctx, { payload: order })
   * ```
   */
  readonly patched: (changeId: string) => boolean
  /** Retires a patch once no run can answer false any more: runs that recorded it still replay. */
  readonly deprecatePatch: (changeId: string) => void
  /**
   * Starts another workflow's run as a child of this run, once (a replay gets the same child back), and returns
   * its handle: `await handle.result()` waits for its end, holding no worker (`awaiting_child`). Cancelling this
   * run cancels the child unless `parentClosePolicy` is `"abandon"`.
   */
  readonly startChild: <ChildPayload, ChildResult>(
    workflow: VersionedWorkflow<ChildPayload, ChildResult>,
    request: ChildRequest<ChildPayload>
  ) => Promise<ChildRunHandle<ChildResult>>
  /**
   * `startChild` and wait for its result. Rejects with `ChildWorkflowFailed` (the child's error name, message and
   * data) when the child failed or was cancelled.
   */
  readonly executeChild: <ChildPayload, ChildResult>(
    workflow: VersionedWorkflow<ChildPayload, ChildResult>,
    request: ChildRequest<ChildPayload>
  ) => Promise<ChildResult>
  readonly [services]: RunServices
}

/** What a timed `ctx.waitForEvent(name, { timeoutMs })` resolves with. */
export type EventWaitResult<Payload> =
  | { readonly timedOut: true }
  | { readonly timedOut: false; readonly payload: Payload }

/** How a child run is started from a workflow (`ctx.startChild`, `ctx.executeChild`). */
export interface ChildRequest<Payload> {
  readonly payload: Payload
  /** @default one derived from this run and the call's place in it */
  readonly idempotencyKey?: string
  /** What cancelling this run does to the unfinished child: `cancel` it, or `abandon` it. @default "cancel" */
  readonly parentClosePolicy?: "cancel" | "abandon"
}

/** A child run started by `ctx.startChild`. */
export interface ChildRunHandle<Result> {
  readonly id: string
  /** Resolves with the child's result once it ends; rejects with `ChildWorkflowFailed` if it failed or was cancelled. */
  readonly result: () => Promise<Result>
}

export interface VersionOptions<Payload, Result> extends FlowControlOptions<Payload> {
  /**
   * Deterministic outside tasks: the same payload and task results must lead to the same task calls. The payload
   * is also `ctx.workflowRun.params.payload`, so `run({ workflowRun })` is a complete signature.
   */
  readonly run: (ctx: WorkflowContext<Payload>, payload: Payload) => Promise<Result>
  /** Runs the workflow again when it fails: completed tasks stay memoized, failed ones run again. @default none */
  readonly retry?: RetryPolicy
  /**
   * Starts runs on a schedule, e.g. `{ cron: "0 9 * * MON-FRI", timezone: "Europe/Paris", payload }` or
   * `{ every: "15 minutes" }` (the schedule `<name>:trigger`). @default none
   */
  readonly trigger?: ScheduleOptions<Payload>
  /**
   * Runs fail (`failureReason: "timed_out"`) this long (ms) after their start unless finished; enforced by the
   * server. A start's `executionTimeoutMs` overrides it. @default none
   */
  readonly executionTimeoutMs?: number
}

/** One version of a workflow in one call, as the seeds' Core Concepts write it. */
export interface WorkflowVersionOptions<Payload, Result> extends VersionOptions<Payload, Result> {
  readonly name: string
  /** Runs stay on the version they started with; changed code is a new version. */
  readonly version: string
}

/** How a run is started: idempotently, with a priority, keys over the version's, or debounced. */
export interface StartRequest<Payload> extends StartFlowOptions, StartTimeoutOptions {
  readonly payload: Payload
  /** Starting again with the same key and payload returns the same run (a different payload is refused). */
  readonly idempotencyKey?: string
}

export interface VersionedWorkflow<Payload, Result> {
  readonly name: string
  readonly version: string
  /**
   * Starts a run; with `idempotencyKey`, starting again with the same key and payload returns the same run; with
   * `debounce`, it replaces the unstarted run with the same debounce key.
   */
  readonly start: (client: Client, request: StartRequest<Payload>) => Promise<WorkflowRunHandle<Result>>
  /** `start` by the name the seeds use: `await morningRoutine.enqueue(client, { payload })`. */
  readonly enqueue: (client: Client, request: StartRequest<Payload>) => Promise<WorkflowRunHandle<Result>>
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

/** `workflow({ name })` for a workflow to add versions to, or `workflow({ name, version, run })` for one version. */
export interface WorkflowConstructor {
  <Payload = unknown, Result = unknown>(options: WorkflowVersionOptions<Payload, Result>): VersionedWorkflow<Payload, Result>
  (options: { readonly name: string }): Workflow
}

/** The options of a version besides `run` and `retry`: its flow control and its trigger. */
const flowShapes: { readonly [name: string]: Options.Shape } = {
  concurrency: { known: ["key", "limit", "workflowLimit"] },
  ordering: { known: ["key"] },
  rateLimit: { known: ["key", "limit", "period"] },
  trigger: { known: ["cron", "timezone", "every", "payload", "overlap", "catchUpWindow", "jitter", "priority"] }
}
const flowOptions = ["priority", "executionTimeoutMs", ...Object.keys(flowShapes)]
const workflowShape: Options.Shape = {
  known: ["name", "version", "run", "retry", ...flowOptions],
  nested: { retry: retryShape, ...flowShapes }
}
const versionShape: Options.Shape = { known: ["run", "retry", ...flowOptions], nested: { retry: retryShape, ...flowShapes } }
const childShape: Options.Shape = { known: ["payload", "idempotencyKey", "parentClosePolicy"] }
const startShape: Options.Shape = {
  known: [
    "payload",
    "idempotencyKey",
    "priority",
    "concurrencyKey",
    "concurrencyLimit",
    "orderingKey",
    "rateLimitKey",
    "debounce",
    "executionTimeoutMs",
    "scheduleToStartTimeoutMs"
  ],
  nested: { debounce: { known: ["key", "delay", "maxDelay"] } }
}

/**
 * Defines a workflow: `workflow({ name }).v(version, { run })`, or one version at once with
 * `workflow({ name, version, run })`.
 *
 * @example
 * ```ts
 * const morningRoutine = workflow({
 *   name: "morning-routine",
 *   version: "1.0.0",
 *   async run({ workflowRun }) {
 *     const alarm = await ringAlarm.run(workflowRun, { payload: { song: "Wake up!" } })
 *     return { alarm }
 *   }
 * })
 * ```
 */
export const workflow = ((
  options: { readonly name: string } & Partial<WorkflowVersionOptions<unknown, unknown>>
): Workflow | VersionedWorkflow<unknown, unknown> => {
  Options.check("workflow()", options, workflowShape)
  Options.requireKind("workflow()", "name", options.name, "string")
  const versions: Array<VersionedWorkflow<unknown, unknown>> = []
  const v = <Payload, Result>(version: string, definition: VersionOptions<Payload, Result>) => {
    const where = `workflow("${options.name}").v()`
    Options.requireKind(where, "version", version, "string")
    Options.check(where, definition, versionShape)
    Options.requireKind(where, "run", definition.run, "function")
    const { concurrency, executionTimeoutMs, ordering, priority, rateLimit, retry, trigger } = definition
    const effect = EffectWorkflow.make(options.name, version, {
      payload: JsonCodec.PlainJson,
      success: JsonCodec.PlainJson,
      ...(retry !== undefined ? { retry } : {}),
      ...(executionTimeoutMs !== undefined ? { executionTimeoutMs } : {}),
      // Payloads are JSON: the key functions see the payload as stored.
      ...({ concurrency, ordering, priority, rateLimit } as FlowControlOptions<Schema.Json>),
      ...(trigger !== undefined ? { trigger: { ...trigger, payload: toJson(trigger.payload) } as ScheduleOptions<Schema.Json> } : {}),
      run: (payload) =>
        Effect.gen(function*() {
          const run = yield* WorkflowRun
          const context = yield* Effect.context<WorkflowRun>()
          return yield* Effect.tryPromise({
            try: async (signal) => {
              // The run's services travel with `ctx`, so `task.start(ctx, …)` runs inside this run.
              const inRun = runServices(context, signal)
              const workflowRun: WorkflowRunContext<Payload> = {
                id: run.runId,
                name: run.workflowName,
                version: run.workflowVersion,
                params: { payload: payload as Payload },
                [services]: inRun
              }
              return toJson(
                await definition.run({
                  workflowRun,
                  signal,
                  sleep: (ms) => inRun.run(run.sleep(ms)),
                  waitForEvent: ((name: string, options?: { readonly timeoutMs: number }) => {
                    if (options === undefined) return inRun.run(run.waitForEvent(name))
                    Options.check("ctx.waitForEvent()", options, { known: ["timeoutMs"] })
                    Options.requireKind("ctx.waitForEvent()", "timeoutMs", options.timeoutMs, "number")
                    return inRun.run(run.waitForEventWithin(name, options.timeoutMs)).then((payload) =>
                      Option.isSome(payload) ? { timedOut: false, payload: payload.value } : { timedOut: true }
                    )
                  }) as WorkflowContext<Payload>["waitForEvent"],
                  // Synchronous: a patch is looked up in the journal and its marker queued, nothing is awaited.
                  patched: (changeId) => Effect.runSync(run.patched(changeId)),
                  deprecatePatch: (changeId) => Effect.runSync(run.deprecatePatch(changeId)),
                  startChild: (child, request) => startChild(inRun, child, request),
                  executeChild: (child, request) => startChild(inRun, child, request).then((handle) => handle.result()),
                  [services]: inRun
                }, payload as Payload)
              )
            },
            catch: (error) => error
          }).pipe(Effect.orDie)
        })
    })
    const start = async (client: Client, request: StartRequest<Payload>) => {
      Options.check(`${options.name}.start()`, request, startShape)
      const { payload, ...startOptions } = request
      const handle = await client.runtime.runPromise(
        Effect.flatMap(AikiClient, (aiki) => aiki.start(effect, toJson(payload), startOptions))
      )
      return toHandle<Result>(client, handle)
    }
    const versioned: VersionedWorkflow<Payload, Result> = {
      name: options.name,
      version,
      effect,
      start,
      enqueue: start,
      getHandle: (client, runId) =>
        toHandle(client, client.runtime.runSync(Effect.map(AikiClient, (aiki) => aiki.handle(effect, runId as RunId))))
    }
    versions.push(versioned as VersionedWorkflow<unknown, unknown>)
    return versioned
  }
  const defined: Workflow = { name: options.name, v, versions: () => versions }
  const { name: _, version, run, ...rest } = options
  if (version === undefined && run === undefined && Object.keys(rest).length === 0) return defined
  Options.requireKind("workflow()", "version", version, "string")
  Options.requireKind("workflow()", "run", run, "function")
  return v(version!, { ...rest, run: run! })
}) as WorkflowConstructor

/** Starts a child run from a promise workflow; its handle's `result()` is one durable wait, however often called. */
const startChild = async <Payload, Result>(
  inRun: RunServices,
  child: VersionedWorkflow<Payload, Result>,
  request: ChildRequest<Payload>
): Promise<ChildRunHandle<Result>> => {
  const where = `ctx.startChild(${child?.name})`
  if (child === undefined || child === null || typeof child !== "object" || !("effect" in child)) {
    throw new InvalidOptions({ where, option: "workflow", reason: "the first argument must be a workflow version (`workflow(…).v(…)`)" })
  }
  Options.check(where, request, childShape)
  const { idempotencyKey, parentClosePolicy, payload } = request
  const handle = await inRun.run(
    EffectWorkflow.startChild(child.effect, toJson(payload), {
      ...(idempotencyKey !== undefined ? { idempotencyKey } : {}),
      ...(parentClosePolicy !== undefined ? { parentClosePolicy } : {})
    })
  )
  let result: Promise<Result> | undefined
  return {
    id: handle.runId,
    result: () => (result ??= inRun.run(handle.result) as Promise<Result>)
  }
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
  /** The runs this run started with `ctx.startChild` / `ctx.executeChild`, oldest first. */
  readonly getChildren: () => Promise<ReadonlyArray<RunRecord>>
  /**
   * Runs a failed or cancelled run again, as the same run: completed tasks are replayed, failed and unfinished ones
   * run again. Rejects with `InvalidTransition` when the run is in any other state.
   *
   * @example
   * ```ts
   * const run = await orderV1.start(client, { id: "o-1" })
   * await run.waitForCompletion().catch(() => run.retry())
   * ```
   */
  readonly retry: () => Promise<RunRecord>
  /**
   * Runs a failed or cancelled run again from a journal entry — `{ sequence }`, or `{ task, occurrence }` (a task's
   * name or definition, 0 its first call) — discarding that entry and every one after it.
   */
  readonly reset: (to: ResetTarget) => Promise<RunRecord>
  /** Set when the start was flagged: e.g. no worker has registered the workflow's version yet. */
  readonly warning?: string | undefined
  /**
   * Sends an event to the run, for its `ctx.waitForEvent(name)` (kept until a wait of that name receives it). With
   * `eventId`, sending again with the same id stores nothing and resolves with `duplicate: true`.
   */
  readonly sendEvent: (
    name: string,
    payload: unknown,
    options?: { readonly eventId?: string }
  ) => Promise<{ readonly eventId: string; readonly duplicate: boolean }>
}

/** The promise handle of a run handle of the Effect API (to mix both styles with one client). */
export const toHandle = <Result>(client: Client, handle: RunHandle<unknown, unknown>): WorkflowRunHandle<Result> => ({
  id: handle.id,
  getStatus: () => client.runtime.runPromise(handle.status),
  waitForCompletion: (options) => client.runtime.runPromise(handle.result(options)) as Promise<Result>,
  cancel: () => client.runtime.runPromise(handle.cancel),
  retry: () => client.runtime.runPromise(handle.retry),
  reset: (to) => client.runtime.runPromise(handle.reset(to)),
  ...(handle.warning !== undefined ? { warning: handle.warning } : {}),
  getChildren: () => client.runtime.runPromise(handle.children),
  sendEvent: (name, payload, options) => {
    if (options !== undefined) Options.check("sendEvent()", options, { known: ["eventId"] })
    return client.runtime.runPromise(handle.sendEvent(name, toJson(payload), options)).then((sent) => ({
      eventId: sent.eventId,
      duplicate: sent.duplicate === true
    }))
  }
})

export interface Client {
  readonly baseUrl: string
  readonly runtime: ManagedRuntime.ManagedRuntime<AikiClient, never>
  /** Schedules: runs started by the server on a cron expression or an interval. */
  readonly schedules: ClientSchedules
  /** Releases the client's connections. */
  readonly close: () => Promise<void>
}

/** The promise form of the client's schedules (see `AikiClient.Schedules`). */
export interface ClientSchedules {
  /**
   * Creates a schedule starting runs of `workflow`.
   *
   * @example
   * ```ts
   * await aiki.schedules.create(reportV1, { id: "nightly-report", cron: "0 2 * * *", timezone: "Europe/Paris", payload: {} })
   * ```
   */
  readonly create: <Payload>(workflow: VersionedWorkflow<Payload, unknown>, options: CreateScheduleOptions<Payload>) => Promise<Schedule>
  readonly list: (workflowName?: string) => Promise<ReadonlyArray<Schedule>>
  readonly get: (id: string) => Promise<Schedule>
  readonly pause: (id: string) => Promise<Schedule>
  readonly resume: (id: string) => Promise<Schedule>
  /** Starts a run now. */
  readonly trigger: (id: string) => Promise<StartedRun>
  /** Starts the runs of the fire times in `[from, to)` that have none (at most 1,000). */
  readonly backfill: (id: string, range: { readonly from: Date; readonly to: Date }) => Promise<BackfillResult>
  readonly delete: (id: string) => Promise<void>
}

interface ClientSettings {
  /** Sent as `X-API-Key`. */
  readonly apiKey?: string
  /**
   * A JWT sent as `Authorization: Bearer`, for a server configured with `JWT_SECRET` or `JWT_JWKS_URL`. A function
   * is asked before every request (return a cached token, renewed before it expires).
   */
  readonly token?: string | (() => string | PromiseLike<string>)
  /**
   * Export traces — each `start`, and on this client's workers each run and task attempt — to an OTLP collector
   * (`{ endpoint, serviceName }`) or through a tracer of your own (`{ tracer }`). @default not traced
   */
  readonly tracing?: Tracing.TracingOptions
  /** Workers of this client read runs from Redis Streams; without it they long-poll the server. */
  readonly redis?: RedisOptions
}

/** Where the server is (`baseUrl`, or `url` as the seeds name it) and how to reach it. */
export type ClientConfig = ClientSettings & (
  | {
    /** e.g. `http://localhost:9090` (`localhost:9090` is read as http). */
    readonly baseUrl: string
    readonly url?: never
  }
  | {
    /** The same as `baseUrl`, by the name the seeds use. */
    readonly url: string
    readonly baseUrl?: never
  }
)

const redisShape: Options.Shape = {
  known: ["url", "host", "port", "username", "password", "tls", "cluster"],
  nested: { cluster: { known: ["nodes"] } }
}
const tracingShape: Options.Shape = { known: ["endpoint", "serviceName", "headers", "exportIntervalMs", "tracer"] }
const clientShape: Options.Shape = {
  known: ["baseUrl", "url", "apiKey", "token", "redis", "tracing"],
  nested: { redis: redisShape, tracing: tracingShape }
}

/**
 * Connects to an Aiki server: starts runs, follows them, and is what workers run on. `close()` it when done.
 *
 * @example
 * ```ts
 * const aiki = await client({ baseUrl: "http://localhost:9090", apiKey, redis: { url: "redis://localhost:6379" } })
 * ```
 */
export const client = async (config: ClientConfig): Promise<Client> => {
  Options.check("client()", config, clientShape)
  if (config.baseUrl !== undefined && config.url !== undefined) {
    throw new InvalidOptions({ where: "client()", option: "url", reason: "give `baseUrl` or `url`, not both" })
  }
  const address: unknown = config.baseUrl ?? config.url
  Options.requireKind("client()", "baseUrl", address, "string")
  const baseUrl = /^https?:\/\//.test(address as string) ? address as string : `http://${address as string}`
  const options: ClientOptions = {
    baseUrl,
    ...(config.apiKey !== undefined ? { apiKey: config.apiKey } : {}),
    ...(config.token !== undefined ? { token: config.token } : {}),
    ...(config.redis !== undefined ? { redis: config.redis } : {})
  }
  // The tracer is provided beside the client, so every fiber of this runtime (starts, workers, runs) uses it.
  const runtime = ManagedRuntime.make(
    config.tracing === undefined
      ? AikiClient.layer(options)
      : AikiClient.layer(options).pipe(Layer.provideMerge(Tracing.layer(config.tracing)))
  )
  await runtime.runPromise(Effect.void)
  const use = <A, E>(f: (schedules: AikiClient["Service"]["schedules"]) => Effect.Effect<A, E>) =>
    runtime.runPromise(Effect.flatMap(AikiClient, (aiki) => f(aiki.schedules)))
  const schedules: ClientSchedules = {
    create: (workflow, { payload, ...rest }) =>
      use((s) => s.create(workflow.effect, { ...rest, payload: toJson(payload) } as CreateScheduleOptions<Schema.Json>)),
    list: (workflowName) => use((s) => s.list(workflowName)),
    get: (id) => use((s) => s.get(id)),
    pause: (id) => use((s) => s.pause(id)),
    resume: (id) => use((s) => s.resume(id)),
    trigger: (id) => use((s) => s.trigger(id)),
    backfill: (id, range) => use((s) => s.backfill(id, range)),
    delete: (id) => use((s) => s.delete(id))
  }
  return { baseUrl, runtime, schedules, close: () => runtime.dispose() }
}

/** `client` by the name the seeds' Core Concepts use: `await createClient({ url: "localhost:9090" })`. */
export const createClient = client

// ---------------------------------------------------------------------------------------------------------------
// Workers

/**
 * The seeds' name for the HTTP subscriber's polling options (`subscriber: { type: "http", … }`): a worker with
 * `workflowRunSubscriber` asks the server for runs over HTTP, whether or not the client has Redis options.
 */
export type WorkflowRunSubscriberOptions = Omit<Extract<EffectWorker.Subscriber, { readonly type: "http" }>, "type">

export interface WorkerConfig extends Omit<EffectWorker.WorkerOptions, "workflows"> {
  /** Polling options as the seeds name them; give this or `subscriber`, not both. */
  readonly workflowRunSubscriber?: WorkflowRunSubscriberOptions
}

const pollingOptions = ["pollIntervalMs", "maxBatchSize", "maxRetryDelayMs"]
const workerShape: Options.Shape = {
  known: [
    "id",
    "maxConcurrentWorkflowRuns",
    "subscriber",
    "workflowRunSubscriber",
    "workflowRun",
    "livenessTimeoutMs",
    "gracefulShutdownTimeoutMs"
  ],
  nested: {
    subscriber: {
      byType: {
        redis_streams: { known: ["type", "claimMinIdleTimeMs", "blockTimeMs", "maxBatchSize"] },
        http: { known: ["type", "blockTimeMs", ...pollingOptions] }
      }
    },
    workflowRunSubscriber: { known: ["blockTimeMs", ...pollingOptions] },
    workflowRun: { known: ["heartbeatIntervalMs", "leaseMs", "suspendAfterMs"] }
  }
}

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
  /**
   * Starts receiving runs. The promise resolves only when the worker has stopped (`stop()`), so do not `await`
   * it before the rest of your program: `void w.start()`, and `await w.stop()` at shutdown (its promise then
   * resolves). Awaiting it is right only as the last line of a program that does nothing but work.
   */
  readonly start: () => Promise<void>
  /** Stops receiving, lets runs in flight finish (up to `gracefulShutdownTimeoutMs`), hands the rest over. */
  readonly stop: () => Promise<void>
}

const isWorkflow = (value: unknown): value is VersionedWorkflow<never, unknown> | Workflow =>
  typeof value === "object" && value !== null && ("versions" in value || "effect" in value)

/**
 * A worker that runs the workflows added to its registry, on the client's connection.
 *
 * @example
 * ```ts
 * const w = await worker(aiki, { id: "worker-1", maxConcurrentWorkflowRuns: 5 })
 * w.workflowRegistry.add(morningRoutine)
 * void w.start()
 * process.on("SIGTERM", () => void w.stop())
 * ```
 */
export const worker = async (client: Client, config: WorkerConfig = {}): Promise<Worker> => {
  Options.check("worker()", config, workerShape)
  const { workflowRunSubscriber, ...options } = config
  if (workflowRunSubscriber !== undefined && options.subscriber !== undefined) {
    throw new InvalidOptions({
      where: "worker()",
      option: "workflowRunSubscriber",
      reason: "give `subscriber` or `workflowRunSubscriber`, not both"
    })
  }
  const subscriber = workflowRunSubscriber === undefined ? options.subscriber : { type: "http" as const, ...workflowRunSubscriber }
  const registered = new Map<string, EffectWorkflow.Any>()
  const registry: WorkflowRegistry = {
    add: (added) => {
      if (!isWorkflow(added)) {
        throw new InvalidOptions({
          where: "workflowRegistry.add()",
          option: "workflow",
          reason: "expected a workflow (`workflow({ name })`) or a version of one"
        })
      }
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
      const layer = EffectWorker.layer({
        ...options,
        ...(subscriber !== undefined ? { subscriber } : {}),
        workflows: [...registered.values()]
      })
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
