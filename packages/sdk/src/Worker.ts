/**
 * A worker runs workflows in your infrastructure. It registers the versions it serves, receives runs (from Redis
 * Streams, or by long-polling the server when there is no Redis), claims them (leases, in one request) and executes
 * each one as an actor: a supervised fiber per run, with its state beside it. Everything its runs write travels in
 * batches (`internal/WriteBatcher.ts`). One heartbeat keeps the worker alive in the server's eyes (so its runs are
 * taken over within seconds if it dies) and extends the leases it holds; cancellations are pushed to it and stop
 * the run at once.
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
import type { LeaseEpoch, RunId, WorkerId } from "@aiki/contract/Ids"
import type { Json, Lease, WorkerSignal } from "@aiki/contract/Models"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Semaphore from "effect/Semaphore"
import * as Stream from "effect/Stream"
import * as Headers from "effect/http/Headers"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpTraceContext from "effect/http/HttpTraceContext"
import { hostname } from "node:os"
import { AikiClient } from "./AikiClient.ts"
import { policyOf, scheduleOf } from "./FlowControl.ts"
import { AttemptTimeouts } from "./internal/AttemptTimeouts.ts"
import { exportsSpans } from "./internal/exportsSpans.ts"
import * as JsonCodec from "./internal/json.ts"
import { replayVersion } from "./internal/Journal.ts"
import * as RedisSubscriber from "./internal/RedisSubscriber.ts"
import { execute, type StopReason } from "./internal/RunExecution.ts"
import * as ServerLink from "./internal/ServerLink.ts"
import * as WriteBatcher from "./internal/WriteBatcher.ts"
import * as Workflow from "./Workflow.ts"

export interface WorkerOptions<W extends Workflow.Any = Workflow.Any> {
  /** @default `<hostname>-<pid>` */
  readonly id?: string
  /** The workflow versions this worker runs. */
  readonly workflows: ReadonlyArray<W>
  /** @default 10 */
  readonly maxConcurrentWorkflowRuns?: number
  /** @default Redis Streams when the client has Redis options and the server publishes to Redis, else HTTP */
  readonly subscriber?: Subscriber
  readonly workflowRun?: {
    /** How often the leases of the runs held are extended. @default 30_000 */
    readonly heartbeatIntervalMs?: number
    /** How long a lease lasts without a heartbeat; another worker may take the run over after it. @default 3 × heartbeatIntervalMs */
    readonly leaseMs?: number
    /**
     * Waits due at least this far ahead — `Workflow.sleep`, task retry delays, event waits — park the run on the
     * server instead of holding a slot of this worker; the server wakes it when due (to the reaper's precision).
     * @default 5_000
     */
    readonly suspendAfterMs?: number
  }
  /**
   * How long this worker counts as alive without being heard from. Its heartbeat renews it four times as often;
   * once it lapses (the process died, the machine is gone), its runs are taken over without waiting for their
   * leases. @default 10_000
   */
  readonly livenessTimeoutMs?: number
  /** @default 5_000 */
  readonly gracefulShutdownTimeoutMs?: number
}

/** How a worker receives runs: from Redis Streams, or by asking the server over HTTP. */
export type Subscriber =
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
    /**
     * How long one poll waits on the server for a run (a long poll: a run is handed over as soon as it is
     * pending, so this is not a delay). @default 20_000
     */
    readonly blockTimeMs?: number
    /** The least time between the starts of two polls, to bound how often this worker asks. @default 0 */
    readonly pollIntervalMs?: number
    /** Most runs one poll claims (at most 100). @default 100 */
    readonly maxBatchSize?: number
    /** While the server cannot be reached, the wait between polls doubles up to this. @default 2_000 */
    readonly maxRetryDelayMs?: number
  }

