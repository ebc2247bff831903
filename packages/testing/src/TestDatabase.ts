/**
 * A database of its own for each test file, created on a real Postgres and dropped afterwards, so test files run
 * in parallel without seeing each other's rows. `DATABASE_URL` names the server (default: local, trust auth).
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { randomBytes } from "node:crypto"

export const adminUrl = process.env["DATABASE_URL"] ?? "postgres://postgres@127.0.0.1:5432/postgres"

const withAdmin = <A, E>(f: (sql: SqlClient.SqlClient) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    return yield* f(sql)
  }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(adminUrl), maxConnections: 1 })), Effect.orDie)

/** Creates a fresh, empty database for the current scope and returns its URL. */
export const make = Effect.acquireRelease(
  Effect.gen(function*() {
    const name = `aiki_test_${randomBytes(6).toString("hex")}`
    yield* withAdmin((sql) => sql.unsafe(`CREATE DATABASE ${name}`))
    const url = new URL(adminUrl)
    url.pathname = `/${name}`
    return { name, url: url.toString() }
  }),
  ({ name }) => withAdmin((sql) => sql.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).pipe(Effect.ignore)
)
