/**
 * Receives run ids from Redis Streams: one consumer group for all workers, one blocking `XREADGROUP` over every
 * registered version's stream on a connection of its own (a blocking read on a shared connection stalls every
 * command queued behind it), never more entries than free capacity, fairly across streams; and `XAUTOCLAIM` of
 * entries left idle by a worker that died.
 *
 * Runs travel in priority bands (a stream per version and band): entries waiting in a higher band are read first
 * (non-blocking reads, highest band first), and only when every band is empty does the worker block on them all.
 */
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import { Cluster, Redis, type RedisCommander } from "ioredis"
import type { RedisOptions } from "../AikiClient.ts"
import * as Batcher from "./Batcher.ts"

export interface StreamEntry {
  readonly stream: string
  readonly id: string
  readonly runId: string
}

/** A stream to read and the priority band it carries (a server without bands sends none: one band). */
export interface BandStream {
  readonly stream: string
  readonly band?: "high" | "normal" | "low"
}

const bandOrder = ["high", "normal", "low"] as const

export interface RedisSubscriberOptions {
  readonly redis: RedisOptions
  readonly streams: ReadonlyArray<BandStream>
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
  /** Where the next read of each list of streams starts. */
  const rotations = new Map<ReadonlyArray<string>, number>()

  const call = <A>(f: () => Promise<A>) => Effect.tryPromise({ try: f, catch: (cause) => cause })

  const allStreams = options.streams.map((s) => s.stream)
  const bands = bandOrder.map((band) => options.streams.filter((s) => (s.band ?? "normal") === band).map((s) => s.stream))
    .filter((streams) => streams.length > 0)

  const ensureGroups = Effect.forEach(allStreams, (stream) =>
    call(() => commands.xgroup("CREATE", stream, options.group, "0", "MKSTREAM")).pipe(Effect.ignore), { discard: true })

  /** Reads up to `budget` new entries of `streams`, waiting up to `blockMs` for the first (not at all without it). */
  const readFrom = (streams: ReadonlyArray<string>, budget: number, blockMs: number | undefined) =>
    Effect.gen(function*() {
      // Start from a different stream each time; ask each for an equal share so the total never exceeds `budget`.
      const rotation = rotations.get(streams) ?? 0
      rotations.set(streams, (rotation + 1) % streams.length)
      const ordered = streams.map((_, i) => streams[(i + rotation) % streams.length]!)
      const chosen = ordered.slice(0, Math.min(budget, ordered.length))
      const count = Math.max(1, Math.floor(budget / chosen.length))
      const ids = chosen.map(() => ">")
      const reply = yield* call(() =>
        (blockMs === undefined
          ? reader.xreadgroup("GROUP", options.group, options.consumer, "COUNT", count, "STREAMS", ...chosen, ...ids)
          : reader.xreadgroup(
            "GROUP", options.group, options.consumer,
            "COUNT", count, "BLOCK", blockMs,
            "STREAMS", ...chosen, ...ids
          )) as Promise<Entries | null>
      ).pipe(
        Effect.catchIf(
          (error) => String(error).includes("NOGROUP"),
          // Redis lost its data (or the stream is new): recreate the group from the start and read again.
          () => Effect.as(ensureGroups, null)
        )
      )
      return (reply ?? []).flatMap(([stream, items]) => toEntries(stream, items))
    })

  /** Reads up to `free` new entries, the highest priority band first, waiting up to `blockTimeMs` for the first. */
  const read = (free: number) =>
    Effect.gen(function*() {
      if (allStreams.length === 0 || free <= 0) return []
      const budget = Math.min(free, options.maxBatchSize)
      if (bands.length > 1) {
        for (const band of bands) {
          const entries = yield* readFrom(band, budget, undefined)
          if (entries.length > 0) return entries
        }
      }
      return yield* readFrom(allStreams, budget, options.blockTimeMs)
    })

  /** Takes over entries another consumer left idle for `claimMinIdleTimeMs` (its worker died or hangs). */
  const reclaim = (free: number) =>
    Effect.gen(function*() {
      const claimed: Array<StreamEntry> = []
      for (const stream of allStreams) {
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
