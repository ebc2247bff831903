/**
 * The client of an Aiki server: start runs of a workflow version and follow them. Waiting for a run is pushed
 * (Server-Sent Events), not polled; a workflow's declared error reaches the caller decoded as its own type.
 *
 * @example
 * ```ts
 * const program = Effect.gen(function*() {
 *   const aiki = yield* AikiClient
 *   const run = yield* aiki.start(OrderProcessing, order, { idempotencyKey: order.id })
 *   const receipt = yield* run.result()   // OrderRejected is typed
 * }).pipe(Effect.provide(AikiClient.layer({ baseUrl: "http://localhost:9090" })))
 * ```
 */
import * as Client from "@aiki/contract/Client"
import type { EventName, IdempotencyKey, RunId, ScheduleId, TaskName, WorkflowName } from "@aiki/contract/Ids"
import { type RunUpdate, type SentEvent, StartedRun, type StartRuns, type WorkflowRun } from "@aiki/contract/Models"
import type { BackfillResult, Schedule as ScheduleRecord } from "@aiki/contract/Schedules"
import { isTerminal } from "@aiki/contract/RunState"
import {
  type EventConflict,
  type Forbidden,
  type IdempotencyConflict,
  type InvalidRequest,
  type InvalidTransition,
  type PayloadTooLarge,
  type RunNotFound,
  type ScheduleExists,
  type ScheduleNotFound,
  type Unauthorized
} from "@aiki/contract/Errors"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as DateTime from "effect/DateTime"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Sse from "effect/encoding/Sse"
import * as HttpClientError from "effect/http/HttpClientError"
import * as HttpTraceContext from "effect/http/HttpTraceContext"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import type { ConnectionOptions } from "node:tls"
import { RunCancelled, RunFailed, SerializationError, WaitTimeout } from "./Errors.ts"
import * as Event from "./Event.ts"
import { scheduleOf, type ScheduleOptions, type StartFlowOptions, startFlowOf } from "./FlowControl.ts"
import * as Batcher from "./internal/Batcher.ts"
import * as Json from "./internal/json.ts"
import type { Workflow } from "./Workflow.ts"

/**
 * Where a worker reads runs from: the Redis (or Redis Cluster) the server publishes to, with its credentials and
 * TLS. Point it at the same Redis as the server's `REDIS_URL` / `REDIS_CLUSTER_NODES`.
 *
 * @example
 * ```ts
 * { url: "rediss://redis.internal:6380", username: "aiki-worker", password, tls: { ca: readFileSync("ca.pem") } }
 * { cluster: { nodes: ["10.0.0.1:7000", "10.0.0.2:7000"] }, password }
 * ```
 */
export interface RedisOptions {
  /**
   * e.g. `redis://localhost:6379`, or `rediss://…` for TLS. Takes precedence over host and port; credentials in it
   * (`user:password@`) take precedence over `username` and `password`.
   */
  readonly url?: string
  /** @default "localhost" */
  readonly host?: string
  /** @default 6379 */
  readonly port?: number
  /** An ACL user. @default the default user */
  readonly username?: string
  /** The ACL user's password, or the default user's `requirepass`. */
  readonly password?: string
  /**
   * TLS: `true` trusts the system's CAs; options (e.g. `{ ca }` for a private CA) are Node's `tls.connect`
   * options. A `rediss://` URL turns it on too. @default off
   */
  readonly tls?: boolean | ConnectionOptions
  /**
   * A Redis Cluster instead of one server: its seed nodes (`"host:port"` or `{ host, port }`), the rest are
   * discovered. `url`, `host` and `port` are then not used; `username`, `password` and `tls` apply to every node.
   */
  readonly cluster?: { readonly nodes: ReadonlyArray<string | { readonly host: string; readonly port: number }> }
}

export interface ClientOptions extends Client.ClientOptions {
  /** Where workers read runs from (Redis Streams); without it workers long-poll the server. */
  readonly redis?: RedisOptions
}

