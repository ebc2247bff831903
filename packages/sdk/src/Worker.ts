/**
 * A worker runs workflows in your infrastructure. It registers the versions it serves, receives runs (from Redis
 * Streams, or by long-polling the server when there is no Redis), claims each one (a lease) and executes it as a
 * supervised fiber, one per run, keyed by run id. One heartbeat per interval extends the leases of every run it
 * holds; cancellations are pushed to it and interrupt the run at once.
 *
 * Closing the worker's scope stops receiving, lets runs in flight finish for up to `gracefulShutdownTimeoutMs`,
 * then interrupts the rest and hands them back to the server, so another worker resumes them at once.
 *
 * @example
 * ```ts
 * const WorkerLive = Worker.layer({ workflows: [OrderProcessing], maxConcurrentWorkflowRuns: 20 })
 * Layer.launch(WorkerLive.pipe(Layer.provide(AikiClient.layer({ baseUrl, redis: { url: "redis://localhost:6379" } }))))
 * ```
 */
import type { RunId, WorkerId } from "@aiki/contract/Ids"
import type { Json, Lease } from "@aiki/contract/Models"
import { Duration, Effect, Exit, FiberMap, Layer, Option, Queue, Ref, Schedule, Schema, Scope, Stream } from "effect"
import { Headers, HttpTraceContext } from "effect/http"
import { hostname } from "node:os"
import { AikiClient, retryTransient } from "./AikiClient.ts"
import { execute, type StopReason } from "./internal/RunExecution.ts"
import * as RedisSubscriber from "./internal/RedisSubscriber.ts"
import * as Workflow from "./Workflow.ts"

export interface WorkerOptions<W extends Workflow.Any = Workflow.Any> {
  /** @default `<hostname>-<pid>` */
  readonly id?: string
  /** The workflow versions this worker runs. */
  readonly workflows: ReadonlyArray<W>
  /** @default 10 */
  readonly maxConcurrentWorkflowRuns?: number
  /** @default Redis Streams when the client has Redis options and the server publishes to Redis, else HTTP */
  readonly subscriber?:
    | {
      readonly type: "redis_streams"
      /** Take over entries idle this long (their worker died). @default 60_000 */
      readonly claimMinIdleTimeMs?: number
      /** How long one read waits for new entries. @default 1_000 */
      readonly blockTimeMs?: number
      /** Most entries read at once. @default 100 */
      readonly maxBatchSize?: number
    }
    | {
      readonly type: "http"
      /** How long one long-poll waits for a run. @default 20_000 */
      readonly blockTimeMs?: number
    }
  readonly workflowRun?: {
    /** @default 30_000 */
    readonly heartbeatIntervalMs?: number
    /** How long a lease lasts without a heartbeat; another worker may take the run over after it. @default 3 × heartbeatIntervalMs */
    readonly leaseMs?: number
    /**
     * Waits at least this long — task retry delays (`awaiting_retry`) and `Workflow.sleep` (`sleeping`) — suspend
     * the run on the server instead of holding a slot of this worker; the server wakes it when due (to the
     * reaper's precision). @default 5_000
     */
    readonly suspendAfterMs?: number
  }
  /** @default 5_000 */
  readonly gracefulShutdownTimeoutMs?: number
}

interface Held {
  readonly runId: RunId
  readonly leaseEpoch: number
  readonly stop: Ref.Ref<StopReason | undefined>
  entry: RedisSubscriber.StreamEntry | undefined
}

/**
 * A definition's schema as JSON Schema (draft 2020-12), for the server to show and check against; left out when
 * the schema has no JSON Schema form (or is the promise API's untyped JSON).
 */
const optionalSchema = (key: "payloadSchema" | "resultSchema", schema: Schema.Top) => {
  if (schema === Schema.Json) return {}
  try {
    const document = Schema.toJsonSchemaDocument(schema)
    const definitions = Object.keys(document.definitions).length > 0 ? { $defs: document.definitions } : {}
    return { [key]: JSON.parse(JSON.stringify({ ...document.schema, ...definitions })) as Json }
  } catch {
    return {}
  }
}

/** The worker, alive for as long as the layer. Needs the client and the services the workflows use. */
export const layer = <W extends Workflow.Any>(
  options: WorkerOptions<W>
): Layer.Layer<never, never, AikiClient | Workflow.Services<W>> =>
  Layer.effectDiscard(run(options) as Effect.Effect<void, never, AikiClient | Workflow.Services<W> | Scope.Scope>)

