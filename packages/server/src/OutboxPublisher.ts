/**
 * Drains the outbox into Redis Streams. Rows are taken with `FOR UPDATE SKIP LOCKED`, so several server replicas
 * share the work without publishing a row twice, and marked published in the same transaction that read them: if
 * Redis or the process fails before the commit, the rows are published again (at least once; a duplicate message
 * is harmless because claiming a run is itself fenced). While Redis is down it retries with backoff.
 */
import { Duration, Effect, Layer, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { Outbox } from "./Outbox.ts"
import { RunStreams } from "./RunStreams.ts"

/** Rows published per transaction. */
const batchSize = 500
/** How often to look without a wake-up (rows written by another replica). */
const pollInterval = Duration.millis(500)

/** Publishes one batch; returns how many rows it published. */
export const drainOnce = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const streams = yield* RunStreams
  return yield* sql.withTransaction(Effect.gen(function*() {
    const rows = yield* sql<{ readonly id: string; readonly run_id: string; readonly stream: string }>`
      SELECT id::text AS id, run_id, stream FROM outbox
      WHERE published_at IS NULL ORDER BY id LIMIT ${batchSize} FOR UPDATE SKIP LOCKED`
    if (rows.length === 0) return 0
    const messageIds = yield* streams.publish(rows.map((row) => ({ stream: row.stream, runId: row.run_id })))
    const published = JSON.stringify(rows.map((row, i) => ({ id: row.id, message_id: messageIds[i] })))
    yield* sql`
      UPDATE outbox o SET published_at = now(), message_id = p.message_id
      FROM jsonb_to_recordset(${published}::jsonb) AS p(id bigint, message_id text)
      WHERE o.id = p.id`
    return rows.length
  })).pipe(Effect.catchTag("SqlError", Effect.die))
}).pipe(Effect.withSpan("OutboxPublisher.drain"))

const retryWhileRedisIsDown = Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("5 seconds")])

/** The publisher loop, running for as long as the layer is alive. */
export const layer = Layer.effectDiscard(Effect.gen(function*() {
  const streams = yield* RunStreams
  if (!streams.enabled) return
  const outbox = yield* Outbox
  const drain = drainOnce.pipe(
    Effect.tapError((error) => Effect.logWarning("Outbox publisher cannot reach Redis; retrying", error.reason)),
    Effect.retry(retryWhileRedisIsDown)
  )
  const loop = Effect.gen(function*() {
    while (true) {
      const published = yield* drain
      if (published < batchSize) {
        yield* outbox.notified.pipe(Effect.timeoutOption(pollInterval))
      }
    }
  })
  // On shutdown, publish what is left while Redis is still there (bounded: the outbox keeps anything unsent).
  yield* Effect.addFinalizer(() =>
    drainOnce.pipe(Effect.repeat({ while: (n) => n === batchSize }), Effect.timeout("5 seconds"), Effect.ignore)
  )
  yield* loop.pipe(
    // A defect (the database is gone) must not end publishing for the life of the server.
    Effect.catchCause((cause) => Effect.logError("Outbox publisher failed; restarting", cause)),
    Effect.repeat(Schedule.spaced("1 second")),
    Effect.annotateLogs({ service: "OutboxPublisher" }),
    Effect.forkScoped
  )
}))