/** A started run: follow it, wait for its result, cancel it. */
export interface RunHandle<A, E> {
  readonly id: RunId
  /** The run as the server has it now. */
  readonly status: Effect.Effect<WorkflowRun, ClientError>
  /**
   * Waits until the run is final: its result, its declared error, `RunFailed` (any other failure) or
   * `RunCancelled`. With `timeoutMs`, gives up with `WaitTimeout` (the run goes on).
   */
  readonly result: (options?: { readonly timeoutMs?: number }) => Effect.Effect<
    A,
    E | RunFailed | RunCancelled | WaitTimeout | SerializationError | ClientError
  >
  /** Live updates of the run and its tasks until it is final. */
  readonly updates: Stream.Stream<RunUpdate, ClientError>
  readonly cancel: Effect.Effect<WorkflowRun, ClientError>
  /** The runs this run started as child workflows (`Workflow.startChild`), oldest first. */
  readonly children: Effect.Effect<ReadonlyArray<WorkflowRun>, ClientError>
  /**
   * Runs a failed or cancelled run again, as the same run: completed tasks are replayed from its journal, failed
   * and unfinished ones run again. `InvalidTransition` when the run is in any other state.
   */
  readonly retry: Effect.Effect<WorkflowRun, ClientError>
  /**
   * Runs a failed or cancelled run again from a journal entry — its `sequence`, or the `occurrence`-th call (0 the
   * first) of the task named `task` — discarding that entry and every one after it.
   */
  readonly reset: (to: ResetTarget) => Effect.Effect<WorkflowRun, ClientError>
  /** Set when the start was flagged: e.g. no worker has registered the workflow's version yet. */
  readonly warning?: string | undefined
  /**
   * Sends an event to the run (for its `waitForEvent`): by name with a JSON payload, or as an `Event` whose Schema
   * encodes the payload. Kept until the run waits for that name; with `eventId`, sending again stores nothing.
   */
  readonly sendEvent: {
    <S extends Schema.Top>(
      event: Event.Event<S>,
      payload: S["Type"],
      options?: Event.SendOptions
    ): Effect.Effect<SentEvent, ClientError | SerializationError>
    (name: string, payload: unknown, options?: Event.SendOptions): Effect.Effect<SentEvent, ClientError | SerializationError>
  }
}

/** Where a reset goes back to: an entry's sequence, or a task's name (or definition) and which call of it. */
export type ResetTarget =
  | { readonly sequence: number }
  | { readonly task: string | { readonly name: string }; readonly occurrence?: number }

/** How to start a run: idempotently, and with flow control over what its version declares. */
export interface StartOptions extends StartFlowOptions, StartTimeoutOptions {
  /** Starting again with the same key and payload returns the same run. */
  readonly idempotencyKey?: string
}

/** The timeouts of one run, enforced by the server. */
export interface StartTimeoutOptions {
  /**
   * The run fails (`failureReason: "timed_out"`) if it has not finished this long (ms) after its start; its
   * running task is aborted. @default the workflow version's `executionTimeoutMs`, else none
   */
  readonly executionTimeoutMs?: number
  /**
   * The run fails (`failureReason: "schedule_to_start_timed_out"`) if no worker claimed it this long (ms) after
   * its start: e.g. no worker serves its version. @default none
   */
  readonly scheduleToStartTimeoutMs?: number
}

/** A schedule to create: when it fires, the payload of its runs, and its id. */
export type CreateScheduleOptions<Payload> = ScheduleOptions<Payload> & {
  /** @default a new id */
  readonly id?: string
  /** @default false */
  readonly paused?: boolean
}

/**
 * Schedules: runs of a workflow version started by the server at fire times. Each fire time starts at most one
 * run, on any number of server replicas.
 */
