/**
 * Reading the configuration from the environment: defaults, keys and roles, and one clear error naming the
 * variable for each malformed or missing value.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Option, Redacted } from "effect"
import { defaults, fromEnv } from "../src/ServerConfig.ts"

const read = (env: Record<string, string>) => fromEnv.parse(ConfigProvider.fromEnvRecord(env))

describe("ServerConfig", () => {
  it.effect("uses the documented defaults", () =>
    Effect.gen(function*() {
      const config = yield* read({ DATABASE_URL: "postgres://db/aiki" })
      assert.strictEqual(config.port, 9090)
      assert.strictEqual(config.host, "0.0.0.0")
      assert.strictEqual(config.maxPayloadBytes, 2 * 1024 * 1024)
      assert.strictEqual(config.databasePoolSize, defaults.databasePoolSize)
      assert.isTrue(Option.isNone(config.redisUrl))
      assert.isTrue(Option.isNone(config.tls))
      assert.deepStrictEqual(config.apiKeys, [])
      assert.deepStrictEqual(config.corsOrigins, [])
      assert.strictEqual(config.retentionDays, 30)
    }))

  it.effect("maps API_KEY to admin and API_KEYS entries to their roles", () =>
    Effect.gen(function*() {
      const config = yield* read({
        DATABASE_URL: "postgres://db/aiki",
        API_KEY: "root",
        API_KEYS: "worker:w:with:colons, client:c",
        CORS_ORIGINS: "https://a.example, https://b.example",
        TLS_ENABLED: "true",
        TLS_CERT_FILE: "/tls/cert.pem",
        TLS_KEY_FILE: "/tls/key.pem"
      })
      assert.deepStrictEqual(
        config.apiKeys.map((k) => [k.role, Redacted.value(k.key), k.name]),
        [["admin", "root", "API_KEY"], ["worker", "w:with:colons", "API_KEYS[0]"], ["client", "c", "API_KEYS[1]"]]
      )
      assert.deepStrictEqual(config.corsOrigins, ["https://a.example", "https://b.example"])
      assert.deepStrictEqual(Option.getOrThrow(config.tls), { certFile: "/tls/cert.pem", keyFile: "/tls/key.pem" })
      // Secrets never show in logs or errors.
      assert.notInclude(String(config.apiKeys[0]!.key), "root")
    }))

  it.effect("reads Redis credentials, TLS and cluster nodes", () =>
    Effect.gen(function*() {
      const secure = yield* read({
        DATABASE_URL: "postgres://db/aiki",
        REDIS_URL: "rediss://redis.internal:6380",
        REDIS_USERNAME: "aiki",
        REDIS_PASSWORD: "s3cret"
      })
      assert.strictEqual(Option.getOrThrow(secure.redisConnection.username), "aiki")
      assert.strictEqual(Redacted.value(Option.getOrThrow(secure.redisConnection.password)), "s3cret")
      assert.isTrue(Option.isSome(secure.redisConnection.tls), "rediss:// turns TLS on")
      assert.deepStrictEqual(secure.redisConnection.clusterNodes, [])

      const cluster = yield* read({
        DATABASE_URL: "postgres://db/aiki",
        REDIS_CLUSTER_NODES: "10.0.0.1:7000, redis-b:7001",
        REDIS_TLS_CA_FILE: "/tls/ca.pem"
      })
      assert.isTrue(Option.isNone(cluster.redisUrl))
      assert.deepStrictEqual(cluster.redisConnection.clusterNodes, [{ host: "10.0.0.1", port: 7000 }, { host: "redis-b", port: 7001 }])
      assert.deepStrictEqual(Option.getOrThrow(cluster.redisConnection.tls), { caFile: Option.some("/tls/ca.pem") })

      const plain = yield* read({ DATABASE_URL: "postgres://db/aiki", REDIS_URL: "redis://localhost:6379" })
      assert.isTrue(Option.isNone(plain.redisConnection.tls))
    }))

  it.effect("fails with a message naming the variable", () =>
    Effect.gen(function*() {
      const cases: Array<[Record<string, string>, string]> = [
        [{}, "DATABASE_URL"],
        [{ DATABASE_URL: "x", PORT: "nine" }, "PORT"],
        [{ DATABASE_URL: "x", PORT: "70000" }, "PORT"],
        [{ DATABASE_URL: "x", MAX_PAYLOAD_BYTES: "-1" }, "MAX_PAYLOAD_BYTES"],
        [{ DATABASE_URL: "x", DATABASE_POOL_SIZE: "0" }, "DATABASE_POOL_SIZE"],
        [{ DATABASE_URL: "x", API_KEYS: "superuser:k" }, "API_KEYS"],
        [{ DATABASE_URL: "x", TLS_ENABLED: "true" }, "TLS_CERT_FILE"],
        [{ DATABASE_URL: "x", TLS_ENABLED: "maybe" }, "TLS_ENABLED"],
        [{ DATABASE_URL: "x", REDIS_URL: "redis://a:1", REDIS_CLUSTER_NODES: "b:2" }, "REDIS_CLUSTER_NODES"],
        [{ DATABASE_URL: "x", REDIS_CLUSTER_NODES: "b:2,c" }, "REDIS_CLUSTER_NODES"],
        [{ DATABASE_URL: "x", REDIS_TLS: "perhaps" }, "REDIS_TLS"],
        [{ DATABASE_URL: "x", RETENTION_DAYS: "-1" }, "RETENTION_DAYS"]
      ]
      for (const [env, variable] of cases) {
        const error = yield* Effect.flip(read(env))
        assert.include(error.message, variable, JSON.stringify(env))
      }
    }))
})
