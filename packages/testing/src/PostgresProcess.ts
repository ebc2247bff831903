/**
 * A Postgres server of the test's own, in a fresh data directory on a free port, that the test may crash and
 * start again for real (the shared Postgres must stay up for the other test files). `stop` is SIGKILL of the
 * postmaster and its backends, a crash; `start` runs crash recovery on the same data directory, so every
 * committed transaction is there again. `fsync` is on: durability is what such tests are about.
 *
 * The binaries come from `PG_BIN`, else the `PATH` (nix), else the newest `/usr/lib/postgresql/<version>/bin`
 * (Debian). Postgres refuses to run as root, so as root it runs as the `postgres` user.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { chownSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as CrashableProcess from "./CrashableProcess.ts"
import { freePort } from "./freePort.ts"

export interface PostgresProcess extends CrashableProcess.CrashableProcess {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` (trust authentication). */
  readonly url: string
  readonly port: number
  /** The data directory; its `postgres.log` has the server's log. */
  readonly directory: string
}

const binDir = (): string => {
  const configured = process.env["PG_BIN"]
  if (configured !== undefined) return configured
  const onPath = (process.env["PATH"] ?? "").split(":")
    .find((dir) => dir !== "" && existsSync(join(dir, "initdb")) && existsSync(join(dir, "postgres")))
  if (onPath !== undefined) return onPath
  const root = "/usr/lib/postgresql"
  const versions = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : []
  if (versions[0] === undefined) throw new Error("PostgreSQL binaries not found: set PG_BIN to the directory of initdb")
  return join(root, versions[0], "bin")
}

/** Who runs the server: `postgres` when we are root (Postgres refuses root), else ourselves. */
const runAs = (): { readonly uid: number; readonly gid: number } | undefined => {
  if (process.getuid?.() !== 0) return undefined
  const id = (flag: string) => Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }).trim())
  return { uid: id("-u"), gid: id("-g") }
}

/** Whether the server accepts a query now (during crash recovery it refuses connections). */
const isReady = (url: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT 1`).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1, connectTimeout: "1 second" })),
    Effect.timeout("2 seconds"),
    Effect.isSuccess
  )

// On real timers (like RedisProcess), so it also works inside tests that run on `TestClock`.
const waitUntilUp = (url: string, child: ChildProcess, log: string) =>
  Effect.promise(async () => {
    // Crash recovery replays the WAL before connections are accepted; give it time.
    for (let i = 0; i < 600; i++) {
      if (child.exitCode !== null) throw new Error(`postgres exited with code ${child.exitCode}; see ${log}`)
      if (await Effect.runPromise(isReady(url))) return
      await new Promise((r) => setTimeout(r, 50))
    }
    throw new Error(`postgres did not start; see ${log}`)
  })

/** Creates a cluster in a temporary directory and starts it for the current scope (the directory goes with it). */
export const make = Effect.gen(function*() {
  const bin = binDir()
  const user = runAs()
  const port = yield* Effect.promise(freePort)
  const directory = yield* Effect.acquireRelease(
    Effect.sync(() => {
      const dir = mkdtempSync(join(tmpdir(), "aiki-postgres-"))
      mkdirSync(join(dir, "data"), { mode: 0o700 })
      if (user !== undefined) {
        chownSync(dir, user.uid, user.gid)
        chownSync(join(dir, "data"), user.uid, user.gid)
      }
      return dir
    }),
    (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
  )
  const data = join(directory, "data")
  const log = join(directory, "postgres.log")
  const asUser = user === undefined ? {} : { uid: user.uid, gid: user.gid }
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`
  yield* Effect.sync(() =>
    execFileSync(join(bin, "initdb"), ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"], {
      stdio: "ignore",
      ...asUser
    })
  )
  const server = yield* CrashableProcess.make({
    spawn: () => {
      const output = openSync(log, "a")
      const child = spawn(join(bin, "postgres"), [
        "-D", data,
        "-p", String(port),
        "-c", "listen_addresses=127.0.0.1",
        "-c", `unix_socket_directories=${directory}`,
        "-c", "fsync=on",
        "-c", "synchronous_commit=on",
        "-c", "max_connections=200"
      ], { stdio: ["ignore", output, output], ...asUser })
      closeSync(output)
      return child
    },
    ready: (child) => waitUntilUp(url, child, log)
  })
  return { url, port, directory, ...server } satisfies PostgresProcess
})