export interface Schedules {
  readonly create: <P extends Schema.Top, S extends Schema.Top, E extends Schema.Top, R>(
    workflow: Workflow<P, S, E, R>,
    options: CreateScheduleOptions<P["Type"]>
  ) => Effect.Effect<ScheduleRecord, ClientError | SerializationError>
  /** Every schedule, or those of one workflow. */
  readonly list: (workflowName?: string) => Effect.Effect<ReadonlyArray<ScheduleRecord>, ClientError>
  /** A schedule with its next fire times, its latest runs and how many fire times it skipped. */
  readonly get: (id: string) => Effect.Effect<ScheduleRecord, ClientError>
  readonly pause: (id: string) => Effect.Effect<ScheduleRecord, ClientError>
  readonly resume: (id: string) => Effect.Effect<ScheduleRecord, ClientError>
  /** Starts a run now. */
  readonly trigger: (id: string) => Effect.Effect<StartedRun, ClientError>
  /** Starts the runs of the fire times in `[from, to)` that have none (at most 1,000). */
  readonly backfill: (
    id: string,
    range: { readonly from: DateTime.DateTime.Input; readonly to: DateTime.DateTime.Input }
  ) => Effect.Effect<BackfillResult, ClientError>
  readonly delete: (id: string) => Effect.Effect<void, ClientError>
}

/**
 * What talking to the server can fail with: a transport failure or an unexpected answer (`HttpClientError`), an
 * answer that does not decode (`SchemaError`), or one of the errors the server declares. Each is a class with a
 * `_tag`, so `Effect.catchTag` tells them apart.
 */
export type ClientError =
  | HttpClientError.HttpClientError
  | Schema.SchemaError
  | RunNotFound
  | InvalidTransition
  | IdempotencyConflict
  | EventConflict
  | PayloadTooLarge
  | InvalidRequest
  | Unauthorized
  | Forbidden
  | ScheduleNotFound
  | ScheduleExists
  /** Following a run: a stream that does not parse, or the server asking to reconnect later. */
  | Sse.SseError
  | Sse.Retry

/** The stream of a run's updates ended before the run was final (a connection dropped): follow it again. */
class StreamEnded extends Data.TaggedError("StreamEnded")<{}> {}

type AnyWorkflow = Workflow<Schema.Top, Schema.Top, Schema.Top, unknown>

export class AikiClient extends Context.Service<AikiClient, {
  /** The typed HTTP client of the whole API. */
  readonly api: Client.AikiClient
  readonly options: ClientOptions
  /**
   * Starts a run. Its concurrency, ordering and rate-limit keys are computed from the payload by the workflow's
   * declared key functions unless `options` gives them; `debounce` replaces the unstarted run with the same key.
   */
  readonly start: <P extends Schema.Top, S extends Schema.Top, E extends Schema.Top, R>(
    workflow: Workflow<P, S, E, R>,
    payload: P["Type"],
    options?: StartOptions
  ) => Effect.Effect<RunHandle<S["Type"], E["Type"]>, ClientError | SerializationError>
  /** A handle on an existing run of `workflow`. */
  readonly handle: <P extends Schema.Top, S extends Schema.Top, E extends Schema.Top, R>(
    workflow: Workflow<P, S, E, R>,
    id: RunId
  ) => RunHandle<S["Type"], E["Type"]>
  readonly schedules: Schedules
}>()("@aiki/sdk/AikiClient") {
  /**
   * Over Node's undici with pooled keep-alive connections: a worker makes a few requests per task, and the
   * `fetch` path's per-request overhead showed in the benchmark (about 20% fewer runs per second).
   */
  static readonly layer = (options: ClientOptions) =>
    Layer.effect(AikiClient, make(options)).pipe(Layer.provide(NodeHttpClient.layerUndici))
}

/** Retries what a restarting or briefly unreachable server answers; everything else is the caller's. */
export const retryTransient = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.retry({
      while: HttpClientError.isHttpClientError,
      schedule: Schedule.min([Schedule.exponential("50 millis"), Schedule.spaced("2 seconds")])
    })
  )

