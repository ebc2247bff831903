/**
 * Reading the configuration from the environment: defaults, keys and roles, and one clear error naming the
 * variable for each malformed or missing value.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Option, Redacted } from "effect"
import { defaults, fromEnv, servingFromEnv } from "../src/ServerConfig.ts"

const read = (env: Record<string, string>) => fromEnv.parse(ConfigProvider.fromEnvRecord(env))

/** A configuration the server starts with: a database and, explicitly, no authentication. */
const base = { DATABASE_URL: "postgres://db/aiki", AUTH: "off" }

describe("ServerConfig", () => {
  it.effect("uses the documented defaults", () =>
    Effect.gen(function*() {
      const config = yield* read(base)
      assert.strictEqual(config.port, 9090)
      assert.strictEqual(config.host, "0.0.0.0")
      assert.strictEqual(config.maxPayloadBytes, 2 * 1024 * 1024)
      assert.strictEqual(config.databasePoolSize, defaults.databasePoolSize)
      assert.isTrue(Option.isNone(config.redisUrl))
      assert.isTrue(Option.isNone(config.tls))
      assert.deepStrictEqual(config.apiKeys, [])
      assert.isTrue(config.authOff)
      assert.isTrue(Option.isNone(config.jwt))
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
        ...base,
        REDIS_URL: "rediss://redis.internal:6380",
        REDIS_USERNAME: "aiki",
        REDIS_PASSWORD: "s3cret"
      })
      assert.strictEqual(Option.getOrThrow(secure.redisConnection.username), "aiki")
      assert.strictEqual(Redacted.value(Option.getOrThrow(secure.redisConnection.password)), "s3cret")
      assert.isTrue(Option.isSome(secure.redisConnection.tls), "rediss:// turns TLS on")
      assert.deepStrictEqual(secure.redisConnection.clusterNodes, [])

      const cluster = yield* read({
        ...base,
        REDIS_CLUSTER_NODES: "10.0.0.1:7000, redis-b:7001",
        REDIS_TLS_CA_FILE: "/tls/ca.pem"
      })
      assert.isTrue(Option.isNone(cluster.redisUrl))
      assert.deepStrictEqual(cluster.redisConnection.clusterNodes, [{ host: "10.0.0.1", port: 7000 }, { host: "redis-b", port: 7001 }])
      assert.deepStrictEqual(Option.getOrThrow(cluster.redisConnection.tls), { caFile: Option.some("/tls/ca.pem") })

      const plain = yield* read({ ...base, REDIS_URL: "redis://localhost:6379" })
      assert.isTrue(Option.isNone(plain.redisConnection.tls))
    }))

  it.effect("reads JWT settings: an HS256 secret and/or a JWKS URL, issuer, audience and the role claim", () =>
    Effect.gen(function*() {
      const config = yield* read({
        DATABASE_URL: "postgres://db/aiki",
        JWT_SECRET: "x".repeat(32),
        JWT_JWKS_URL: "https://id.example.com/.well-known/jwks.json",
        JWT_ISSUER: "https://id.example.com",
        JWT_AUDIENCE: "aiki",
        JWT_ROLE_CLAIM: "realm_access.roles"
      })
      const jwt = Option.getOrThrow(config.jwt)
      assert.strictEqual(Redacted.value(Option.getOrThrow(jwt.secret)), "x".repeat(32))
      assert.deepStrictEqual(
        [jwt.jwksUrl, jwt.issuer, jwt.audience, jwt.roleClaim],
        [Option.some("https://id.example.com/.well-known/jwks.json"), Option.some("https://id.example.com"), Option.some("aiki"), "realm_access.roles"]
      )
      assert.isFalse(config.authOff)
      const defaultClaim = yield* read({ DATABASE_URL: "x", JWT_JWKS_URL: "https://id.example.com/jwks" })
      assert.strictEqual(Option.getOrThrow(defaultClaim.jwt).roleClaim, "role")
    }))

  it.effect("a serving server refuses to run without credentials unless AUTH=off, and AUTH=off beside credentials", () =>
    Effect.gen(function*() {
      const serving = (env: Record<string, string>) => servingFromEnv.parse(ConfigProvider.fromEnvRecord(env))
      const none = yield* Effect.flip(serving({ DATABASE_URL: "x" }))
      assert.include(none.message, "no API_KEY, API_KEYS, JWT_SECRET or JWT_JWKS_URL is set")
      assert.include(none.message, "AUTH=off")
      const both = yield* Effect.flip(serving({ DATABASE_URL: "x", API_KEY: "k", AUTH: "off" }))
      assert.include(both.message, "AUTH=off with API keys or JWT configured")
      assert.isFalse((yield* serving({ DATABASE_URL: "x", API_KEY: "k", AUTH: "on" })).authOff)
      assert.isTrue((yield* serving({ DATABASE_URL: "x", AUTH: "off" })).authOff)
      // Migrations need no authentication settings.
      assert.isFalse((yield* read({ DATABASE_URL: "x" })).authOff)
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
        [{ DATABASE_URL: "x", RETENTION_DAYS: "-1" }, "RETENTION_DAYS"],
        [{ DATABASE_URL: "x", AUTH: "none" }, "AUTH"],
        [{ DATABASE_URL: "x", JWT_SECRET: "too-short" }, "JWT_SECRET"],
        [{ DATABASE_URL: "x", JWT_JWKS_URL: "not a url" }, "JWT_JWKS_URL"],
        [{ DATABASE_URL: "x", API_KEY: "k", JWT_ISSUER: "https://id" }, "JWT_ISSUER"]
      ]
      for (const [env, variable] of cases) {
        const error = yield* Effect.flip(read(env))
        assert.include(error.message, variable, JSON.stringify(env))
      }
    }))
})
