/**
 * The private Postgres crashes for real: SIGKILL leaves no server behind, and the restart recovers every committed
 * transaction from the WAL.
 */
import { assert, it } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { Effect, Exit, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import * as PostgresProcess from "../src/PostgresProcess.ts"

/** One connection for `f`, closed afterwards. */
const withClient = <A, E>(url: string, f: (sql: SqlClient.SqlClient) => Effect.Effect<A, E>) =>
  Effect.flatMap(SqlClient.SqlClient, f).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 }))
  )

it.effect("a committed row survives a crash and the crash recovery that follows", () =>
  Effect.gen(function*() {
    const pg = yield* PostgresProcess.make
    yield* withClient(pg.url, (sql) =>
      Effect.andThen(sql`CREATE TABLE kept (id int PRIMARY KEY)`, sql`INSERT INTO kept VALUES (1)`))
    yield* pg.stop
    const whileDown = yield* withClient(pg.url, (sql) => sql`SELECT 1`).pipe(Effect.exit)
    assert.isTrue(Exit.isFailure(whileDown))
    yield* pg.start
    const rows = yield* withClient(pg.url, (sql) => sql<{ readonly id: number }>`SELECT id FROM kept`)
    assert.deepStrictEqual(rows.map((row) => row.id), [1])
    // A crash, not a clean shutdown: the restart had to recover.
    assert.include(readFileSync(join(pg.directory, "postgres.log"), "utf8"), "not properly shut down")
  }).pipe(Effect.scoped), { timeout: 60_000 })
