/**
 * The Redis Streams that hand runs to workers: one stream per workflow version (`<prefix>:workflow:<name>:<version>`),
 * read by workers through one consumer group. Redis is a transport, never the truth: losing it loses nothing that
 * the outbox and the reaper cannot put back. Without `REDIS_URL` the streams are disabled and workers use HTTP.
 */
import { Context, Data, Effect, Layer, Option, Redacted } from "effect"
import { Redis } from "ioredis"
import { ServerConfig } from "./ServerConfig.ts"

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

export class RunStreams extends Context.Service<RunStreams, {
  /** False when no Redis is configured: nothing is published and the outbox is not written. */
  readonly enabled: boolean
  readonly streamOf: (workflowName: string, workflowVersion: string) => string
  /** Appends one entry per message (creating streams and the group as needed); returns the entry ids in order. */
  readonly publish: (messages: ReadonlyArray<StreamMessage>) => Effect.Effect<ReadonlyArray<string>, RedisUnavailable>
  /** For each entry, whether it is gone from its stream (Redis lost it, or it was deleted). */
  readonly missing: (entries: ReadonlyArray<StreamEntry>) => Effect.Effect<ReadonlyArray<boolean>, RedisUnavailable>
  readonly ping: Effect.Effect<void, RedisUnavailable>
}>()("@aiki/server/RunStreams") {
  static readonly layer = Layer.effect(
    RunStreams,
    Effect.gen(function*() {
      const config = yield* ServerConfig
      const streamOf = (name: string, version: string) => `${config.redisPrefix}:workflow:${name}:${version}`
      const redisUrl = config.redisUrl
      if (Option.isNone(redisUrl)) {
        const disabled = Effect.fail(new RedisUnavailable({ reason: "REDIS_URL is not configured" }))
        return RunStreams.of({ enabled: false, streamOf, publish: () => disabled, missing: () => disabled, ping: disabled })
      }
      const redis = yield* Effect.acquireRelease(
        Effect.sync(() =>
          new Redis(Redacted.value(redisUrl.value), {
            // Fail commands at once while disconnected instead of queueing them: the outbox keeps the work.
            enableOfflineQueue: false,
            maxRetriesPerRequest: 1,
            connectTimeout: 2_000,
            lazyConnect: false
          })
        ),
        (client) => Effect.promise(() => client.quit().catch(() => client.disconnect()))
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

      const missing = Effect.fnUntraced(function*(entries: ReadonlyArray<StreamEntry>) {
        if (entries.length === 0) return []
        const results = yield* call("XRANGE", () => {
          const pipeline = redis.pipeline()
          for (const e of entries) pipeline.xrange(e.stream, e.messageId, e.messageId)
          return pipeline.exec()
        })
        return yield* Effect.forEach(results ?? [], ([error, found]) =>
          error === null
            ? Effect.succeed(!Array.isArray(found) || found.length === 0)
            : Effect.fail(new RedisUnavailable({ reason: `XRANGE: ${error.message}` })))
      })

      const ping = call("PING", () => redis.ping()).pipe(Effect.asVoid)

      return RunStreams.of({ enabled: true, streamOf, publish, missing, ping })
    })
  )
}
