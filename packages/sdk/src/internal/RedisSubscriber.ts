/**
 * Receives run ids from Redis Streams: one consumer group for all workers, one blocking `XREADGROUP` over every
 * registered version's stream on a connection of its own (a blocking read on a shared connection stalls every
 * command queued behind it), never more entries than free capacity, fairly across streams; and `XAUTOCLAIM` of
 * entries left idle by a worker that died.
 */
import { Effect, Schedule } from "effect"
import { Cluster, Redis, type RedisCommander } from "ioredis"
import type { RedisOptions } from "../AikiClient.ts"
import * as Batcher from "./Batcher.ts"

export interface StreamEntry {
  readonly stream: string
  readonly id: string
  readonly runId: string
}

export interface RedisSubscriberOptions {
  readonly redis: RedisOptions
  readonly streams: ReadonlyArray<string>
  readonly group: string
  readonly consumer: string
  readonly blockTimeMs: number
  readonly claimMinIdleTimeMs: number
  readonly maxBatchSize: number
}

/** A connection to one server, or to a cluster. Streams share one hash tag (the server's prefix), so every command keeps to one slot. */
const connect = (options: RedisOptions) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const common = {
        maxRetriesPerRequest: null,
        ...(options.username !== undefined ? { username: options.username } : {}),
        ...(options.password !== undefined ? { password: options.password } : {}),
        ...(options.tls === true ? { tls: {} } : typeof options.tls === "object" ? { tls: options.tls } : {})
      }
      const redis = options.cluster !== undefined
        ? new Cluster([...options.cluster.nodes], { redisOptions: common })
        : options.url !== undefined
        ? new Redis(options.url, common)
        : new Redis({ host: options.host ?? "localhost", port: options.port ?? 6379, ...common })
      redis.on("error", () => {})
      return redis
    }),
    (redis) => Effect.sync(() => redis.disconnect())
  )

type Entries = Array<[string, Array<[string, Array<string>]>]>

const toEntries = (stream: string, items: Array<[string, Array<string>]>): Array<StreamEntry> =>
  items.flatMap(([id, fields]) => {
    const at = fields.indexOf("runId")
    const runId = at >= 0 ? fields[at + 1] : undefined
    return runId === undefined ? [] : [{ stream, id, runId }]
  })

/** Opens the connections for the current scope and returns the subscriber's operations. */
export const make = Effect.fnUntraced(function*(options: RedisSubscriberOptions) {
  const commands = yield* connect(options.redis)
  // Typed by the interface both clients implement: the union of their XCLAIM overloads does not resolve.
  const commander: RedisCommander = commands
  const reader = yield* connect(options.redis)
  let rotation = 0

  const call = <A>(f: () => Promise<A>) => Effect.tryPromise({ try: f, catch: (cause) => cause })

  const ensureGroups = Effect.forEach(options.streams, (stream) =>
    call(() => commands.xgroup("CREATE", stream, options.group, "0", "MKSTREAM")).pipe(Effect.ignore), { discard: true })

  /** Reads up to `free` new entries, waiting up to `blockTimeMs` for the first. */
  const read = (free: number) =>
    Effect.gen(function*() {
      const streams = options.streams
      if (streams.length === 0 || free <= 0) return []
      const budget = Math.min(free, options.maxBatchSize)
      // Start from a different stream each time; ask each for an equal share so the total never exceeds `budget`.
      const ordered = streams.map((_, i) => streams[(i + rotation) % streams.length]!)
      rotation = (rotation + 1) % streams.length
      const chosen = ordered.slice(0, Math.min(budget, ordered.length))
      const count = Math.max(1, Math.floor(budget / chosen.length))
      const reply = yield* call(() =>
        reader.xreadgroup(
          "GROUP", options.group, options.consumer,
          "COUNT", count, "BLOCK", options.blockTimeMs,
          "STREAMS", ...chosen, ...chosen.map(() => ">")
        ) as Promise<Entries | null>
      ).pipe(
        Effect.catchIf(
          (error) => String(error).includes("NOGROUP"),
          // Redis lost its data (or the stream is new): recreate the group from the start and read again.
          () => Effect.as(ensureGroups, null)
        )
      )
      return (reply ?? []).flatMap(([stream, items]) => toEntries(stream, items))
    })

  /** Takes over entries another consumer left idle for `claimMinIdleTimeMs` (its worker died or hangs). */
  const reclaim = (free: number) =>
    Effect.gen(function*() {
      const claimed: Array<StreamEntry> = []
      for (const stream of options.streams) {
        const budget = Math.min(free, options.maxBatchSize) - claimed.length
        if (budget <= 0) break
        const reply = yield* call(() =>
          commands.xautoclaim(stream, options.group, options.consumer, options.claimMinIdleTimeMs, "0-0", "COUNT", budget) as Promise<
            [string, Array<[string, Array<string>]>, Array<string>]
          >
        ).pipe(Effect.orElseSucceed(() => undefined))
        if (reply !== undefined) claimed.push(...toEntries(stream, reply[1]))
      }
      return claimed
    })

  // Entries finished while one acknowledgement is on its way go together in one pipeline.
  const acknowledgements = yield* Batcher.make({
    maxItems: 1_000,
    send: (entries: ReadonlyArray<StreamEntry>) =>
      call(() => {
        const pipeline = commands.pipeline()
        for (const entry of entries) pipeline.xack(entry.stream, options.group, entry.id).xdel(entry.stream, entry.id)
        return pipeline.exec()
      }).pipe(Effect.retry(Schedule.recurs(3)), Effect.ignore, Effect.as(entries.map(() => undefined)))
  })

  /**
   * Done with an entry: acknowledged and deleted (so the reaper can tell a lost entry from a pending one). Not
   * waited for: a lost acknowledgement only lets the entry be delivered again, and that claim is refused.
   */
  const done = (entry: StreamEntry) => Effect.asVoid(acknowledgements.submit(entry))

  /** Resets the idle time of entries still being worked on, so no other worker reclaims them. */
  const touch = (entries: ReadonlyArray<StreamEntry>) =>
    Effect.forEach(entries, (entry) =>
      call(() => commander.xclaim(entry.stream, options.group, options.consumer, 0, entry.id, "JUSTID")).pipe(Effect.ignore), {
      discard: true
    })

  yield* ensureGroups
  return { read, reclaim, done, touch }
})

export type RedisSubscriber = Effect.Success<ReturnType<typeof make>>
