/**
 * The database the server stands on, with the run change announcements read from it: Postgres (a pool, `LISTEN` on
 * a connection of its own) in production, or PGlite in-process for the embedded dev mode. It is migrated as soon
 * as it answers (`DatabaseReady`); until then the server answers 503 and its background work waits.
 */
import { NodeServices } from "@effect/platform-node"
import { PgClient, PgMigrator } from "@effect/sql-pg"
import { Effect, Layer } from "effect"
import { DatabaseReady } from "./DatabaseReady.ts"
import * as EmbeddedPostgres from "./EmbeddedPostgres.ts"
import { RunNotifications } from "./RunNotifications.ts"
import { ServerConfig } from "./ServerConfig.ts"
import initial from "./migrations/0001_initial.ts"
import traceParent from "./migrations/0002_trace_parent.ts"
import wakeAt from "./migrations/0003_wake_at.ts"
import runEvents from "./migrations/0004_run_events.ts"
import executionCoreV2 from "./migrations/0005_execution_core_v2.ts"
import idempotencyKeySearch from "./migrations/0006_idempotency_key_search.ts"
import retention from "./migrations/0007_retention.ts"
import metricsLeader from "./migrations/0008_metrics_leader.ts"
import schedulesAndFlowControl from "./migrations/0009_schedules_and_flow_control.ts"
import eventIds from "./migrations/0010_event_ids.ts"
import timeoutsAndPoisonRuns from "./migrations/0011_timeouts_and_poison_runs.ts"
import retryAndReset from "./migrations/0012_retry_and_reset.ts"
import childWorkflows from "./migrations/0013_child_workflows.ts"
import runRevision from "./migrations/0014_run_revision.ts"
import runFillfactor from "./migrations/0015_run_fillfactor.ts"

/** Migrations in order; ids are never reused or edited once released. */
export const migrations = PgMigrator.fromRecord({
  "0001_initial": initial,
  "0002_trace_parent": traceParent,
  "0003_wake_at": wakeAt,
  "0004_run_events": runEvents,
  "0005_execution_core_v2": executionCoreV2,
  "0006_idempotency_key_search": idempotencyKeySearch,
  "0007_retention": retention,
  "0008_metrics_leader": metricsLeader,
  "0009_schedules_and_flow_control": schedulesAndFlowControl,
  "0010_event_ids": eventIds,
  "0011_timeouts_and_poison_runs": timeoutsAndPoisonRuns,
  "0012_retry_and_reset": retryAndReset,
  "0013_child_workflows": childWorkflows,
  "0014_run_revision": runRevision,
  "0015_run_fillfactor": runFillfactor
})

/** Runs pending migrations (also the `aiki migrate` command). */
export const migrate = PgMigrator.run({ loader: migrations, table: "aiki_migrations" }).pipe(
  Effect.provide(NodeServices.layer)
)

/**
 * A pool over `DATABASE_URL` of `DATABASE_POOL_SIZE` connections.
 *
 * Its sessions plan each prepared statement once (`plan_cache_mode = force_generic_plan`). Left to choose, Postgres
 * kept re-planning the engine's reads for every execution (their generic plan's estimate, a JSON recordset of
 * unknown length, looks dearer than each custom one): ~0.4–0.6 ms of planning at every bind against ~0.05–0.1 ms of
 * execution, on the path of every claim and write. Every statement the server sends finds its rows by key or index
 * (`= ANY(array)`, a run id, a cursor), which a generic plan serves as well.
 */
export const layerPool = Layer.unwrap(Effect.gen(function*() {
  const config = yield* ServerConfig
  return PgClient.layer({
    url: config.databaseUrl,
    maxConnections: config.databasePoolSize,
    multiplex: true,
    applicationName: "aiki-server",
    startupParameters: { plan_cache_mode: "force_generic_plan" }
  })
}))

/** Postgres: the pool, migrated once it answers, and announcements over `LISTEN`. */
export const layer = RunNotifications.layer.pipe(
  Layer.provideMerge(DatabaseReady.layer(migrate)),
  Layer.provideMerge(layerPool),
  Layer.orDie
)

/** PGlite in-process (same migrations, same SQL): data under `dataDir`, or in memory. */
export const layerEmbedded = (options: EmbeddedPostgres.EmbeddedPostgresOptions) =>
  DatabaseReady.layer(migrate).pipe(Layer.provideMerge(EmbeddedPostgres.layer(options)), Layer.orDie)
