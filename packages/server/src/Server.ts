/**
 * The whole Aiki server as one layer: HTTP API, outbox publisher, reaper and metrics over the stores, Postgres and
 * Redis. Needs only a `ServerConfig`; `main.ts` reads it from the environment, tests pass their own.
 */
import type { PgClient } from "@effect/sql-pg"
import { Layer } from "effect"
import type { SqlClient } from "effect/sql"
import { ApiKeys } from "./ApiKeys.ts"
import { BearerTokens } from "./BearerTokens.ts"
import * as Database from "./Database.ts"
import type { DatabaseReady } from "./DatabaseReady.ts"
import { FlowControl } from "./FlowControl.ts"
import * as FlowOffers from "./FlowOffers.ts"
import * as HttpServer from "./http/HttpServer.ts"
import * as Metrics from "./Metrics.ts"
import { LeaseGrace } from "./LeaseGrace.ts"
import { Leases } from "./Leases.ts"
import { Outbox } from "./Outbox.ts"
import * as OutboxPublisher from "./OutboxPublisher.ts"
import * as Reaper from "./Reaper.ts"
import * as Timeouts from "./Timeouts.ts"
import * as Retention from "./Retention.ts"
import { RunNotifications } from "./RunNotifications.ts"
import { RunQueries } from "./RunQueries.ts"
import { RunStore } from "./RunStore.ts"
import { StartChecks } from "./StartChecks.ts"
import { RunStreams } from "./RunStreams.ts"
import { RunTransitions } from "./RunTransitions.ts"
import * as Scheduler from "./Scheduler.ts"
import { Schedules } from "./Schedules.ts"
import { ServerConfig } from "./ServerConfig.ts"
import * as Telemetry from "./Telemetry.ts"
import { WorkerRegistry } from "./WorkerRegistry.ts"

/** A database for the server: SQL, the run change announcements, migrated (see `Database`). */
export type DatabaseLayer = Layer.Layer<
  SqlClient.SqlClient | PgClient.PgClient | RunNotifications | DatabaseReady,
  never,
  ServerConfig
>

/** The database, Redis Streams, the outbox, flow control's limits and the lease grace period after outages. */
const layerInfrastructure = (database: DatabaseLayer) =>
  Layer.mergeAll(Outbox.layer, LeaseGrace.layer, FlowControl.layer).pipe(Layer.provideMerge(Layer.mergeAll(database, RunStreams.layer)))

/** The stores, over the one transition engine every change goes through. */
const layerStores = (database: DatabaseLayer) =>
  Layer.mergeAll(RunStore.layer, Leases.layer, WorkerRegistry.layer, RunQueries.layer, ApiKeys.layer, BearerTokens.layer).pipe(
    Layer.provideMerge(Schedules.layer),
    Layer.provideMerge(StartChecks.layer),
    Layer.provideMerge(RunTransitions.layer),
    Layer.provideMerge(layerInfrastructure(database))
  )

/**
 * Background work: publishing the outbox, recovering lost runs, keeping metrics current, removing old rows, firing
 * schedules and offering runs held back by flow control.
 */
const layerBackground = Layer.mergeAll(
  OutboxPublisher.layer,
  Reaper.layer,
  Timeouts.layer,
  Metrics.layer,
  Retention.layer,
  Scheduler.layer,
  FlowOffers.layer
)

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
