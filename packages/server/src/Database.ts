/**
 * The Postgres connection pool, migrated before anything uses it. Every store asks for `SqlClient` and gets a
 * database whose schema is current.
 */
import { NodeServices } from "@effect/platform-node"
import { PgClient, PgMigrator } from "@effect/sql-pg"
import { Effect, Layer } from "effect"
import { ServerConfig } from "./ServerConfig.ts"
import initial from "./migrations/0001_initial.ts"

/** Migrations in order; ids are never reused or edited once released. */
export const migrations = PgMigrator.fromRecord({
  "0001_initial": initial
})

/** Runs pending migrations (also the `aiki migrate` command). */
export const migrate = PgMigrator.run({ loader: migrations, table: "aiki_migrations" }).pipe(
  Effect.provide(NodeServices.layer)
)

/** A pool over `DATABASE_URL` of `DATABASE_POOL_SIZE` connections. */
export const layerPool = Layer.unwrap(Effect.gen(function*() {
  const config = yield* ServerConfig
  return PgClient.layer({
    url: config.databaseUrl,
    maxConnections: config.databasePoolSize,
    applicationName: "aiki-server"
  })
}))

/** The pool with migrations applied. */
export const layer = Layer.effectDiscard(migrate).pipe(Layer.provideMerge(layerPool), Layer.orDie)
