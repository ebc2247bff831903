/**
 * How long Aiki keeps what it no longer needs. Finished runs are kept `RETENTION_DAYS` after they finished (0 keeps
 * them for ever), then deleted oldest first in small batches with everything that belongs to them: tasks,
 * attempts, transitions, events and outbox rows cascade from the run. Outbox rows are not kept that long: once
 * published, a row matters only while it is the latest of a pending run (the reaper checks that entry is still in
 * its stream), so every other published row is removed as soon as it is seen.
 *
 * The cutoff is taken from `Clock` (tests shift it with `TestClock`): a few seconds of skew between replicas do not
 * matter at a scale of days. Several replicas may run it: rows are taken with `SKIP LOCKED`, and each batch is one
 * short statement, so no delete holds many locks for long.
 */
import { Clock, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { background } from "./DatabaseReady.ts"
import { ServerConfig } from "./ServerConfig.ts"

/** Runs deleted per statement: each takes its tasks, attempts, transitions, events and outbox rows along. */
export const runBatchSize = 100
/** Outbox rows deleted per statement. */
export const outboxBatchSize = 1_000
/** How often to look; a pass deletes batch after batch until nothing is left. */
const interval = "1 minute"

/** Deletes up to `limit` runs that finished more than `RETENTION_DAYS` ago; returns how many. */
export const deleteExpiredRuns = (limit: number = runBatchSize) =>
  Effect.gen(function*() {
    const config = yield* ServerConfig
    if (config.retentionDays === 0) return 0
    const sql = yield* SqlClient.SqlClient
    const cutoff = new Date((yield* Clock.currentTimeMillis) - config.retentionDays * 86_400_000)
    // The state list is spelled out (not a parameter) so the planner uses the partial index on finished runs.
    const deleted = yield* sql`
      DELETE FROM workflow_runs WHERE id IN (
        SELECT id FROM workflow_runs
        WHERE state IN ('completed', 'failed', 'cancelled') AND finished_at < ${cutoff}
        ORDER BY finished_at LIMIT ${limit} FOR UPDATE SKIP LOCKED)
      RETURNING id`
    return deleted.length
  }).pipe(Effect.orDie, Effect.withSpan("Retention.deleteExpiredRuns"))

/** Deletes up to `limit` published outbox rows that nothing reads any more; returns how many. */
export const deleteSettledOutbox = (limit: number = outboxBatchSize) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const deleted = yield* sql`
      DELETE FROM outbox WHERE id IN (
        SELECT o.id FROM outbox o JOIN workflow_runs r ON r.id = o.run_id
        WHERE o.published_at IS NOT NULL
          AND (r.state <> 'pending' OR EXISTS (SELECT 1 FROM outbox later WHERE later.run_id = o.run_id AND later.id > o.id))
        LIMIT ${limit} FOR UPDATE OF o SKIP LOCKED)
      RETURNING id`
    return deleted.length
  }).pipe(Effect.orDie, Effect.withSpan("Retention.deleteSettledOutbox"))

/** Repeats a batch until one comes back short; returns the total. */
export const drain = (batch: Effect.Effect<number, never, SqlClient.SqlClient | ServerConfig>, limit: number) =>
  Effect.gen(function*() {
    let total = 0
    while (true) {
      const n = yield* batch
      total += n
      if (n < limit) return total
    }
  })

/** The retention pass every minute, for as long as the layer is alive. */
export const layer = Layer.effectDiscard(Effect.gen(function*() {
  const pass = Effect.gen(function*() {
    const runs = yield* drain(deleteExpiredRuns(), runBatchSize)
    const outbox = yield* drain(deleteSettledOutbox(), outboxBatchSize)
    if (runs > 0 || outbox > 0) yield* Effect.logInfo("Retention removed old rows", { runs, outbox })
  })
  yield* background("Retention", pass, { every: interval, failure: "Retention pass failed" })
}))
