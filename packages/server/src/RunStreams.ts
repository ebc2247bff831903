/**
 * The Redis Streams that hand runs to workers: one stream per workflow version (`{<prefix>}:workflow:<name>:<version>`),
 * read by workers through one consumer group. Redis is a transport, never the truth: losing it loses nothing that
 * the outbox and the reaper cannot put back. Without `REDIS_URL` (or `REDIS_CLUSTER_NODES`) the streams are
 * disabled and workers use HTTP.
 *
 * Redis as operators run it: one server or a Redis Cluster, with an ACL user or a password, over TLS. On a cluster
 * every command must keep to one hash slot, and a worker reads all its streams with one blocking `XREADGROUP`: so
 * every stream of a deployment carries the same hash tag, its prefix in braces (as BullMQ does with its queues).
 * The cluster then gives availability and failover to Aiki's streams; they are not spread over its shards.
 */
import { bandOf, defaultPriority, type PriorityBand } from "@aiki/contract/FlowControl"
import { Context, Data, Effect, Layer, Option, Redacted } from "effect"
import { Cluster, Redis } from "ioredis"
import { readFileSync } from "node:fs"
import { ServerConfig, type ServerConfigShape } from "./ServerConfig.ts"

export class RedisUnavailable extends Data.TaggedError("RedisUnavailable")<{
  readonly reason: string
}> {}

/** The consumer group every worker reads through. Created at id 0 so entries added before it are delivered. */
export const consumerGroup = "aiki-workers"

export interface StreamMessage {
  readonly stream: string
  readonly runId: string
}

export interface StreamEntry {
  readonly stream: string
  readonly messageId: string
}

/** What every stream of a deployment starts with: its prefix as a hash tag, so they share one slot. */
const streamsUnder = (prefix: string) => `{${prefix}}:workflow:`

/**
 * The stream of a workflow version's runs in a priority band: the normal band is the version's own stream, the
 * others carry the band's name after it (versions contain no `:`).
 */
export const streamKey = (prefix: string, name: string, version: string, band: PriorityBand = "normal") =>
  `${streamsUnder(prefix)}${name}:${version}${band === "normal" ? "" : `:${band}`}`

/** Every band a worker reads, highest first. */
export const bands: ReadonlyArray<PriorityBand> = ["high", "normal", "low"]

/** A client for the configured Redis: one server at `REDIS_URL`, or the cluster at `REDIS_CLUSTER_NODES`. */
const connect = (redisUrl: Option.Option<Redacted.Redacted>, config: ServerConfigShape["redisConnection"]) =>
  Effect.gen(function*() {
    const tls = yield* Option.match(config.tls, {
      onNone: () => Effect.succeed(undefined),
      onSome: ({ caFile }) =>
        Option.match(caFile, {
          onNone: () => Effect.succeed({}),
          onSome: (file) =>
            Effect.try({
              try: () => ({ ca: readFileSync(file) }),
              catch: (cause) => new Error(`REDIS_TLS_CA_FILE cannot be read: ${String(cause)}`)
            })
        })
    }).pipe(Effect.orDie)
    const options = {
      // Fail commands at once while disconnected instead of queueing them: the outbox keeps the work.
      maxRetriesPerRequest: 1,
      connectTimeout: 2_000,
      ...Option.match(config.username, { onNone: () => ({}), onSome: (username) => ({ username }) }),
      ...Option.match(config.password, { onNone: () => ({}), onSome: (password) => ({ password: Redacted.value(password) }) }),
      ...(tls !== undefined ? { tls } : {})
    }
    return Option.match(redisUrl, {
      onNone: () => new Cluster([...config.clusterNodes], { enableOfflineQueue: false, redisOptions: options }),
      onSome: (url) => new Redis(Redacted.value(url), { ...options, enableOfflineQueue: false, lazyConnect: false })
    })
  })