/** Runs the worker in the current scope (see `layer`). */
export const run = Effect.fnUntraced(function*(options: WorkerOptions) {
  const client = yield* AikiClient
  const api = client.api
  const workerId = (options.id ?? `${hostname()}-${process.pid}`) as WorkerId
  const max = options.maxConcurrentWorkflowRuns ?? 10
  const heartbeatIntervalMs = options.workflowRun?.heartbeatIntervalMs ?? 30_000
  const leaseMs = Math.max(1_000, options.workflowRun?.leaseMs ?? 3 * heartbeatIntervalMs)
  const gracefulShutdownTimeoutMs = options.gracefulShutdownTimeoutMs ?? 5_000
  const suspendAfterMs = options.workflowRun?.suspendAfterMs ?? 5_000
  const registry = new Map(options.workflows.map((workflow) => [Workflow.key(workflow), workflow]))

  const registration = yield* retryTransient(api.execution.register({
    params: { id: workerId },
    payload: {
      workflows: [...registry.values()].map((w) => ({
        name: w.name,
        version: w.version,
        ...optionalSchema("payloadSchema", w.payloadSchema),
        ...optionalSchema("resultSchema", w.successSchema)
      })),
      maxConcurrentRuns: max
    }
  })).pipe(Effect.orDie)

  const held = new Map<RunId, Held>()
  const actors = yield* FiberMap.make<RunId>()
  const slotFreed = yield* Queue.sliding<void>(1)
  const free = Effect.map(FiberMap.size(actors), (size) => max - size)
  const waitForSlot = Effect.gen(function*() {
    while ((yield* free) <= 0) yield* Queue.take(slotFreed)
  })

  /** Stops a run this worker holds, for `reason`; its fiber is interrupted. */
  const stop = (runId: RunId, reason: StopReason) =>
    Effect.gen(function*() {
      const run = held.get(runId)
      if (run === undefined) return
      yield* Ref.update(run.stop, (current) => current ?? reason)
      yield* FiberMap.remove(actors, runId)
    })

  /** The actor of one run: acquire its lease, execute it, let go of its stream entry. */
  const spawn = (runId: RunId, acquire: Effect.Effect<Lease | undefined>, done: Effect.Effect<void>, entry?: RedisSubscriber.StreamEntry) =>
    Effect.gen(function*() {
      if (yield* FiberMap.has(actors, runId)) return yield* done
      yield* FiberMap.run(actors, runId, Effect.gen(function*() {
        const lease = yield* acquire
        if (lease === undefined) return
        const workflow = registry.get(Workflow.key({ name: lease.run.workflowName, version: lease.run.workflowVersion }))
        if (workflow === undefined) return
        const stopReason = yield* Ref.make<StopReason | undefined>(undefined)
        held.set(runId, { runId, leaseEpoch: lease.leaseEpoch, stop: stopReason, entry })
        // The run's execution continues the trace of the request that started it, whichever worker runs it.
        const startedIn = lease.run.traceParent === undefined
          ? Option.none()
          : HttpTraceContext.fromHeaders(Headers.fromInput({ traceparent: lease.run.traceParent }))
        yield* execute(api, workflow, lease, stopReason, { suspendAfterMs }).pipe(
          Effect.withSpan("Worker.executeRun", {
            attributes: { runId, workflow: Workflow.key(workflow), leaseEpoch: lease.leaseEpoch }
          }),
          (effect) => Option.isSome(startedIn) ? Effect.withParentSpan(effect, startedIn.value) : effect,
          Effect.catchCause((cause) => Effect.logDebug("Run stopped", { runId, cause })),
          Effect.ensuring(Effect.sync(() => held.delete(runId)))
        )
      }).pipe(
        Effect.ensuring(Effect.andThen(done, Queue.offer(slotFreed, undefined))),
        Effect.annotateLogs({ runId, workerId })
      ), { onlyIfMissing: true })
    })

  /** Claims a run; undefined when someone else holds it or it is finished (the message was stale). */
  const claim = (runId: RunId) =>
    retryTransient(api.execution.claim({ params: { id: runId }, payload: { workerId, leaseMs } })).pipe(
      Effect.catchTags({ RunNotClaimable: () => Effect.undefined, RunNotFound: () => Effect.undefined }),
      Effect.orDie
    )

  const receiving = yield* Scope.make()
  const supervising = yield* Scope.make()

  // Receive runs.
  const streams = registration.streams ?? []
  const redisOptions = client.options.redis
  const subscriber = options.subscriber ?? (redisOptions !== undefined && streams.length > 0
    ? { type: "redis_streams" as const }
    : { type: "http" as const })
  let touchEntries: Effect.Effect<void> = Effect.void
  if (subscriber.type === "redis_streams") {
    if (redisOptions === undefined) {
      return yield* Effect.die(new Error("The redis_streams subscriber needs the client's `redis` options"))
    }
    const redis = yield* RedisSubscriber.make({
      redis: redisOptions,
      streams: streams.map((s) => s.stream),
      group: registration.consumerGroup,
      consumer: workerId,
      blockTimeMs: subscriber.blockTimeMs ?? 1_000,
      claimMinIdleTimeMs: subscriber.claimMinIdleTimeMs ?? 60_000,
      maxBatchSize: subscriber.maxBatchSize ?? 100
    }).pipe(Scope.provide(supervising))
    const deliver = (entries: ReadonlyArray<RedisSubscriber.StreamEntry>) =>
      Effect.forEach(entries, (entry) =>
        spawn(entry.runId as RunId, claim(entry.runId as RunId), redis.done(entry), entry), { discard: true })
    yield* Effect.gen(function*() {
      while (true) {
        yield* waitForSlot
        yield* deliver(yield* redis.read(yield* free))
      }
    }).pipe(
      Effect.catchCause((cause) => Effect.logWarning("Redis subscriber failed; retrying", cause)),
      Effect.repeat(Schedule.spaced("500 millis")),
      Effect.forkIn(receiving)
    )
    const reclaimEvery = Duration.millis(Math.max(250, Math.min(subscriber.claimMinIdleTimeMs ?? 60_000, 30_000) / 2))
    yield* Effect.gen(function*() {
      const room = yield* free
      if (room > 0) yield* deliver(yield* redis.reclaim(room))
    }).pipe(
      Effect.catchCause((cause) => Effect.logWarning("Reclaiming idle entries failed", cause)),
      Effect.repeat(Schedule.spaced(reclaimEvery)),
      Effect.forkIn(receiving)
    )
    touchEntries = Effect.suspend(() =>
      redis.touch([...held.values()].flatMap((run) => (run.entry === undefined ? [] : [run.entry])))
    )
  } else {
    const wanted = [...registry.values()].map((w) => ({ name: w.name, version: w.version }))
    const waitMs = Math.min(subscriber.blockTimeMs ?? 20_000, 60_000)
    yield* Effect.gen(function*() {
      while (true) {
        yield* waitForSlot
        const leases = yield* retryTransient(api.execution.poll({
          params: { id: workerId },
          payload: { workflows: wanted, max: Math.min(yield* free, 100), waitMs, leaseMs }
        })).pipe(Effect.orDie)
        yield* Effect.forEach(leases, (lease) => spawn(lease.run.id, Effect.succeed(lease), Effect.void), { discard: true })
      }
    }).pipe(
      Effect.catchCause((cause) => Effect.logWarning("HTTP subscriber failed; retrying", cause)),
      Effect.repeat(Schedule.spaced("500 millis")),
      Effect.forkIn(receiving)
    )
  }

  // Extend the leases of every run held, and stop the ones the server says are cancelled or lost.
  yield* Effect.gen(function*() {
    const runs = [...held.values()].map((run) => ({ runId: run.runId, leaseEpoch: run.leaseEpoch as never }))
    const reply = yield* retryTransient(api.execution.heartbeat({ params: { id: workerId }, payload: { runs, leaseMs } }))
    yield* Effect.forEach(reply.cancelled, (runId) => stop(runId, "cancelled"), { discard: true })
    yield* Effect.forEach(reply.lost, (runId) => stop(runId, "lost"), { discard: true })
    yield* touchEntries
  }).pipe(
    Effect.catchCause((cause) => Effect.logWarning("Heartbeat failed", cause)),
    Effect.repeat(Schedule.spaced(Duration.millis(heartbeatIntervalMs))),
    Effect.forkIn(supervising)
  )

  // Cancellations pushed by the server reach the run at once, not at the next heartbeat.
  yield* Stream.unwrap(api.execution.signals({ params: { id: workerId } })).pipe(
    Stream.runForEach((signal) => signal._tag === "Cancelled" ? stop(signal.runId, "cancelled") : Effect.void),
    Effect.catchCause(() => Effect.void),
    Effect.repeat(Schedule.spaced("1 second")),
    Effect.forkIn(supervising)
  )

  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      yield* Scope.close(receiving, Exit.void)
      const finished = yield* FiberMap.awaitEmpty(actors).pipe(
        Effect.timeoutOption(Duration.millis(gracefulShutdownTimeoutMs))
      )
      if (Option.isNone(finished)) {
        yield* Effect.forEach([...held.keys()], (runId) => stop(runId, "shutdown"), { discard: true, concurrency: "unbounded" })
        yield* FiberMap.clear(actors)
      }
      yield* Scope.close(supervising, Exit.void)
    }).pipe(Effect.catchCause((cause) => Effect.logError("Worker shutdown failed", cause)))
  )
  yield* Effect.logInfo(`Worker ${workerId} receiving runs (${subscriber.type}) for ${[...registry.keys()].join(", ")}`)
})
