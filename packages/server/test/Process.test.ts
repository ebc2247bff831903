/**
 * The `aiki-server` process as operators run it: configuration errors in one line, migrations as a command,
 * HTTPS, and a graceful stop on SIGTERM that answers what it accepted and publishes what it committed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import { mkdtempSync, readFileSync } from "node:fs"
import { request } from "node:https"
import { connect, createServer as createNetServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { PgClient } from "@effect/sql-pg"
import { Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { freePort } from "@aiki/testing/freePort"
import * as OtlpCollector from "@aiki/testing/OtlpCollector"
import { spawnNode, waitForHealth } from "@aiki/testing/NodeProcess"
import { fileURLToPath } from "node:url"

const mainPath = fileURLToPath(new URL("../src/main.ts", import.meta.url))
const migratePath = fileURLToPath(new URL("../src/migrate.ts", import.meta.url))
import * as TestDatabase from "@aiki/testing/TestDatabase"
import { sharedRedisUrl } from "./support/TestServer.ts"

const query = <A extends object>(url: string, text: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    return yield* sql.unsafe<A>(text)
  }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 })), Effect.orDie)

describe("aiki-server process", () => {
  it.live("exits 1 with one line naming a malformed variable", () =>
    Effect.gen(function*() {
      const running = yield* spawnNode(mainPath, { DATABASE_URL: "postgres://x/y", PORT: "not-a-port" })
      const exited = yield* Effect.promise(() => running.exited)
      assert.strictEqual(exited.code, 1)
      const lines = exited.stderr.trim().split("\n")
      assert.strictEqual(lines.length, 1)
      assert.include(lines[0], "PORT")
      const missing = yield* spawnNode(mainPath, {})
      const missingExit = yield* Effect.promise(() => missing.exited)
      assert.strictEqual(missingExit.code, 1)
      assert.include(missingExit.stderr, "DATABASE_URL")
    }).pipe(Effect.scoped))

  it.live("refuses to start with no API key and no JWT, unless AUTH=off says so", () =>
    Effect.gen(function*() {
      const database = yield* TestDatabase.make
      const unprotected = yield* spawnNode(mainPath, { DATABASE_URL: database.url })
      const refused = yield* Effect.promise(() => unprotected.exited)
      assert.strictEqual(refused.code, 1)
      assert.deepStrictEqual(refused.stderr.trim().split("\n").length, 1)
      assert.include(refused.stderr, "no API_KEY, API_KEYS, JWT_SECRET or JWT_JWKS_URL is set")
      assert.include(refused.stderr, "AUTH=off")
      const both = yield* spawnNode(mainPath, { DATABASE_URL: database.url, API_KEY: "k", AUTH: "off" })
      assert.include((yield* Effect.promise(() => both.exited)).stderr, "AUTH=off with API keys or JWT configured")
      const shortSecret = yield* spawnNode(mainPath, { DATABASE_URL: database.url, JWT_SECRET: "short" })
      assert.include((yield* Effect.promise(() => shortSecret.exited)).stderr, "JWT_SECRET must be at least 32 characters")
      const port = yield* Effect.promise(freePort)
      const open = yield* spawnNode(mainPath, { DATABASE_URL: database.url, PORT: String(port), HOST: "127.0.0.1", AUTH: "off" })
      yield* waitForHealth(`http://127.0.0.1:${port}/health`, open)
      const runs = yield* Effect.promise(() => fetch(`http://127.0.0.1:${port}/workflows/open/runs`).then((r) => r.status))
      assert.strictEqual(runs, 200)
      assert.include(open.output(), "AUTH=off: authentication is OFF")
    }).pipe(Effect.scoped), 60_000)

  it.live("migrates a database as a separate command", () =>
    Effect.gen(function*() {
      const database = yield* TestDatabase.make
      const running = yield* spawnNode(migratePath, { DATABASE_URL: database.url })
      const exited = yield* Effect.promise(() => running.exited)
      assert.strictEqual(exited.code, 0, exited.stderr)
      const tables = yield* query<{ table_name: string }>(
        database.url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"
      )
      assert.includeMembers(tables.map((t) => t.table_name), ["workflow_runs", "tasks", "transitions", "outbox", "workers"])
    }).pipe(Effect.scoped))

  it.live("serves HTTPS when TLS_ENABLED", () =>
    Effect.gen(function*() {
      const database = yield* TestDatabase.make
      const dir = mkdtempSync(join(tmpdir(), "aiki-tls-"))
      execFileSync("openssl", [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1",
        "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")
      ], { stdio: "ignore" })
      const port = yield* Effect.promise(freePort)
      const running = yield* spawnNode(mainPath, {
        DATABASE_URL: database.url,
        PORT: String(port),
        HOST: "127.0.0.1",
        AUTH: "off",
        TLS_ENABLED: "true",
        TLS_CERT_FILE: join(dir, "cert.pem"),
        TLS_KEY_FILE: join(dir, "key.pem")
      })
      const ca = readFileSync(join(dir, "cert.pem"))
      const get = () =>
        new Promise<{ status: number; body: string }>((resolve, reject) => {
          const req = request({ host: "127.0.0.1", port, path: "/health", ca }, (res) => {
            let body = ""
            res.on("data", (c) => (body += c))
            res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
          })
          req.on("error", reject)
          req.end()
        })
      // Until its database is migrated the server answers 503: wait for the 200.
      const answer = yield* Effect.promise(async () => {
        for (let i = 0; i < 200; i++) {
          try {
            const reply = await get()
            if (reply.status === 200) return reply
          } catch {
            if (running.child.exitCode !== null) throw new Error(running.output())
          }
          await new Promise((r) => setTimeout(r, 100))
        }
        throw new Error(`no HTTPS answer:\n${running.output()}`)
      })
      assert.strictEqual(answer.status, 200)
      assert.include(answer.body, "\"ok\"")
    }).pipe(Effect.scoped))

  it.live("stops on SIGTERM: accepted requests are answered and committed runs published", () =>
    Effect.gen(function*() {
      const database = yield* TestDatabase.make
      const port = yield* Effect.promise(freePort)
      const base = `http://127.0.0.1:${port}`
      const running = yield* spawnNode(mainPath, {
        DATABASE_URL: database.url,
        REDIS_URL: sharedRedisUrl,
        REDIS_PREFIX: `aiki-test-process-${port}`,
        PORT: String(port),
        HOST: "127.0.0.1",
        AUTH: "off"
      })
      yield* waitForHealth(`${base}/health`, running)
      const statuses = yield* Effect.promise(async () => {
        const starts = Array.from({ length: 100 }, (_, i) =>
          fetch(`${base}/workflows/shutdown/versions/1.0.0/start`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ payload: i })
          }).then((r) => r.status, () => "refused" as const))
        await new Promise((r) => setTimeout(r, 20))
        running.child.kill("SIGTERM")
        return Promise.all(starts)
      })
      const exited = yield* Effect.promise(() => running.exited)
      assert.strictEqual(exited.code, 0, exited.stderr)
      // Every request was either answered in full or never accepted: no half-written answer, no 5xx.
      for (const status of statuses) assert.include([200, "refused"], status)
      const accepted = statuses.filter((s) => s === 200).length
      const runs = yield* query<{ n: number }>(database.url, "SELECT count(*)::int AS n FROM workflow_runs")
      assert.strictEqual(runs[0]!.n, accepted)
      const unpublished = yield* query<{ n: number }>(
        database.url,
        "SELECT count(*)::int AS n FROM outbox WHERE published_at IS NULL"
      )
      assert.strictEqual(unpublished[0]!.n, 0)
    }).pipe(Effect.scoped))

  it.live("exports traces to the OTLP collector at OTEL_EXPORTER_OTLP_ENDPOINT", () =>
    Effect.gen(function*() {
      const database = yield* TestDatabase.make
      const collector = yield* OtlpCollector.make
      const port = yield* Effect.promise(freePort)
      const running = yield* spawnNode(mainPath, {
        DATABASE_URL: database.url,
        PORT: String(port),
        HOST: "127.0.0.1",
        AUTH: "off",
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint,
        OTEL_SERVICE_NAME: "aiki-test"
      })
      yield* waitForHealth(`http://127.0.0.1:${port}/health`, running)
      yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${port}/workflows/traced/versions/1.0.0/start`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ payload: 1 })
        })
      )
      running.child.kill("SIGTERM")
      yield* Effect.promise(() => running.exited)
      const stored = collector.spans.find((span) => span.name === "RunStore.start")
      assert.strictEqual(stored?.service, "aiki-test")
    }).pipe(Effect.scoped))

  it.live("waits for Postgres when it is down at start: 503 meanwhile, then migrates and serves", () =>
    Effect.gen(function*() {
      const database = yield* TestDatabase.make
      // Postgres "comes up" when this proxy to the real one starts listening; until then nothing answers there.
      const proxyPort = yield* Effect.promise(freePort)
      const url = new URL(database.url)
      url.port = String(proxyPort)
      const port = yield* Effect.promise(freePort)
      const baseUrl = `http://127.0.0.1:${port}`
      const running = yield* spawnNode(mainPath, {
        DATABASE_URL: url.toString(),
        PORT: String(port),
        HOST: "127.0.0.1",
        AUTH: "off"
      })
      const answer = (path: string, init?: RequestInit) =>
        Effect.promise(async () => {
          for (let i = 0; i < 200; i++) {
            if (running.child.exitCode !== null) throw new Error(`server exited:\n${running.output()}`)
            try {
              const response = await fetch(`${baseUrl}${path}`, init)
              return { status: response.status, body: await response.json() as { _tag?: string } }
            } catch {
              await new Promise((r) => setTimeout(r, 100))
            }
          }
          throw new Error(`no answer:\n${running.output()}`)
        })
      const health = yield* answer("/health")
      assert.strictEqual(health.status, 503)
      assert.strictEqual(health.body._tag, "DependencyUnavailable")
      assert.strictEqual((yield* answer("/health/database")).status, 503)
      const start = yield* answer("/workflows/w/versions/1.0.0/start", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ payload: 1 })
      })
      assert.strictEqual(start.status, 503)
      yield* Effect.sleep("1 second")
      assert.isNull(running.child.exitCode, "the server must not exit while Postgres is down")

      yield* Effect.acquireRelease(
        Effect.sync(() => {
          const proxy = createNetServer((client) => {
            const upstream = connect(Number(new URL(database.url).port || 5432), "127.0.0.1")
            client.pipe(upstream).pipe(client)
            client.on("error", () => upstream.destroy())
            upstream.on("error", () => client.destroy())
          })
          proxy.listen(proxyPort, "127.0.0.1")
          return proxy
        }),
        (proxy) => Effect.sync(() => proxy.close())
      )
      yield* waitForHealth(`${baseUrl}/health`, running)
      const started = yield* answer("/workflows/w/versions/1.0.0/start", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ payload: 1 })
      })
      assert.strictEqual(started.status, 200)
      assert.include(running.output(), "Cannot reach or migrate the database yet")
    }).pipe(Effect.scoped))
})