export class RunStreams extends Context.Service<RunStreams, {
  /** False when no Redis is configured: nothing is published and the outbox is not written. */
  readonly enabled: boolean
  /** The stream of a version's runs of `priority` (default 5: the normal band). */
  readonly streamOf: (workflowName: string, workflowVersion: string, priority?: number) => string
  /** Appends one entry per message (creating streams and the group as needed); returns the entry ids in order. */
  readonly publish: (messages: ReadonlyArray<StreamMessage>) => Effect.Effect<ReadonlyArray<string>, RedisUnavailable>
  /**
   * For each entry, whether it is gone from where workers read: Redis lost it, it was deleted, or its stream is
   * named as before streams carried a hash tag (no worker reads those any more, so the reaper republishes).
   */
  readonly missing: (entries: ReadonlyArray<StreamEntry>) => Effect.Effect<ReadonlyArray<boolean>, RedisUnavailable>
  readonly ping: Effect.Effect<void, RedisUnavailable>
  /**
   * True (once) when Redis lost its data since it was last asked: restarted empty, flushed, or failed over to a
   * replica that had nothing. A marker key in the streams' hash slot goes with them; whoever finds it missing and
   * sets it again (`SET NX`, so one replica) is told to republish every pending run at once.
   */
  readonly dataLost: Effect.Effect<boolean, RedisUnavailable>
}>()("@aiki/server/RunStreams") {
  static readonly layer = Layer.effect(
    RunStreams,
    Effect.gen(function*() {
      const config = yield* ServerConfig
      const streamOf = (name: string, version: string, priority: number = defaultPriority) =>
        streamKey(config.redisPrefix, name, version, bandOf(priority))
      const redisUrl = config.redisUrl
      if (Option.isNone(redisUrl) && config.redisConnection.clusterNodes.length === 0) {
        const disabled = Effect.fail(new RedisUnavailable({ reason: "REDIS_URL is not configured" }))
        return RunStreams.of({
          enabled: false,
          streamOf,
          publish: () => disabled,
          missing: () => disabled,
          ping: disabled,
          dataLost: Effect.succeed(false)
        })
      }
      const redis = yield* Effect.acquireRelease(
        connect(redisUrl, config.redisConnection),
        (client) => Effect.promise(() => client.quit().then(() => undefined, () => client.disconnect()))
      )
      // ioredis reports connection errors as events; the commands that fail carry the error we act on.
      redis.on("error", () => {})

      const call = <A>(what: string, f: () => Promise<A>) =>
        Effect.tryPromise({
          try: f,
          catch: (cause) => new RedisUnavailable({ reason: `${what}: ${cause instanceof Error ? cause.message : String(cause)}` })
        })

      const publish = Effect.fnUntraced(function*(messages: ReadonlyArray<StreamMessage>) {
        if (messages.length === 0) return []
        const streams = [...new Set(messages.map((m) => m.stream))]
        // The group is (re)created with every batch: after Redis restarts empty, XADD alone would recreate the
        // stream without it. BUSYGROUP replies (the usual case) are expected and skipped.
        const results = yield* call("XADD", () => {
          const pipeline = redis.pipeline()
          for (const stream of streams) pipeline.xgroup("CREATE", stream, consumerGroup, "0", "MKSTREAM")
          for (const m of messages) pipeline.xadd(m.stream, "*", "runId", m.runId)
          return pipeline.exec()
        })
        const [groupReplies, addReplies] = [(results ?? []).slice(0, streams.length), (results ?? []).slice(streams.length)]
        for (const [error] of groupReplies) {
          if (error !== null && !error.message.includes("BUSYGROUP")) {
            return yield* new RedisUnavailable({ reason: `XGROUP CREATE: ${error.message}` })
          }
        }
        return yield* Effect.forEach(addReplies, ([error, id]) =>
          error === null && typeof id === "string"
            ? Effect.succeed(id)
            : Effect.fail(new RedisUnavailable({ reason: `XADD: ${error?.message ?? "no reply"}` })))
      })

      // Entries in a stream named otherwise (before streams carried a hash tag) are where no worker reads any more:
      // missing, so the reaper republishes their runs under the current name.
      const current = streamsUnder(config.redisPrefix)
      const missing = Effect.fnUntraced(function*(entries: ReadonlyArray<StreamEntry>) {
        const checked = entries.filter((e) => e.stream.startsWith(current))
        const results = checked.length === 0 ? [] : yield* call("XRANGE", () => {
          const pipeline = redis.pipeline()
          for (const e of checked) pipeline.xrange(e.stream, e.messageId, e.messageId)
          return pipeline.exec()
        })
        const gone = yield* Effect.forEach(results ?? [], ([error, found]) =>
          error === null
            ? Effect.succeed(!Array.isArray(found) || found.length === 0)
            : Effect.fail(new RedisUnavailable({ reason: `XRANGE: ${error.message}` })))
        return entries.map((e) => !e.stream.startsWith(current) || gone[checked.indexOf(e)] === true)
      })

      const ping = call("PING", () => redis.ping()).pipe(Effect.asVoid)

      // In the streams' hash slot (the same tag), so a Redis Cluster failover that loses them loses it too.
      const marker = `{${config.redisPrefix}}:alive`
      const dataLost = call("SET NX", () => redis.set(marker, new Date().toISOString(), "NX")).pipe(
        Effect.map((reply) => reply === "OK")
      )

      return RunStreams.of({ enabled: true, streamOf, publish, missing, ping, dataLost })
    })
  )
}
