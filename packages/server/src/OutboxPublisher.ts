/**
 * Publishes the outbox into Redis Streams. The fast path sends the rows each commit hands over (`Outbox.publishNow`)
 * at once, so a run that became runnable reaches a worker without waiting for a poll. The sweep finds every row
 * that is still unpublished a moment later (Redis was down, the process died after the commit, another replica
 * wrote it), taken with `FOR UPDATE SKIP LOCKED` so replicas share the work, and retries with backoff while Redis is
 * down. A row is at least once in its stream; a duplicate message is harmless because claiming a run is fenced.
 */
import { Duration, Effect, Layer, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { background } from "./DatabaseReady.ts"
import { Outbox, type OutboxRow } from "./Outbox.ts"
import { RunStreams } from "./RunStreams.ts"

/** Rows published per sweep transaction. */
const batchSize = 500
/** How long a row may wait for the fast path before the sweep takes it. */
const sweepAfter = Duration.seconds(2)

/** Marks rows published with their stream entry ids (the reaper checks those entries still exist). */
const markPublished = (sql: SqlClient.SqlClient, rows: ReadonlyArray<OutboxRow>, messageIds: ReadonlyArray<string>) =>
  sql`
    UPDATE outbox o SET published_at = now(), message_id = p.message_id
    FROM jsonb_to_recordset(${JSON.stringify(rows.map((row, i) => ({ id: row.id, message_id: messageIds[i] })))}::jsonb)
      AS p(id bigint, message_id text)
    WHERE o.id = p.id`

/** Publishes one batch of rows left unpublished; returns how many. */
export const sweepOnce = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const streams = yield* RunStreams
  return yield* sql.withTransaction(Effect.gen(function*() {
    const rows = yield* sql<{ readonly id: string; readonly run_id: string; readonly stream: string }>`
      SELECT id::text AS id, run_id, stream FROM outbox
      WHERE published_at IS NULL AND created_at < now() - make_interval(secs => ${Duration.toSeconds(sweepAfter)})
      ORDER BY id LIMIT ${batchSize} FOR UPDATE SKIP LOCKED`
    if (rows.length === 0) return 0
    const outboxRows = rows.map((row) => ({ id: row.id, runId: row.run_id, stream: row.stream }))
    yield* markPublished(sql, outboxRows, yield* streams.publish(outboxRows))
    return rows.length
  })).pipe(Effect.catchTag("SqlError", Effect.die))
}).pipe(Effect.withSpan("OutboxPublisher.sweep"))

const retryWhileRedisIsDown = Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("5 seconds")])

/** The publisher, running for as long as the layer is alive. */
export const layer = Layer.effectDiscard(Effect.gen(function*() {
  const streams = yield* RunStreams
  if (!streams.enabled) return
  const outbox = yield* Outbox
  const sql = yield* SqlClient.SqlClient

  const fastPath = Effect.gen(function*() {
    while (true) {
      const rows = yield* outbox.fresh
      // A failure leaves the rows to the sweep: nothing is lost, only delayed.
      yield* streams.publish(rows).pipe(
        Effect.flatMap((messageIds) => markPublished(sql, rows, messageIds).pipe(Effect.orDie)),
        Effect.catchTag("RedisUnavailable", (error) => Effect.logWarning("Cannot publish runs to Redis; the sweep retries", error.reason))
      )
    }
  })

  const sweep = Effect.gen(function*() {
    while (true) {
      const published = yield* sweepOnce.pipe(
        Effect.tapError((error) => Effect.logWarning("Outbox sweep cannot reach Redis; retrying", error.reason)),
        Effect.retry(retryWhileRedisIsDown)
      )
      if (published < batchSize) yield* Effect.sleep("1 second")
    }
  })

  // On shutdown, publish what is left while Redis is still there (bounded: the outbox keeps anything unsent).
  yield* Effect.addFinalizer(() =>
    sweepOnce.pipe(Effect.repeat({ while: (n) => n === batchSize }), Effect.timeout("5 seconds"), Effect.ignore)
  )
  for (const loop of [fastPath, sweep]) {
    yield* background("OutboxPublisher", loop, { every: "1 second", failure: "Outbox publisher failed; restarting" })
  }
}))
