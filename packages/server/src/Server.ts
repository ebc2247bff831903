/**
 * The whole Aiki server as one layer: HTTP API, outbox publisher, reaper and metrics over the stores, Postgres and
 * Redis. Needs only a `ServerConfig`; `main.ts` reads it from the environment, tests pass their own.
 */
import { Layer } from "effect"
import * as Database from "./Database.ts"
import * as HttpServer from "./http/HttpServer.ts"
import * as Metrics from "./Metrics.ts"
import { Outbox } from "./Outbox.ts"
import * as OutboxPublisher from "./OutboxPublisher.ts"
import * as Reaper from "./Reaper.ts"
import { RunEvents } from "./RunEvents.ts"
import { RunLeases } from "./RunLeases.ts"
import { RunNotifications } from "./RunNotifications.ts"
import { RunStore } from "./RunStore.ts"
import { RunStreams } from "./RunStreams.ts"
import { TaskJournal } from "./TaskJournal.ts"
import { WorkerRegistry } from "./WorkerRegistry.ts"

/** Postgres (migrated), Redis Streams, the outbox and the in-process event bus. */
export const layerInfrastructure = Layer.mergeAll(Outbox.layer, RunEvents.layer, RunNotifications.layer).pipe(
  Layer.provideMerge(Layer.mergeAll(Database.layer, RunStreams.layer))
)

/** The stores, with everything they stand on. */
export const layerStores = Layer.mergeAll(RunStore.layer, RunLeases.layer, TaskJournal.layer, WorkerRegistry.layer).pipe(
  Layer.provideMerge(layerInfrastructure)
)

/** Background work: publishing the outbox, recovering lost runs, keeping metrics current. */
export const layerBackground = Layer.mergeAll(OutboxPublisher.layer, Reaper.layer, Metrics.layer)

/**
 * The server: HTTP and background work over the stores. HTTP stands on the background layer so that it closes
 * first: requests in flight finish, then the publisher drains what they committed, then the pools close.
 */
export const layer = HttpServer.layer.pipe(Layer.provideMerge(layerBackground), Layer.provideMerge(layerStores))
