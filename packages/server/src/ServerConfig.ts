/**
 * Everything the server can be told, with its defaults. `layerConfig` reads the environment once at start; a
 * missing or malformed variable fails the start with one line naming it. Tests build it with `layer(partial)`.
 */
import { Config, ConfigProvider, Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import { Role } from "@aiki/contract/Access"
import { fileURLToPath } from "node:url"

export interface ApiKey {
  readonly key: Redacted.Redacted
  readonly role: Role
  /** A non-secret label for logs and traces (`API_KEY`, `API_KEYS[2]`). */
  readonly name: string
}

/** How the server reaches Redis beyond `redisUrl`: credentials, TLS, or a Redis Cluster instead of one server. */
export interface RedisConnection {
  /** An ACL user (`REDIS_USERNAME`); a URL's `user:password@` works as well. */
  readonly username: Option.Option<string>
  /** `REDIS_PASSWORD`: the ACL user's password, or the `requirepass` of the default user. */
  readonly password: Option.Option<Redacted.Redacted>
  /**
   * TLS, on for a `rediss://` URL, `REDIS_TLS=true` or a CA file; `caFile` (`REDIS_TLS_CA_FILE`, PEM) trusts the
   * private CA that signed Redis's certificate, in addition to the system's.
   */
  readonly tls: Option.Option<{ readonly caFile: Option.Option<string> }>
  /** Seed nodes of a Redis Cluster (`REDIS_CLUSTER_NODES=host:port,…`); empty for the one server at `redisUrl`. */
  readonly clusterNodes: ReadonlyArray<{ readonly host: string; readonly port: number }>
}

/**
 * JSON Web Tokens accepted as `Authorization: Bearer <jwt>`: signed with a shared HS256 secret, or by a key of a
 * JWKS (an identity provider's published keys), and carrying the caller's role in a claim.
 */
export interface JwtConfig {
  /** `JWT_SECRET`: the HS256 secret tokens are signed with. */
  readonly secret: Option.Option<Redacted.Redacted>
  /** `JWT_JWKS_URL`: where the verification keys are published (RS256, ES256, EdDSA, … as the keys say). */
  readonly jwksUrl: Option.Option<string>
  /** `JWT_ISSUER`: when set, a token's `iss` must be this. */
  readonly issuer: Option.Option<string>
  /** `JWT_AUDIENCE`: when set, a token's `aud` must name this. */
  readonly audience: Option.Option<string>
  /**
   * `JWT_ROLE_CLAIM`: the claim holding the role (`admin`, `worker` or `client`); a claim of that exact name, else
   * a dot-separated path into nested claims (`realm_access.roles`). An array counts by its first role. @default "role"
   */
  readonly roleClaim: string
}

export interface ServerConfigShape {
  /** @default 9090 */
  readonly port: number
  /** @default "0.0.0.0" */
  readonly host: string
  readonly databaseUrl: Redacted.Redacted
  /** @default 10 */
  readonly databasePoolSize: number
  /**
   * Redis Streams hand runs to workers (`redis://` or `rediss://`); without it (and without cluster nodes) the
   * outbox is not drained and workers must use HTTP.
   */
  readonly redisUrl: Option.Option<Redacted.Redacted>
  /** Credentials, TLS and Cluster. @default none of them */
  readonly redisConnection: RedisConnection
  /** Prefix of every Redis key, so several deployments (or test files) can share one Redis. @default "aiki" */
  readonly redisPrefix: string
  /** Keys accepted as `X-API-Key`. @default none */
  readonly apiKeys: ReadonlyArray<ApiKey>
  /** Bearer tokens accepted besides the keys. @default none */
  readonly jwt: Option.Option<JwtConfig>
  /**
   * `AUTH=off`: run with no authentication at all (every caller is an admin), for development. Without it, a
   * server with no key and no JWT configured refuses to start; with keys or JWT configured it has no effect.
   * @default false
   */
  readonly authOff: boolean
  /** Origins allowed by CORS; empty means no CORS headers. */
  readonly corsOrigins: ReadonlyArray<string>
  readonly tls: Option.Option<{ readonly certFile: string; readonly keyFile: string }>
  /** @default 2_097_152 (2 MiB) */
  readonly maxPayloadBytes: number
  /** Lease length when a worker asks for none. @default 60_000 */
  readonly defaultLeaseMs: number
  /**
   * How long lapsed leases are left alone after this server started or regained its database, so that workers cut
   * off by the outage can renew theirs before their runs are taken over. @default 15_000
   */
  readonly leaseGraceMs: number
  /**
   * How many groups of changes commit at once (each one transaction on its own connection). Under load a group waits
   * on Postgres round trips far more than on the CPU, so a few in parallel keep the server, Postgres and the workers
   * busy; groups lock their runs in id order, so they never deadlock. @default 4
   */
  readonly commitConcurrency: number
  /** How often the reaper looks for lapsed leases and lost messages. @default 5_000 */
  readonly reaperIntervalMs: number
  /** How long a pending run may wait before the reaper checks that its stream entry still exists. @default 30_000 */
  readonly republishAfterMs: number
  /** How often overdue task attempts and runs past their deadlines are failed (`Timeouts`). @default 1_000 */
  readonly timeoutSweepIntervalMs: number
  /**
   * A run whose lease lapsed this many times in a row without progress (its worker died or hung each time) is
   * failed as `poisoned` instead of being handed to another worker. @default 3
   */
  readonly poisonAfterLapses: number
  /**
   * How often runs held back by flow control are offered again when their wait ran out (debounce delays, rate-limit
   * windows) or when a crash lost the offer their freed slot made. @default 1_000
   */
  readonly flowSweepIntervalMs: number
  /** How often each replica looks for schedules whose fire time has come (their precision). @default 500 */
  readonly schedulerIntervalMs: number
  /**
   * Finished runs older than this many days are deleted with their tasks, attempts, transitions, events and outbox
   * rows; 0 keeps them for ever. @default 30
   */
  readonly retentionDays: number
  /** A worker whose last heartbeat is older than this is reported `stale`. @default 90_000 */
  readonly workerStaleAfterMs: number
  /** How long to wait for in-flight requests and the outbox on shutdown. @default 10_000 */
  readonly shutdownTimeoutMs: number
  /** Log every HTTP request (noisy under load). @default false */
  readonly logRequests: boolean
  /** OTLP/HTTP collector (e.g. `http://otel-collector:4318`); traces are exported to `<endpoint>/v1/traces`. */
  readonly otlpEndpoint: Option.Option<string>
  /** @default "aiki-server" */
  readonly serviceName: string
  /**
   * The built dashboard served at `/` (a directory with `index.html` and `assets/`); none (`DASHBOARD_DIR=off`)
   * serves no dashboard.
   * @default the `@aiki/dashboard` package's build (`packages/dashboard/dist/app`), when it was built
   */
  readonly dashboardDir: Option.Option<string>
  /** How long a dashboard login (its session cookie) lasts. @default 43_200_000 (12 hours) */
  readonly sessionTtlMs: number
}

/** Where the `@aiki/dashboard` package keeps its build, when the package is installed beside the server. */
const builtDashboard = (): Option.Option<string> => {
  try {
    return Option.some(fileURLToPath(new URL("dist/app", import.meta.resolve("@aiki/dashboard/package.json"))))
  } catch {
    return Option.none()
  }
}

export const defaults = {
  port: 9090,
  host: "0.0.0.0",
  databaseUrl: Redacted.make("postgres://postgres@127.0.0.1:5432/aiki"),
  databasePoolSize: 10,
  redisUrl: Option.none(),
  redisConnection: { username: Option.none(), password: Option.none(), tls: Option.none(), clusterNodes: [] },
  redisPrefix: "aiki",
  apiKeys: [],
  jwt: Option.none(),
  authOff: false,
  corsOrigins: [],
  tls: Option.none(),
  maxPayloadBytes: 2 * 1024 * 1024,
  defaultLeaseMs: 60_000,
  leaseGraceMs: 15_000,
  commitConcurrency: 4,
  reaperIntervalMs: 5_000,
  republishAfterMs: 30_000,
  timeoutSweepIntervalMs: 1_000,
  poisonAfterLapses: 3,
  flowSweepIntervalMs: 1_000,
  schedulerIntervalMs: 500,
  retentionDays: 30,
  workerStaleAfterMs: 90_000,
  shutdownTimeoutMs: 10_000,
  logRequests: false,
  otlpEndpoint: Option.none(),
  serviceName: "aiki-server",
  dashboardDir: builtDashboard(),
  sessionTtlMs: 12 * 3_600_000
} satisfies ServerConfigShape

/** A configuration error whose message names the variable at fault. */
const invalid = (message: string) => new Config.ConfigError(new ConfigProvider.SourceError({ message }))

const positiveInt = (name: string, fallback: number) =>
  Config.Int(name).pipe(
    Config.mapEffect((n) =>
      n > 0 ? Effect.succeed(n) : Effect.fail(invalid(`${name} must be a positive integer, got ${n}`))
    ),
    Config.withDefault(fallback)
  )

const list = (name: string) =>
  Config.String(name).pipe(
    Config.map((s) => s.split(",").map((item) => item.trim()).filter((item) => item.length > 0)),
    Config.withDefault<ReadonlyArray<string>>([])
  )

const decodeRole = Schema.decodeUnknownOption(Role)

/** `API_KEYS` is a comma-separated list of `role:key` pairs, e.g. `worker:k1,client:k2`. */
const apiKeys = Config.all({
  admin: Config.option(Config.Redacted("API_KEY")),
  others: list("API_KEYS")
}).pipe(
  Config.mapEffect(({ admin, others }) =>
    Effect.forEach(others, (entry, index) => {
      const separator = entry.indexOf(":")
      const role = separator > 0 ? decodeRole(entry.slice(0, separator)) : Option.none()
      const key = entry.slice(separator + 1)
      return Option.isSome(role) && key.length > 0
        ? Effect.succeed<ApiKey>({ key: Redacted.make(key), role: role.value, name: `API_KEYS[${index}]` })
        : Effect.fail(
          invalid(`API_KEYS entry ${index + 1} must be role:key with role admin, worker or client`)
        )
    }).pipe(
      Effect.map((keys): ReadonlyArray<ApiKey> =>
        Option.match(admin, {
          onNone: () => keys,
          onSome: (key) => [{ key, role: "admin", name: "API_KEY" }, ...keys]
        })
      )
    )
  )
)

/** `JWT_SECRET` and/or `JWT_JWKS_URL`, with `JWT_ISSUER`, `JWT_AUDIENCE` and `JWT_ROLE_CLAIM`. */
const jwt = Config.all({
  secret: Config.option(Config.Redacted("JWT_SECRET")),
  jwksUrl: Config.option(Config.URL("JWT_JWKS_URL")),
  issuer: Config.option(Config.String("JWT_ISSUER")),
  audience: Config.option(Config.String("JWT_AUDIENCE")),
  roleClaim: Config.String("JWT_ROLE_CLAIM").pipe(Config.withDefault("role"))
}).pipe(
  Config.mapEffect(({ audience, issuer, jwksUrl, roleClaim, secret }) => {
    if (Option.isNone(secret) && Option.isNone(jwksUrl)) {
      const stray = Option.isSome(issuer) ? "JWT_ISSUER" : Option.isSome(audience) ? "JWT_AUDIENCE" : undefined
      return stray === undefined
        ? Effect.succeed(Option.none<JwtConfig>())
        : Effect.fail(invalid(`${stray} needs JWT_SECRET or JWT_JWKS_URL`))
    }
    if (Option.exists(secret, (s) => Redacted.value(s).length < 32)) {
      return Effect.fail(invalid("JWT_SECRET must be at least 32 characters (HS256 needs a 256-bit secret)"))
    }
    if (roleClaim.length === 0) return Effect.fail(invalid("JWT_ROLE_CLAIM must not be empty"))
    return Effect.succeed(Option.some<JwtConfig>({
      secret,
      jwksUrl: Option.map(jwksUrl, (url) => url.href),
      issuer,
      audience,
      roleClaim
    }))
  })
)

/** `AUTH=off` allows a server with no credentials configured; anything else but `on` is a mistake. */
const authOff = Config.Literals(["on", "off"], "AUTH").pipe(Config.map((auth) => auth === "off"), Config.withDefault(false))

const tls = Config.all({
  enabled: Config.Boolean("TLS_ENABLED").pipe(Config.withDefault(false)),
  certFile: Config.option(Config.String("TLS_CERT_FILE")),
  keyFile: Config.option(Config.String("TLS_KEY_FILE"))
}).pipe(
  Config.mapEffect(({ certFile, enabled, keyFile }) => {
    if (!enabled) return Effect.succeed(Option.none())
    if (Option.isNone(certFile)) return Effect.fail(invalid("TLS_ENABLED needs TLS_CERT_FILE"))
    if (Option.isNone(keyFile)) return Effect.fail(invalid("TLS_ENABLED needs TLS_KEY_FILE"))
    return Effect.succeed(Option.some({ certFile: certFile.value, keyFile: keyFile.value }))
  })
)

const clusterNode = /^(.+):(\d{1,5})$/

/**
 * `REDIS_URL` or `REDIS_CLUSTER_NODES` (not both), with `REDIS_USERNAME`, `REDIS_PASSWORD`, `REDIS_TLS` and
 * `REDIS_TLS_CA_FILE`.
 */
const redis = Config.all({
  url: Config.option(Config.Redacted("REDIS_URL")),
  clusterNodes: list("REDIS_CLUSTER_NODES"),
  username: Config.option(Config.String("REDIS_USERNAME")),
  password: Config.option(Config.Redacted("REDIS_PASSWORD")),
  tls: Config.Boolean("REDIS_TLS").pipe(Config.withDefault(false)),
  caFile: Config.option(Config.String("REDIS_TLS_CA_FILE"))
}).pipe(
  Config.mapEffect(({ caFile, clusterNodes, password, tls, url, username }) =>
    Effect.gen(function*() {
      if (Option.isSome(url) && clusterNodes.length > 0) {
        return yield* Effect.fail(invalid("set REDIS_URL or REDIS_CLUSTER_NODES, not both"))
      }
      const nodes = yield* Effect.forEach(clusterNodes, (node, index) => {
        const match = clusterNode.exec(node)
        return match === null
          ? Effect.fail(invalid(`REDIS_CLUSTER_NODES entry ${index + 1} must be host:port, got ${node}`))
          : Effect.succeed({ host: match[1]!, port: Number(match[2]) })
      })
      const secure = tls || Option.isSome(caFile) ||
        Option.exists(url, (u) => Redacted.value(u).toLowerCase().startsWith("rediss://"))
      const connection: RedisConnection = {
        username,
        password,
        tls: secure ? Option.some({ caFile }) : Option.none(),
        clusterNodes: nodes
      }
      return { url, connection }
    })
  )
)

/** The server's configuration, read from the environment. */
export const fromEnv: Config.Config<ServerConfigShape> = Config.all({
  port: Config.Port("PORT").pipe(Config.withDefault(defaults.port)),
  host: Config.String("HOST").pipe(Config.withDefault(defaults.host)),
  databaseUrl: Config.Redacted("DATABASE_URL"),
  databasePoolSize: positiveInt("DATABASE_POOL_SIZE", defaults.databasePoolSize),
  redis,
  redisPrefix: Config.String("REDIS_PREFIX").pipe(Config.withDefault(defaults.redisPrefix)),
  apiKeys,
  jwt,
  authOff,
  corsOrigins: list("CORS_ORIGINS"),
  tls,
  maxPayloadBytes: positiveInt("MAX_PAYLOAD_BYTES", defaults.maxPayloadBytes),
  defaultLeaseMs: positiveInt("LEASE_DEFAULT_MS", defaults.defaultLeaseMs),
  leaseGraceMs: Config.Int("LEASE_GRACE_MS").pipe(
    Config.mapEffect((n) => n >= 0 ? Effect.succeed(n) : Effect.fail(invalid(`LEASE_GRACE_MS must be 0 or more, got ${n}`))),
    Config.withDefault(defaults.leaseGraceMs)
  ),
  commitConcurrency: positiveInt("COMMIT_CONCURRENCY", defaults.commitConcurrency),
  reaperIntervalMs: positiveInt("REAPER_INTERVAL_MS", defaults.reaperIntervalMs),
  republishAfterMs: positiveInt("REPUBLISH_AFTER_MS", defaults.republishAfterMs),
  timeoutSweepIntervalMs: positiveInt("TIMEOUT_SWEEP_INTERVAL_MS", defaults.timeoutSweepIntervalMs),
  poisonAfterLapses: positiveInt("POISON_AFTER_LAPSES", defaults.poisonAfterLapses),
  flowSweepIntervalMs: positiveInt("FLOW_SWEEP_INTERVAL_MS", defaults.flowSweepIntervalMs),
  schedulerIntervalMs: positiveInt("SCHEDULER_INTERVAL_MS", defaults.schedulerIntervalMs),
  retentionDays: Config.Int("RETENTION_DAYS").pipe(
    Config.mapEffect((n) =>
      n >= 0 ? Effect.succeed(n) : Effect.fail(invalid(`RETENTION_DAYS must be 0 (keep) or a number of days, got ${n}`))
    ),
    Config.withDefault(defaults.retentionDays)
  ),
  workerStaleAfterMs: positiveInt("WORKER_STALE_AFTER_MS", defaults.workerStaleAfterMs),
  shutdownTimeoutMs: positiveInt("SHUTDOWN_TIMEOUT_MS", defaults.shutdownTimeoutMs),
  logRequests: Config.Boolean("LOG_REQUESTS").pipe(Config.withDefault(defaults.logRequests)),
  otlpEndpoint: Config.option(Config.String("OTEL_EXPORTER_OTLP_ENDPOINT")),
  serviceName: Config.String("OTEL_SERVICE_NAME").pipe(Config.withDefault(defaults.serviceName)),
  dashboardDir: Config.option(Config.String("DASHBOARD_DIR")).pipe(
    Config.map((dir) =>
      Option.match(dir, {
        onNone: () => defaults.dashboardDir,
        onSome: (path) => path === "off" ? Option.none() : Option.some(path)
      })
    )
  ),
  sessionTtlMs: positiveInt("SESSION_TTL_MS", defaults.sessionTtlMs)
}).pipe(
  Config.map(({ redis, ...rest }): ServerConfigShape => ({ ...rest, redisUrl: redis.url, redisConnection: redis.connection }))
)

/**
 * The configuration of a server about to serve: `fromEnv`, refusing to run without authentication unless `AUTH=off`
 * says so (and `AUTH=off` beside keys or JWT, which says two things at once).
 */
export const servingFromEnv: Config.Config<ServerConfigShape> = fromEnv.pipe(
  Config.mapEffect((config) => {
    const credentials = config.apiKeys.length > 0 || Option.isSome(config.jwt)
    if (!credentials && !config.authOff) {
      return Effect.fail(invalid(
        "no API_KEY, API_KEYS, JWT_SECRET or JWT_JWKS_URL is set: configure one, or set AUTH=off to run without authentication"
      ))
    }
    if (credentials && config.authOff) {
      return Effect.fail(invalid("AUTH=off with API keys or JWT configured: remove one or the other"))
    }
    return Effect.succeed(config)
  })
)

export class ServerConfig extends Context.Service<ServerConfig, ServerConfigShape>()("@aiki/server/ServerConfig") {
  /** Defaults overridden by `partial` (tests). */
  static readonly layer = (partial: Partial<ServerConfigShape> = {}) =>
    Layer.succeed(ServerConfig, ServerConfig.of({ ...defaults, ...partial }))

  /** Read from the environment, for serving (`servingFromEnv`). */
  static readonly layerConfig = Layer.effect(
    ServerConfig,
    Effect.map(Effect.gen(function*() { return yield* servingFromEnv }), ServerConfig.of)
  )

  /** Read from the environment without what only serving needs (authentication), for `migrate`. */
  static readonly layerConfigForMigrations = Layer.effect(
    ServerConfig,
    Effect.map(Effect.gen(function*() { return yield* fromEnv }), ServerConfig.of)
  )
}