/** The largest request of starts the client sends (a larger start goes alone). */
const maxStartBatchBytes = 1024 * 1024

const make = (options: ClientOptions) =>
  Effect.gen(function*() {
    const api = yield* Client.make(options)

    const handle = (workflow: AnyWorkflow, id: RunId, warning?: string): RunHandle<unknown, unknown> => {
      const follow = (query: { readonly tasks?: boolean }): Stream.Stream<RunUpdate, ClientError> =>
        Stream.unwrap(retryTransient(api.runs.events({ params: { id }, query })))
      const updates = follow({})
      // Waiting for the end needs the run's own changes only: the server then reads and sends no task per change.
      const final = follow({ tasks: false }).pipe(
        Stream.filter((update) => update._tag === "Run" && isTerminal(update.run.state)),
        Stream.runHead,
        // The stream ends only once the run is final; a dropped connection is followed again.
        Effect.flatMap((update) =>
          Option.isSome(update) && update.value._tag === "Run" ? Effect.succeed(update.value.run) : Effect.fail(new StreamEnded())
        ),
        Effect.retry({
          while: (error) => error instanceof StreamEnded || HttpClientError.isHttpClientError(error) || Sse.Retry.is(error),
          schedule: Schedule.min([Schedule.exponential("50 millis"), Schedule.spaced("2 seconds")])
        }),
        Effect.catchTag("StreamEnded", Effect.die)
      )
      const result = (wait: { readonly timeoutMs?: number } = {}) => {
        const outcome = Effect.flatMap(final, (run): Effect.Effect<unknown, unknown> => {
          switch (run.state) {
            case "completed":
              return Json.decode(workflow.successSchema, run.result ?? null, `the result of run ${id}`)
            case "cancelled":
              return Effect.fail(new RunCancelled({ runId: id }))
            default: {
              const error = run.error ?? { name: "Error", message: `run ended ${run.state}` }
              return error.data === undefined
                ? Effect.fail(new RunFailed({ runId: id, error }))
                : Json.decode(workflow.errorSchema, error.data, "the run's error").pipe(
                  Effect.matchEffect({
                    onFailure: () => Effect.fail(new RunFailed({ runId: id, error })),
                    onSuccess: Effect.fail
                  })
                )
            }
          }
        })
        return wait.timeoutMs === undefined ? outcome : outcome.pipe(
          Effect.timeoutOrElse({
            duration: `${wait.timeoutMs} millis`,
            orElse: () => Effect.fail(new WaitTimeout({ runId: id, timeoutMs: wait.timeoutMs! }))
          })
        )
      }
      return {
        id,
        status: api.runs.status({ params: { id } }),
        result: result as RunHandle<unknown, unknown>["result"],
        updates,
        cancel: api.runs.cancel({ params: { id } }),
        retry: api.runs.retry({ params: { id } }),
        reset: (to) =>
          api.runs.reset({
            params: { id },
            payload: "sequence" in to
              ? { sequence: to.sequence }
              : {
                task: (typeof to.task === "string" ? to.task : to.task.name) as TaskName,
                ...(to.occurrence !== undefined ? { occurrence: to.occurrence } : {})
              }
          }),
        ...(warning !== undefined ? { warning } : {}),
        children: api.runs.children({ params: { id } }),
        sendEvent: (event: string | Event.Any, payload: unknown, options?: Event.SendOptions) => {
          const name = typeof event === "string" ? event : event.name
          const schema: Schema.Top = typeof event === "string" ? Schema.Json : event.schema
          return Effect.flatMap(
            Json.encode(schema, payload, `the payload of event ${name}`),
            (encoded) =>
              api.runs.sendEvent({
                params: { id, name: name as EventName },
                payload: { payload: encoded, ...(options?.eventId !== undefined ? { eventId: options.eventId } : {}) }
              })
          )
        }
      }
    }

    // Starts made concurrently travel in one request (one in flight, the next ones gathering behind it). Not
    // retried: a start whose answer was lost may have created its run, and a retry would create another.
    const starts = yield* Batcher.make({
      maxItems: 500,
      split: Batcher.bySize(maxStartBatchBytes),
      send: (runs: ReadonlyArray<StartRuns["runs"][number]>) =>
        api.workflows.startMany({ payload: { runs } }).pipe(Effect.map(({ results }) => results))
    })

    // A span of its own: the root of the run's trace, which the worker that executes the run continues.
    const start = Effect.fn("AikiClient.start")(function*(workflow: AnyWorkflow, payload: unknown, startOptions: StartOptions = {}) {
      yield* Effect.annotateCurrentSpan({ workflow: workflow.name, version: workflow.version })
      const encoded = yield* Json.encode(workflow.payloadSchema, payload, `the payload of ${workflow.name}`)
      // The caller's trace, for the run's execution to continue (each start of a shared request has its own).
      const traceParent = yield* Effect.currentSpan.pipe(
        Effect.map((span) => HttpTraceContext.toHeaders(span)["traceparent"]),
        Effect.orElseSucceed(() => undefined)
      )
      const answer = yield* Deferred.await(yield* starts.submit({
        workflowName: workflow.name,
        workflowVersion: workflow.version,
        payload: encoded,
        ...(startOptions.idempotencyKey !== undefined
          ? { idempotencyKey: startOptions.idempotencyKey as IdempotencyKey }
          : {}),
        ...(traceParent !== undefined ? { traceParent } : {}),
        ...(startOptions.executionTimeoutMs !== undefined ? { executionTimeoutMs: startOptions.executionTimeoutMs } : {}),
        ...(startOptions.scheduleToStartTimeoutMs !== undefined
          ? { scheduleToStartTimeoutMs: startOptions.scheduleToStartTimeoutMs }
          : {}),
        ...startFlowOf(workflow.flowControl, payload, startOptions)
      }))
      if (!(answer instanceof StartedRun)) return yield* answer
      if (answer.warning !== undefined) yield* Effect.logWarning(`Run ${answer.id} of ${workflow.name}: ${answer.warning}`)
      return handle(workflow, answer.id, answer.warning)
    })

    const id = (scheduleId: string) => ({ params: { id: scheduleId as ScheduleId } })
    const schedules: Schedules = {
      create: (workflow, scheduleOptions) =>
        Effect.flatMap(scheduleOf(workflow as unknown as AnyWorkflow, scheduleOptions as ScheduleOptions<unknown>), (settings) =>
          api.schedules.create({
            payload: {
              ...settings,
              workflowName: workflow.name,
              workflowVersion: workflow.version,
              ...(scheduleOptions.id !== undefined ? { id: scheduleOptions.id as ScheduleId } : {}),
              ...(scheduleOptions.paused !== undefined ? { paused: scheduleOptions.paused } : {})
            }
          })),
      list: (workflowName) =>
        api.schedules.list({ query: workflowName === undefined ? {} : { workflow: workflowName as WorkflowName } }),
      get: (scheduleId) => api.schedules.get(id(scheduleId)),
      pause: (scheduleId) => api.schedules.pause(id(scheduleId)),
      resume: (scheduleId) => api.schedules.resume(id(scheduleId)),
      trigger: (scheduleId) => api.schedules.trigger(id(scheduleId)),
      backfill: (scheduleId, range) =>
        api.schedules.backfill({
          ...id(scheduleId),
          payload: { from: DateTime.toUtc(DateTime.makeUnsafe(range.from)), to: DateTime.toUtc(DateTime.makeUnsafe(range.to)) }
        }),
      delete: (scheduleId) => api.schedules.delete(id(scheduleId))
    }

    return AikiClient.of({
      api,
      options,
      start: start as AikiClient["Service"]["start"],
      handle: handle as AikiClient["Service"]["handle"],
      schedules
    })
  })
