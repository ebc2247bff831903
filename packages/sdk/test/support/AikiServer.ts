/**
 * A real Aiki server process for SDK tests, over a database of its own and a Redis prefix of its own.
 */
import { freePort } from "@aiki/testing/freePort"
import { type Running, spawnNode, waitForHealth } from "@aiki/testing/NodeProcess"
import * as TestDatabase from "@aiki/testing/TestDatabase"
import { Effect } from "effect"
import { randomBytes } from "node:crypto"
import { fileURLToPath } from "node:url"

export const redisUrl = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379"

const serverMain = fileURLToPath(import.meta.resolve("@aiki/server/main"))

export interface AikiServer {
  readonly baseUrl: string
  readonly databaseUrl: string
  readonly redisPrefix: string
  readonly process: Running
}

/**
 * Starts the server for the current scope; `env` adds to (or, with `undefined`, removes) its environment. With
 * another server's `DATABASE_URL` and `REDIS_PREFIX` it is a second replica of the same deployment.
 */
export const make = (env: Record<string, string | undefined> = {}) =>
  Effect.gen(function*() {
    const database = env["DATABASE_URL"] !== undefined ? { url: env["DATABASE_URL"] } : yield* TestDatabase.make
    const port = yield* Effect.promise(freePort)
    const redisPrefix = env["REDIS_PREFIX"] ?? `aiki-test-${randomBytes(4).toString("hex")}`
    const settings = {
      DATABASE_URL: database.url,
      REDIS_URL: redisUrl,
      REDIS_PREFIX: redisPrefix,
      PORT: String(port),
      HOST: "127.0.0.1",
      REAPER_INTERVAL_MS: "500",
      // No keys: the server runs without authentication only when told so (a key in `env` turns it back on).
      ...(env["API_KEY"] === undefined && env["API_KEYS"] === undefined && env["JWT_SECRET"] === undefined
        ? { AUTH: "off" }
        : {}),
      ...env
    }
    const running = yield* spawnNode(
      serverMain,
      Object.fromEntries(Object.entries(settings).flatMap(([name, value]) => value === undefined ? [] : [[name, value]]))
    )
    const baseUrl = `http://127.0.0.1:${port}`
    yield* waitForHealth(`${baseUrl}/health`, running)
    return { baseUrl, databaseUrl: database.url, redisPrefix, process: running } satisfies AikiServer
  })