/** A run this worker holds: its lease, why it is being stopped (if it is), and its fiber. */
interface Actor {
  readonly lease: Lease
  readonly entry: RedisSubscriber.StreamEntry | undefined
  stopReason: StopReason | undefined
  readonly fiber: Deferred.Deferred<Fiber.Fiber<void>>
  /** By this worker's clock, until when its lease surely holds (the request granting or extending it + leaseMs). */
  leaseHoldsUntil: number
  /** Where the server's word that an attempt of the run timed out reaches the attempt. */
  readonly timeouts: AttemptTimeouts
}

/**
 * A definition's schema as JSON Schema (draft 2020-12), for the server to show and check against; left out when
 * the schema has no JSON Schema form (or is the promise API's untyped JSON).
 */
const optionalSchema = (key: "payloadSchema" | "resultSchema", schema: Schema.Top) => {
  if (schema === Schema.Json || schema === JsonCodec.PlainJson) return {}
  try {
    const document = Schema.toJsonSchemaDocument(schema)
    const definitions = Object.keys(document.definitions).length > 0 ? { $defs: document.definitions } : {}
    return { [key]: JSON.parse(JSON.stringify({ ...document.schema, ...definitions })) as Json }
  } catch {
    return {}
  }
}

/** Runs `loop` in `scope` for as long as the scope lives: a failure is logged and the loop starts again. */
const supervise = <A, E, R>(name: string, loop: Effect.Effect<A, E, R>, scope: Scope.Scope, every: Duration.Input = "500 millis") =>
  loop.pipe(
    Effect.catchCause((cause) => Effect.logWarning(`${name} failed; retrying`, cause)),
    Effect.repeat(Schedule.spaced(every)),
    Effect.forkIn(scope)
  )

/** The worker, alive for as long as the layer. Needs the client and the services the workflows use. */
export const layer = <W extends Workflow.Any>(
  options: WorkerOptions<W>
): Layer.Layer<never, never, AikiClient | Workflow.Services<W>> =>
  Layer.effectDiscard(run(options) as Effect.Effect<void, never, AikiClient | Workflow.Services<W> | Scope.Scope>)

/**
 * Leaves the worker's requests to the Aiki server out of traces: polls, heartbeats and batched writes are
 * background chatter (a batch serves many runs, so it belongs to none of their traces). Requests that workflows
 * and tasks make elsewhere are traced as usual.
 */
const untracedProtocol = (baseUrl: string) =>
  Effect.provideService(HttpClient.TracerDisabledWhen, (request) => request.url.startsWith(baseUrl))

/** Runs the worker in the current scope (see `layer`). */
export const run = (options: WorkerOptions) =>
  Effect.flatMap(AikiClient, (client) => untracedProtocol(client.options.baseUrl)(runWith(options)))

