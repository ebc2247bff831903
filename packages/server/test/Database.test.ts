/**
 * The server's own sessions on Postgres: how they plan the statements the engine prepares (see `Database.layerPool`).
 */
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import * as TestServer from "./support/TestServer.ts"

layer(TestServer.layer({ redisUrl: null }), { excludeTestServices: true })("database sessions", (it) => {
  it.effect("plan each prepared statement once, on every connection of the pool", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      // As many at once as the pool has connections, so that each of them answers.
      const modes = yield* Effect.all(
        Array.from({ length: 5 }, () =>
          sql.withTransaction(sql<{ readonly plan_cache_mode: string }>`SHOW plan_cache_mode`)),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(modes.map(([row]) => row?.plan_cache_mode), Array(5).fill("force_generic_plan"))
    }).pipe(Effect.orDie))
})
