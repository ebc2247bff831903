/**
 * The server's own sessions on Postgres: how they plan the statements the engine prepares (see `Database.layerPool`).
 */
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import * as TestServer from "./support/TestServer.ts"

/** The plan cache mode of `connections` sessions at once (each in a transaction, so each holds its own). */
const planCacheModes = (connections: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const modes = yield* Effect.all(
      Array.from({ length: connections }, () =>
        sql.withTransaction(sql<{ readonly plan_cache_mode: string }>`SHOW plan_cache_mode`)),
      { concurrency: "unbounded" }
    )
    return modes.map(([row]) => row?.plan_cache_mode)
  }).pipe(Effect.orDie)

layer(TestServer.layer({ redisUrl: null }), { excludeTestServices: true })("database sessions (postgres)", (it) => {
  it.effect("plan each prepared statement once, on every connection of the pool", () =>
    Effect.gen(function*() {
      // As many at once as the pool has connections, so that each of them answers.
      const { databasePoolSize } = (yield* TestServer.TestServer).config
      assert.deepStrictEqual(yield* planCacheModes(databasePoolSize), Array(databasePoolSize).fill("force_generic_plan"))
    }))
})

layer(TestServer.layer({ redisUrl: null, database: "embedded" }), { excludeTestServices: true })("database sessions (embedded)", (it) => {
  it.effect("plan each prepared statement once", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* planCacheModes(1), ["force_generic_plan"])
    }))
})