const runWith = Effect.fnUntraced(function*(options: WorkerOptions) {
  const client = yield* AikiClient
  const api = client.api
  const workerId = (options.id ?? `${hostname()}-${process.pid}`) as WorkerId
  const max = options.maxConcurrentWorkflowRuns ?? 10
  const heartbeatIntervalMs = options.workflowRun?.heartbeatIntervalMs ?? 30_000
  const leaseMs = Math.max(1_000, options.workflowRun?.leaseMs ?? 3 * heartbeatIntervalMs)
  const livenessMs = Math.max(1_000, options.livenessTimeoutMs ?? 10_000)
  const gracefulShutdownTimeoutMs = options.gracefulShutdownTimeoutMs ?? 5_000
  const suspendAfterMs = options.workflowRun?.suspendAfterMs ?? 5_000
  const traced = yield* exportsSpans
  const registry = new Map(options.workflows.map((workflow) => [Workflow.key(workflow), workflow]))
  const link = yield* ServerLink.make(client.options.baseUrl)

  const definitions = yield* Effect.forEach([...registry.values()], (w) =>
    Effect.gen(function*() {
      const policy = policyOf(w.flowControl)
      return {
        name: w.name,
        version: w.version,
        ...optionalSchema("payloadSchema", w.payloadSchema),
        ...optionalSchema("resultSchema", w.successSchema),
        ...(policy !== undefined ? { flowControl: policy } : {}),
        ...(w.trigger !== undefined ? { trigger: yield* scheduleOf(w, w.trigger) } : {}),
        ...(w.executionTimeoutMs !== undefined ? { executionTimeoutMs: w.executionTimeoutMs } : {})
      }
    })).pipe(Effect.orDie)
  const registration = yield* link.retrying(api.execution.register({
    params: { id: workerId },
    payload: { workflows: definitions, maxConcurrentRuns: max }
  })).pipe(Effect.orDie)

  // Receiving stops first on shutdown; supervising (heartbeat, writes, actors) goes on until the runs are settled.
  const receiving = yield* Scope.make()
  const supervising = yield* Scope.make()
  const writes = yield* WriteBatcher.make({ api, workerId, link, maxBatchBytes: registration.maxBatchBytes }).pipe(
    Scope.provide(supervising)
  )
  const capacity = yield* Semaphore.make(max)
  const actors = new Map<RunId, Actor>()
  const free = Effect.sync(() => max - actors.size)
  const waitForSlot = Semaphore.withPermit(capacity, Effect.void)
  let done: (entry: RedisSubscriber.StreamEntry) => Effect.Effect<void> = () => Effect.void

  /** Stops a run this worker holds, for `reason`. */
  const stop = (runId: RunId, reason: StopReason) =>
    Effect.gen(function*() {
      const actor = actors.get(runId)
      if (actor === undefined) return
      actor.stopReason ??= reason
      yield* Fiber.interrupt(yield* Deferred.await(actor.fiber))
    })

  /** The actor of one granted run: execute it, then let go of its slot and its stream entry. */
  /** Completed by each heartbeat: a run whose lease is not known to hold waits for it before any side effect. */
  let heartbeatDone = yield* Deferred.make<void>()
  const leaseHolds = (actor: Actor): Effect.Effect<void> =>
    Effect.gen(function*() {
      while ((yield* Clock.currentTimeMillis) >= actor.leaseHoldsUntil) yield* Deferred.await(heartbeatDone)
    })

  const spawn = (lease: Lease, entry: RedisSubscriber.StreamEntry | undefined, requestedAt: number) =>
    Effect.gen(function*() {
      const runId = lease.run.id
      const workflow = registry.get(Workflow.key({ name: lease.run.workflowName, version: lease.run.workflowVersion }))
      if (workflow === undefined || actors.has(runId)) return
      yield* Semaphore.take(capacity, 1)
      const actor: Actor = {
        lease,
        entry,
        stopReason: undefined,
        fiber: yield* Deferred.make<Fiber.Fiber<void>>(),
        leaseHoldsUntil: requestedAt + leaseMs,
        timeouts: new AttemptTimeouts()
      }
      actors.set(runId, actor)
      // The run's execution continues the trace of the request that started it, whichever worker runs it.
      const startedIn = !traced || lease.run.traceParent === undefined
        ? Option.none()
        : HttpTraceContext.fromHeaders(Headers.fromInput({ traceparent: lease.run.traceParent }))
      const fiber = yield* execute(workflow, lease, writes, {
        suspendAfterMs,
        maxPayloadBytes: registration.maxPayloadBytes,
        leaseHolds: leaseHolds(actor),
        attemptTimeouts: actor.timeouts
      }).pipe(
        (execution) =>
          traced
            ? execution.pipe(
              Effect.flatMap((end) => Effect.andThen(Effect.annotateCurrentSpan("run.end", end), Effect.logDebug(`Run ${end}`))),
              Effect.withSpan(
                "Worker.executeRun",
                { attributes: { runId, workflow: Workflow.key(workflow), leaseEpoch: lease.leaseEpoch } },
                { captureStackTrace: false }
              ),
              (effect) => Option.isSome(startedIn) ? Effect.withParentSpan(effect, startedIn.value) : effect
            )
            : Effect.flatMap(execution, (end) => Effect.logDebug(`Run ${end}`)),
        // Interrupted for a shutdown: hand the run back now rather than when its lease runs out (best effort: if
        // the server does not answer in time, the worker's liveness lapses and the reaper requeues the run).
        Effect.onInterrupt(() =>
          actor.stopReason !== "shutdown" ? Effect.void : writes.submit({
            _tag: "ReleaseRun",
            runId,
            leaseEpoch: lease.leaseEpoch as LeaseEpoch
          }).pipe(Effect.flatMap(Deferred.await), Effect.timeout("3 seconds"), Effect.ignore)
        ),
        Effect.catchCause((cause) => Effect.logWarning("Run stopped by a failure", cause)),
        Effect.ensuring(Effect.gen(function*() {
          actors.delete(runId)
          yield* Semaphore.release(capacity, 1)
          if (entry !== undefined) yield* done(entry)
        })),
        Effect.annotateLogs({ runId, workerId }),
        Effect.forkIn(supervising)
      )
      yield* Deferred.succeed(actor.fiber, fiber)
    })

  /** Claims runs received from Redis in one request; the stream entries of runs not granted are let go. */
  const claim = (entries: ReadonlyArray<RedisSubscriber.StreamEntry>) =>
    Effect.gen(function*() {
      // A run this worker already holds was delivered again (republished): that entry is a duplicate.
      const fresh = entries.filter((entry) => !actors.has(entry.runId as RunId))
      yield* Effect.forEach(entries.filter((entry) => !fresh.includes(entry)), done, { discard: true })
      if (fresh.length === 0) return
      const requestedAt = yield* Clock.currentTimeMillis
      const claims = yield* link.retrying(api.execution.claim({
        params: { id: workerId },
        payload: { runIds: fresh.map((e) => e.runId as RunId), leaseMs, replayVersion }
      })).pipe(Effect.orDie)
      const byRun = new Map(fresh.map((entry) => [entry.runId, entry]))
      yield* Effect.forEach(claims.leases, (lease) => spawn(lease, byRun.get(lease.run.id), requestedAt), { discard: true })
      yield* Effect.forEach(claims.refused, (refused) => done(byRun.get(refused.runId)!), { discard: true })
    })

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
      streams: streams.map((s) => ({ stream: s.stream, ...(s.band !== undefined ? { band: s.band } : {}) })),
      group: registration.consumerGroup,
      consumer: workerId,
      blockTimeMs: subscriber.blockTimeMs ?? 1_000,
      claimMinIdleTimeMs: subscriber.claimMinIdleTimeMs ?? 60_000,
      maxBatchSize: subscriber.maxBatchSize ?? 100
    }).pipe(Scope.provide(supervising))
    done = redis.done
    yield* supervise("Redis subscriber", Effect.gen(function*() {
      while (true) {
        yield* waitForSlot
        yield* claim(yield* redis.read(yield* free))
      }
    }), receiving)
    const reclaimEvery = Duration.millis(Math.max(250, Math.min(subscriber.claimMinIdleTimeMs ?? 60_000, 30_000) / 2))
    yield* supervise("Reclaiming idle entries", Effect.gen(function*() {
      const room = yield* free
      if (room > 0) yield* claim(yield* redis.reclaim(room))
    }), receiving, reclaimEvery)
    touchEntries = Effect.suspend(() => redis.touch([...actors.values()].flatMap((a) => (a.entry === undefined ? [] : [a.entry]))))
  } else {
    const wanted = [...registry.values()].map((w) => ({ name: w.name, version: w.version }))
    const waitMs = Math.min(subscriber.blockTimeMs ?? 20_000, 60_000)
    const batch = Math.max(1, Math.min(subscriber.maxBatchSize ?? 100, 100))
    const pollIntervalMs = subscriber.pollIntervalMs ?? 0
    const retry = subscriber.maxRetryDelayMs === undefined ? {} : { maxDelayMs: subscriber.maxRetryDelayMs }
    yield* supervise("HTTP subscriber", Effect.gen(function*() {
      while (true) {
        yield* waitForSlot
        const requestedAt = yield* Clock.currentTimeMillis
        const leases = yield* link.retrying(api.execution.poll({
          params: { id: workerId },
          payload: { workflows: wanted, max: Math.min(yield* free, batch), waitMs, leaseMs, replayVersion }
        }), retry).pipe(Effect.orDie)
        yield* Effect.forEach(leases, (lease) => spawn(lease, undefined, requestedAt), { discard: true })
        const rest = pollIntervalMs - ((yield* Clock.currentTimeMillis) - requestedAt)
        if (rest > 0) yield* Effect.sleep(Duration.millis(rest))
      }
    }), receiving)
  }

  // One heartbeat: the worker's liveness every quarter of its timeout, the leases of its runs every interval.
  let extendedAt = yield* Clock.currentTimeMillis
  yield* supervise("Heartbeat", Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const extending = now - extendedAt >= heartbeatIntervalMs
    const runs = extending ? [...actors.values()].map((a) => ({ runId: a.lease.run.id, leaseEpoch: a.lease.leaseEpoch })) : []
    const reply = yield* link.retrying(api.execution.heartbeat({ params: { id: workerId }, payload: { runs, leaseMs, livenessMs } }))
    if (extending) {
      extendedAt = now
      for (const runId of reply.extended) {
        const actor = actors.get(runId)
        if (actor !== undefined) actor.leaseHoldsUntil = now + leaseMs
      }
      yield* touchEntries
    }
    yield* Effect.forEach(reply.cancelled, (runId) => stop(runId, "cancelled"), { discard: true })
    yield* Effect.forEach(reply.lost, (runId) => stop(runId, "lost"), { discard: true })
    // Runs waiting to learn whether their lease holds look again (those lost were stopped just above).
    const done = heartbeatDone
    heartbeatDone = yield* Deferred.make<void>()
    yield* Deferred.succeed(done, undefined)
  }), supervising, Duration.millis(Math.min(heartbeatIntervalMs, livenessMs / 4)))

  /** What the server pushes: cancellations, timeouts and runs it ended reach the run at once. */
  const onSignal = (signal: WorkerSignal): Effect.Effect<void> => {
    switch (signal._tag) {
      case "Connected":
      case "Ping":
        return Effect.void
      case "Cancelled":
        return stop(signal.runId, "cancelled")
      case "RunStopped":
        return stop(signal.runId, "lost")
      case "TaskTimedOut": {
        const actor = actors.get(signal.runId)
        return actor === undefined ? Effect.void : actor.timeouts.fire(signal.address, signal.attempt, signal.kind)
      }
    }
  }
  yield* supervise(
    "Signals",
    Stream.unwrap(api.execution.signals({ params: { id: workerId } })).pipe(Stream.runForEach(onSignal)),
    supervising,
    "1 second"
  )

  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      yield* Scope.close(receiving, Exit.void)
      const settled = yield* Effect.forEach([...actors.values()], (a) => Effect.flatMap(Deferred.await(a.fiber), Fiber.await), {
        concurrency: "unbounded",
        discard: true
      }).pipe(Effect.timeoutOption(Duration.millis(gracefulShutdownTimeoutMs)))
      if (Option.isNone(settled)) {
        yield* Effect.forEach([...actors.keys()], (runId) => stop(runId, "shutdown"), { discard: true, concurrency: "unbounded" })
      }
      yield* Scope.close(supervising, Exit.void)
    }).pipe(Effect.catchCause((cause) => Effect.logError("Worker shutdown failed", cause)))
  )
  yield* Effect.logInfo(`Worker ${workerId} receiving runs (${subscriber.type}) for ${[...registry.keys()].join(", ")}`)
})
