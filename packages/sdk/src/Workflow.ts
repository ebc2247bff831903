/**
 * Workflows: a business process written as ordinary Effect code that starts tasks. A workflow is named and
 * versioned; a run is pinned to the version it started with, so changing the code means a new version while old
 * runs finish on the old one.
 *
 * The workflow's code runs again from the top each time a worker (re)acquires the run, and tasks already
 * recorded return their stored result. Everything outside tasks must therefore be deterministic: no clocks,
 * random numbers or I/O outside tasks; a replay that cannot match the recorded tasks fails the run with
 * `NonDeterminismError`.
 *
 * @example
 * ```ts
 * const OrderProcessing = Workflow.make("order-processing", "1.0.0", {
 *   payload: Order,
 *   success: Schema.Struct({ orderId: Schema.String }),
 *   error: OrderRejected,
 *   run: (order) => Effect.gen(function*() {
 *     const validation = yield* ValidateOrder.start(order)
 *     yield* ChargeCard.start({ orderId: validation.orderId, amount: validation.amount })
 *     return { orderId: validation.orderId }
 *   })
 * })
 * ```
 */
import { FlowPolicy } from "@aiki/contract/FlowControl"
import { IdempotencyKey, type RunId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { ParentClosePolicy } from "@aiki/contract/Models"
import { ScheduleSpec } from "@aiki/contract/Schedules"
import { TimeoutMs } from "@aiki/contract/Timeouts"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { ChildWorkflowFailed } from "./Errors.ts"
import * as Event from "./Event.ts"
import { type FlowControlOptions, policyOf, type ScheduleOptions, specOf } from "./FlowControl.ts"
import * as Json from "./internal/json.ts"
import type { Retry } from "./Retry.ts"
import { WorkflowRun } from "./WorkflowRun.ts"

const TypeId = "~@aiki/sdk/Workflow"

export interface Workflow<Payload extends Schema.Top, Success extends Schema.Top, Error extends Schema.Top, R> {
  readonly [TypeId]: typeof TypeId
  readonly name: WorkflowName
  readonly version: WorkflowVersion
  readonly payloadSchema: Payload
  readonly successSchema: Success
  readonly errorSchema: Error
  readonly run: (payload: Payload["Type"]) => Effect.Effect<Success["Type"], Error["Type"], R | WorkflowRun>
  readonly retry: Retry | undefined
  /** Its priority, limits and keys (see `FlowControl`). */
  readonly flowControl: FlowControlOptions<Payload["Type"]>
  /** The schedule it declares, if any. */
  readonly trigger: ScheduleOptions<Payload["Type"]> | undefined
  /** Its runs' execution timeout unless a start says otherwise (registered with the version). */
  readonly executionTimeoutMs: number | undefined
}

/** Any workflow, whatever its types (for registries and lists). */
export interface Any {
  readonly [TypeId]: typeof TypeId
  readonly name: WorkflowName
  readonly version: WorkflowVersion
  readonly payloadSchema: Schema.Top
  readonly successSchema: Schema.Top
  readonly errorSchema: Schema.Top
  /** Its requirements are checked where workers are built (`Worker.layer` asks for `Services` of its workflows). */
  readonly run: (payload: never) => Effect.Effect<unknown, unknown, unknown>
  readonly retry: Retry | undefined
  readonly flowControl: FlowControlOptions<never>
  readonly trigger: ScheduleOptions<unknown> | undefined
  readonly executionTimeoutMs: number | undefined
}

/** The services a workflow's code needs besides `WorkflowRun` (to be provided to the worker). */
export type Services<W> = W extends { readonly run: (payload: never) => Effect.Effect<unknown, unknown, infer R> }
  ? Exclude<R, WorkflowRun>
  : never

export interface Options<Payload extends Schema.Top, Success extends Schema.Top, Error extends Schema.Top, R>
  extends FlowControlOptions<Payload["Type"]>
{
  readonly payload: Payload
  readonly success: Success
  /** The workflow's expected failures: stored encoded, decoded for the caller. @default Schema.Never */
  readonly error?: Error
  readonly run: (payload: Payload["Type"]) => Effect.Effect<Success["Type"], Error["Type"], R>
  /**
   * Runs the whole workflow again when it fails, with completed tasks still memoized and failed ones run again.
   * The count of workflow attempts lives in the worker: after a takeover it starts over. @default no retry
   */
  readonly retry?: Retry
  /**
   * Starts runs on a schedule: `{ cron: "0 9 * * MON-FRI", timezone: "Europe/Paris" }` or `{ every: "15 minutes" }`,
   * with their payload. Registered by the worker as the schedule `<name>:trigger` (the highest version declaring
   * one owns it); pause or resume it with the client or `aiki schedules`. @default none
   */
  readonly trigger?: ScheduleOptions<Payload["Type"]>
  /**
   * Execution timeout of its runs, in ms from their start, enforced by the server: a run not finished by then
   * fails with `failureReason: "timed_out"` (its running task is aborted). A start's `executionTimeoutMs` overrides
   * it. Registered with the version, so it applies to runs started by the CLI or the API too. @default none
   */
  readonly executionTimeoutMs?: number
}

const decodeName = Schema.decodeUnknownSync(WorkflowName)
const decodeVersion = Schema.decodeUnknownSync(WorkflowVersion)
const checkPolicy = Schema.decodeUnknownSync(Schema.UndefinedOr(FlowPolicy))
const checkSpec = Schema.decodeUnknownSync(ScheduleSpec)
const checkTimeout = Schema.decodeUnknownSync(Schema.UndefinedOr(TimeoutMs))

/**
 * Defines a version of a workflow. Throws at definition time for a malformed name or version, a limit or priority
 * out of range, or a trigger whose cron expression or time zone is not valid.
 */
export const make = <Payload extends Schema.Top, Success extends Schema.Top, R, Error extends Schema.Top = typeof Schema.Never>(
  name: string,
  version: string,
  options: Options<Payload, Success, Error, R>
): Workflow<Payload, Success, Error, Exclude<R, WorkflowRun>> => ({
  [TypeId]: TypeId,
  name: decodeName(name),
  version: decodeVersion(version),
  payloadSchema: options.payload,
  successSchema: options.success,
  errorSchema: (options.error ?? Schema.Never) as Error,
  run: options.run as Workflow<Payload, Success, Error, Exclude<R, WorkflowRun>>["run"],
  retry: options.retry,
  flowControl: checked(options),
  trigger: options.trigger === undefined ? undefined : (checkSpec(specOf(options.trigger)), options.trigger),
  executionTimeoutMs: checkTimeout(options.executionTimeoutMs)
})

const checked = <P>(options: FlowControlOptions<P>): FlowControlOptions<P> => {
  checkPolicy(policyOf(options as FlowControlOptions<never>))
  const { concurrency, ordering, priority, rateLimit } = options
  return {
    ...(priority !== undefined ? { priority } : {}),
    ...(concurrency !== undefined ? { concurrency } : {}),
    ...(ordering !== undefined ? { ordering } : {}),
    ...(rateLimit !== undefined ? { rateLimit } : {})
  }
}

/**
 * Waits `duration` inside a workflow, durably: the wait is a journal entry, so a replay does not wait again, and
 * a long wait (see the worker's `suspendAfterMs`) holds no worker: the run sleeps on the server and any worker
 * resumes it when it is due (to the reaper's precision, `REAPER_INTERVAL_MS`). Use it instead of `Effect.sleep`,
 * which a replay would repeat.
 *
 * @example
 * ```ts
 * yield* SendReminder.start(user)
 * yield* Workflow.sleep("3 days")
 * yield* SendFollowUp.start(user)
 * ```
 */
export const sleep = (duration: Duration.Input): Effect.Effect<void, never, WorkflowRun> =>
  Effect.flatMap(WorkflowRun, (run) => run.sleep(Duration.toMillis(Duration.fromInputUnsafe(duration))))

/** How long a wait for an event may last. */
export interface WaitOptions {
  /**
   * At most this long from when the wait was first made (by the server's clock, so it holds across replays,
   * takeovers and with no worker at all): then the wait returns `Option.none()`. @default no limit
   */
  readonly timeout?: Duration.Input
}

/**
 * Waits for the next event of a name sent to this run (`POST /workflow-runs/:id/events/:name`, `sendEvent` on a
 * run handle, `aiki runs send-event`) and decodes its payload with the event's Schema: give an `Event` (see
 * `Event.make`), or a name and a Schema. While nothing has arrived, the run waits on the server (`awaiting_event`)
 * holding no worker; only an event of that name wakes it. Each event is received once; a replay returns the same
 * one.
 *
 * Which event a wait receives: the oldest one of that name the run holds that no earlier wait received. Events
 * are kept from the moment they are sent (even before the workflow waits for them) until a wait receives them or
 * the run ends, so an event sent before the wait is received by it.
 *
 * With `{ timeout }`, the result is an `Option`: `None` when no event came in time (an event that comes later is
 * kept for the next wait of that name).
 *
 * @example
 * ```ts
 * const Approval = Event.make("approval", Schema.Struct({ approved: Schema.Boolean }))
 * const approval = yield* Workflow.waitForEvent(Approval)
 * const maybe = yield* Workflow.waitForEvent(Approval, { timeout: "2 days" })   // Option<{ approved }>
 * const legacy = yield* Workflow.waitForEvent("approval", Schema.Struct({ approved: Schema.Boolean }))
 * ```
 */
export const waitForEvent: {
  <S extends Schema.Top>(
    event: Event.Event<S>,
    options: WaitOptions & { readonly timeout: Duration.Input }
  ): Effect.Effect<Option.Option<S["Type"]>, never, WorkflowRun>
  <S extends Schema.Top>(event: Event.Event<S>): Effect.Effect<S["Type"], never, WorkflowRun>
  <S extends Schema.Top>(
    name: string,
    schema: S,
    options: WaitOptions & { readonly timeout: Duration.Input }
  ): Effect.Effect<Option.Option<S["Type"]>, never, WorkflowRun>
  <S extends Schema.Top>(name: string, schema: S): Effect.Effect<S["Type"], never, WorkflowRun>
} = ((first: string | Event.Any, second?: Schema.Top | WaitOptions, third?: WaitOptions) => {
  const event = typeof first === "string" ? Event.make(first, second as Schema.Top) : first
  const options = typeof first === "string" ? third : second as WaitOptions | undefined
  const decode = (payload: Schema.Json) => Json.decode(event.schema, payload, `the payload of event ${event.name}`)
  if (options?.timeout === undefined) {
    return Effect.flatMap(WorkflowRun, (run) => run.waitForEvent(event.name)).pipe(Effect.flatMap(decode), Effect.orDie)
  }
  const timeoutMs = Duration.toMillis(Duration.fromInputUnsafe(options.timeout))
  return Effect.flatMap(WorkflowRun, (run) => run.waitForEventWithin(event.name, timeoutMs)).pipe(
    Effect.flatMap(Option.match({
      onNone: () => Effect.succeed(Option.none()),
      onSome: (payload) => Effect.map(decode(payload), Option.some)
    })),
    Effect.orDie
  )
}) as typeof waitForEvent

/**
 * Whether this run takes the code path of change `changeId` — a way to change a workflow's code without a new
 * version, for runs already in flight (Temporal's `patched`). True for runs that reach this point under the
 * changed code (the answer is recorded in the run's journal, so every replay says true again); false for runs that
 * had already gone past this point under the code before (their replays must take the old path). Answered once
 * per run and change id: later calls return the first answer.
 *
 * Once no run that can answer false remains (every run recorded before the change has finished), replace the
 * branch with the new code and `deprecatePatch(changeId)`; once runs that recorded the patch have finished too,
 * remove that call. Check a change against recorded runs with `aiki replay` before deploying it.
 *
 * @example
 * ```ts
 * if (yield* Workflow.patched("send-receipt")) {
 *   yield* SendReceipt.start(order)
 * }
 * yield* Ship.start(order)
 * ```
 */
export const patched = (changeId: string): Effect.Effect<boolean, never, WorkflowRun> =>
  Effect.flatMap(WorkflowRun, (run) => run.patched(changeId))

/**
 * The second step of retiring a patch: the code keeps only the new path, and runs that recorded `patched(changeId)`
 * still replay (the marker is found where they recorded it); other runs record nothing.
 *
 * @example
 * ```ts
 * yield* Workflow.deprecatePatch("send-receipt")
 * yield* SendReceipt.start(order)
 * ```
 */
export const deprecatePatch = (changeId: string): Effect.Effect<void, never, WorkflowRun> =>
  Effect.flatMap(WorkflowRun, (run) => run.deprecatePatch(changeId))

/** How a child run is started (`startChild`, `executeChild`). */
export interface ChildOptions {
  /**
   * The child's idempotency key (within its workflow): a run already holding it with the same payload is the child
   * (it is not linked to this parent then); with another payload the start dies with a `TaskError`
   * (`IdempotencyConflict`). @default one derived from the parent run and the call's place in it, so the same call
   * of the same run always names the same child
   */
  readonly idempotencyKey?: string | undefined
  /**
   * What cancelling the parent does to the child while it has not finished: `cancel` it (and its own children), or
   * `abandon` it to run on. @default "cancel"
   */
  readonly parentClosePolicy?: ParentClosePolicy | undefined
}

/** A child run started from a workflow: its id, and its end. */
export interface ChildHandle<A, E> {
  readonly runId: RunId
  /**
   * Waits for the child to end (parked on the server, `awaiting_child`, holding no worker): its result decoded by
   * the child's success schema, its declared error decoded by its error schema, or `ChildWorkflowFailed` when it
   * failed otherwise or was cancelled. The same on every replay.
   */
  readonly result: Effect.Effect<A, E | ChildWorkflowFailed, WorkflowRun>
}

const decodeKey = Schema.decodeUnknownSync(IdempotencyKey)

/**
 * Starts `child` as a child run of this workflow's run and returns its handle. The start is a journal entry: a
 * replay gets the same child back, never a second one. The child names this run as its parent
 * (`WorkflowRun.parentRunId`); cancelling this run cancels the child unless its `parentClosePolicy` is `abandon`.
 *
 * @example
 * ```ts
 * const shipping = yield* Workflow.startChild(Shipping, { orderId })
 * yield* ChargeCard.start({ orderId })
 * const label = yield* shipping.result
 * ```
 */
export const startChild = <Payload extends Schema.Top, Success extends Schema.Top, Error extends Schema.Top, R>(
  child: Workflow<Payload, Success, Error, R>,
  payload: Payload["Type"],
  options: ChildOptions = {}
): Effect.Effect<ChildHandle<Success["Type"], Error["Type"]>, never, WorkflowRun> =>
  Effect.gen(function*() {
    const run = yield* WorkflowRun
    const encoded = yield* Json.encode(child.payloadSchema, payload, `the payload of child workflow ${child.name}`).pipe(Effect.orDie)
    const runId = yield* run.startChild({
      workflowName: child.name,
      workflowVersion: child.version,
      payload: encoded,
      ...(options.idempotencyKey !== undefined ? { idempotencyKey: decodeKey(options.idempotencyKey) } : {}),
      parentClosePolicy: options.parentClosePolicy ?? "cancel"
    })
    return { runId, result: childResult(child, runId) }
  })

/** The end of child `runId`, decoded by `child`'s schemas. */
const childResult = <Success extends Schema.Top, Error extends Schema.Top>(
  child: { readonly name: string; readonly successSchema: Success; readonly errorSchema: Error },
  runId: RunId
): Effect.Effect<Success["Type"], Error["Type"] | ChildWorkflowFailed, WorkflowRun> =>
  Effect.gen(function*() {
    const run = yield* WorkflowRun
    const outcome = yield* run.awaitChild(runId)
    if (outcome.state === "completed") {
      return yield* Json.decode(child.successSchema, outcome.result, `the result of child run ${runId}`).pipe(Effect.orDie)
    }
    const error = outcome.error
    if (outcome.state === "failed" && error?.data !== undefined) {
      const typed = yield* Json.decode(child.errorSchema, error.data, `the error of child run ${runId}`).pipe(Effect.option)
      if (Option.isSome(typed)) return yield* Effect.fail(typed.value)
    }
    return yield* new ChildWorkflowFailed({
      childRunId: runId,
      workflowName: child.name,
      state: outcome.state,
      errorName: error?.name ?? (outcome.state === "cancelled" ? "RunCancelled" : "Error"),
      message: error?.message ?? `Child run ${runId} of ${child.name} was ${outcome.state}`,
      ...(error?.data !== undefined ? { data: error.data } : {})
    })
  })

/**
 * Starts `child` as a child run and waits for its end (`startChild` then `result`): its result, its declared error
 * decoded, or `ChildWorkflowFailed`. While the child runs, this run waits on the server (`awaiting_child`) holding
 * no worker; the child's end wakes it, however the child ended.
 *
 * @example
 * ```ts
 * const receipt = yield* Workflow.executeChild(Payment, { orderId, amount }).pipe(
 *   Effect.catchTag("CardDeclined", () => Effect.succeed(undefined))
 * )
 * ```
 */
export const executeChild = <Payload extends Schema.Top, Success extends Schema.Top, Error extends Schema.Top, R>(
  child: Workflow<Payload, Success, Error, R>,
  payload: Payload["Type"],
  options: ChildOptions = {}
): Effect.Effect<Success["Type"], Error["Type"] | ChildWorkflowFailed, WorkflowRun> =>
  Effect.flatMap(startChild(child, payload, options), (handle) => handle.result)

/** `name@version`, how a workflow version is keyed and shown. */
export const key = (workflow: { readonly name: string; readonly version: string }) => `${workflow.name}@${workflow.version}`
