/**
 * The real Aiki server, in-process, on a free port, over a database of its own and a Redis key prefix of its own.
 * Tests talk to it through the client derived from the API, exactly as the SDK does.
 */
import * as Client from "@aiki/contract/Client"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { FetchHttpClient, HttpServer } from "effect/http"
import { randomBytes } from "node:crypto"
import { DatabaseReady } from "../../src/DatabaseReady.ts"
import * as Server from "../../src/Server.ts"
import { ServerConfig, type ServerConfigShape } from "../../src/ServerConfig.ts"
import * as TestDatabase from "@aiki/testing/TestDatabase"

export const sharedRedisUrl = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379"

export class TestServer extends Context.Service<TestServer, {
  readonly baseUrl: string
  readonly databaseUrl: string
  readonly redisPrefix: string
  readonly config: ServerConfigShape
  /** A client sending `apiKey` (none by default). */
  readonly client: (apiKey?: string) => Effect.Effect<Client.AikiClient>
}>()("@aiki/server/test/TestServer") {}

/** The value of the Prometheus series `name{label="value",…}` the server exports now (0 when it has none yet). */
export const metric = (server: TestServer["Service"], name: string, labels: Readonly<Record<string, string>> = {}) =>
  Effect.promise(() => fetch(`${server.baseUrl}/metrics`).then((r) => r.text())).pipe(Effect.map((text) => {
    const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
    const ofName = (l: string) => l.startsWith(`${name}{`) || l.startsWith(`${name} `)
    const line = text.split("\n").find((l) => ofName(l) && wanted.every((w) => l.includes(w)))
    return line === undefined ? 0 : Number(line.split(" ").pop())
  }))

export interface TestServerOptions extends Partial<Omit<ServerConfigShape, "redisUrl" | "databaseUrl">> {
  /** Share another server's database (a second replica); a fresh database by default. */
  readonly databaseUrl?: string
  /** `embedded` runs the server on PGlite in memory instead of Postgres. @default "postgres" */
  readonly database?: "postgres" | "embedded"
  /** Redis to use; `null` for none. @default the shared test Redis */
  readonly redisUrl?: string | null
}

/**
 * The server with `options` over the defaults (port 0, fresh database, shared Redis with a fresh prefix). Provides
 * `TestServer`, the server's own services (stores, SqlClient) for direct checks, and `ServerConfig`.
 */
export const layer = (options: TestServerOptions = {}) =>
  Layer.unwrap(Effect.gen(function*() {
    const { database: kind = "postgres", databaseUrl, redisUrl = sharedRedisUrl, ...rest } = options
    const database = kind === "embedded"
      ? { url: "embedded://memory" }
      : databaseUrl === undefined
      ? yield* TestDatabase.make
      : { url: databaseUrl }
    const configLayer = ServerConfig.layer({
      port: 0,
      host: "127.0.0.1",
      databaseUrl: Redacted.make(database.url),
      databasePoolSize: 5,
      redisUrl: redisUrl === null ? Option.none() : Option.some(Redacted.make(redisUrl)),
      redisPrefix: `aiki-test-${randomBytes(4).toString("hex")}`,
      reaperIntervalMs: 3_600_000,
      // Tests make leases lapse on purpose; no grace period after the server starts.
      leaseGraceMs: 0,
      // Without keys (the default here) the server runs with no authentication, as it must be told explicitly.
      authOff: (options.apiKeys ?? []).length === 0 && Option.isNone(options.jwt ?? Option.none()),
      ...rest
    })
    const testServer = Layer.effect(
      TestServer,
      Effect.gen(function*() {
        const http = yield* HttpServer.HttpServer
        const config = yield* ServerConfig
        // Tests begin once the database is migrated (the server migrates it in the background).
        yield* (yield* DatabaseReady).await
        const baseUrl = HttpServer.formatAddress(http.address)
        const fetchLayer = FetchHttpClient.layer
        return TestServer.of({
          baseUrl,
          databaseUrl: database.url,
          redisPrefix: config.redisPrefix,
          config,
          client: (apiKey) => Client.make({ baseUrl, apiKey }).pipe(Effect.provide(fetchLayer))
        })
      })
    )
    const server = kind === "embedded" ? Server.layerEmbedded({ dataDir: undefined }) : Server.layer
    return testServer.pipe(Layer.provideMerge(server), Layer.provideMerge(configLayer))
  }))
