/**
 * The whole Aiki server as one layer: HTTP API, outbox publisher, reaper and metrics over the stores, Postgres and
 * Redis. Needs only a `ServerConfig`; `main.ts` reads it from the environment, tests pass their own.
 */
import type { PgClient } from "@effect/sql-pg"
import { Layer } from "effect"
import type { SqlClient } from "effect/sql"
import * as Database from "./Database.ts"
import * as HttpServer from "./http/HttpServer.ts"
import * as Metrics from "./Metrics.ts"
import { Outbox } from "./Outbox.ts"
import * as OutboxPublisher from "./OutboxPublisher.ts"
import * as Reaper from "./Reaper.ts"
import * as Retention from "./Retention.ts"
import { RunEvents } from "./RunEvents.ts"
import { RunLeases } from "./RunLeases.ts"
import { RunNotifications } from "./RunNotifications.ts"
import { RunStore } from "./RunStore.ts"
import { RunStreams } from "./RunStreams.ts"
import { ServerConfig } from "./ServerConfig.ts"
import * as Telemetry from "./Telemetry.ts"
import { TaskJournal } from "./TaskJournal.ts"
import { WorkerRegistry } from "./WorkerRegistry.ts"

/** A database for the server: SQL, the run change announcements, migrated (see `Database`). */
export type DatabaseLayer = Layer.Layer<SqlClient.SqlClient | PgClient.PgClient | RunNotifications, never, ServerConfig>

/** The database, Redis Streams, the outbox and the in-process event bus. */
const layerInfrastructure = (database: DatabaseLayer) =>
  Layer.mergeAll(Outbox.layer, RunEvents.layer).pipe(Layer.provideMerge(Layer.mergeAll(database, RunStreams.layer)))

/** The stores, with everything they stand on. */
const layerStores = (database: DatabaseLayer) =>
  Layer.mergeAll(RunStore.layer, RunLeases.layer, WorkerRegistry.layer).pipe(
    Layer.provideMerge(TaskJournal.layer),
    Layer.provideMerge(layerInfrastructure(database))
  )

/** Background work: publishing the outbox, recovering lost runs, keeping metrics current, removing old rows. */
const layerBackground = Layer.mergeAll(OutboxPublisher.layer, Reaper.layer, Metrics.layer, Retention.layer)

/**
 * The server over `database`: HTTP and background work over the stores. HTTP stands on the background layer so
 * that it closes first: requests in flight finish, then the publisher drains what they committed, then the
 * pools close.
 */
export const layerWith = (database: DatabaseLayer) =>
  HttpServer.layer.pipe(Layer.provideMerge(layerBackground), Layer.provideMerge(layerStores(database)))

/** The production server: Postgres at `DATABASE_URL`. */
export const layer = layerWith(Database.layer)

/**
 * The production server as `aiki-server` runs it: configured from the environment, traces exported when
 * `OTEL_EXPORTER_OTLP_ENDPOINT` is set (provided under the server, so it is flushed after the server stops).
 */
export const layerFromEnv = layer.pipe(Layer.provide(Telemetry.layer), Layer.provideMerge(ServerConfig.layerConfig))

/** The embedded server: PGlite in-process, its data under `dataDir` (or in memory). */
export const layerEmbedded = (options: { readonly dataDir: string | undefined }) =>
  layerWith(Database.layerEmbedded(options))
