/**
 * Health checks answer 200 while their dependency answers and 503 with a reason when it does not: here the
 * database is dropped from under a running server, and a server without Redis reports it as not configured.
 */
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { PgClient } from "@effect/sql-pg"
import { Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { adminUrl } from "@aiki/testing/TestDatabase"
import * as TestServer from "./support/TestServer.ts"

layer(TestServer.layer({ redisUrl: null }), { excludeTestServices: true })("health", (it) => {
  it.effect("answers 200 for the server and the database, 503 for an unconfigured Redis", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const server = yield* api.health.server()
      assert.strictEqual(server.status, "ok")
      yield* api.health.database()
      const redis = yield* api.health.redis().pipe(Effect.flip)
      assert.strictEqual(redis._tag, "DependencyUnavailable")
      if (redis._tag === "DependencyUnavailable") assert.include(redis.message, "REDIS_URL")
    }))

  it.effect("answers 503 once the database is gone", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const api = yield* server.client()
      const name = new URL(server.databaseUrl).pathname.slice(1)
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(`DROP DATABASE ${name} WITH (FORCE)`)
      }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(adminUrl), maxConnections: 1 })), Effect.orDie)
      const database = yield* api.health.database().pipe(Effect.flip)
      assert.strictEqual(database._tag, "DependencyUnavailable")
      const { baseUrl } = server
      const status = yield* Effect.promise(() => fetch(`${baseUrl}/health/database`).then((r) => r.status))
      assert.strictEqual(status, 503)
      assert.strictEqual((yield* api.health.server()).status, "ok")
    }))
})
