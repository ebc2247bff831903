/**
 * Recovery and timers, with Postgres as the truth. Each tick:
 * - runs whose lease lapsed (their worker died or hangs) go back to `pending` and are requeued;
 * - suspended runs that are due (a long retry delay or a sleep passed) go back to `pending` and are requeued;
 * - pending runs whose stream entry is gone (Redis restarted empty, an entry was lost) are republished, and so are
 *   pending runs that were never published (Redis was not configured when they started).
 * Several replicas may run it: rows are taken with `SKIP LOCKED` and every change is an idempotent requeue.
 */
import { Effect, Layer, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { recordTransitions } from "./internal/sql.ts"
import { Outbox, type RunnableRun } from "./Outbox.ts"
import { RunStreams } from "./RunStreams.ts"
import { ServerConfig } from "./ServerConfig.ts"

const batchSize = 500

interface RequeuedRow {
  readonly id: string
  readonly workflow_name: string
  readonly workflow_version: string
  readonly lease_epoch: number
}

const runnable = (row: RequeuedRow): RunnableRun => ({
  id: row.id,
  workflowName: row.workflow_name,
  workflowVersion: row.workflow_version
})

/** Requeues runs whose lease expired; returns how many. */
export const requeueExpiredLeases = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const outbox = yield* Outbox
  const requeued = yield* sql.withTransaction(Effect.gen(function*() {
    const rows = yield* sql<RequeuedRow & { readonly owner: string | null }>`
      WITH expired AS (
        SELECT id, lease_owner FROM workflow_runs
        WHERE state = 'running' AND lease_expires_at < now()
        ORDER BY lease_expires_at LIMIT ${batchSize} FOR UPDATE SKIP LOCKED
      )
      UPDATE workflow_runs r
      SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
      FROM expired WHERE r.id = expired.id
      RETURNING r.id, r.workflow_name, r.workflow_version, r.lease_epoch, expired.lease_owner AS owner`
    yield* recordTransitions(sql, rows.map((row) => ({
      runId: row.id,
      from: "running",
      to: "pending",
      reason: "lease_expired",
      leaseEpoch: row.lease_epoch,
      ...(row.owner !== null ? { workerId: row.owner } : {})
    })))
    yield* outbox.enqueue(rows.map(runnable))
    return rows.length
  })).pipe(Effect.orDie)
  if (requeued > 0) {
    yield* outbox.notify
    yield* Effect.logInfo("Requeued runs whose lease expired", { count: requeued })
  }
  return requeued
}).pipe(Effect.withSpan("Reaper.requeueExpiredLeases"))

/** Wakes suspended runs that are due (a retry delay or a sleep has passed): pending again, requeued. */
export const wakeDueRuns = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const outbox = yield* Outbox
  const woken = yield* sql.withTransaction(Effect.gen(function*() {
    const rows = yield* sql<RequeuedRow & { readonly previous_state: string }>`
      WITH due AS (
        SELECT id, state FROM workflow_runs
        WHERE state IN ('sleeping', 'awaiting_event', 'awaiting_child', 'awaiting_retry') AND wake_at <= now()
        ORDER BY wake_at LIMIT ${batchSize} FOR UPDATE SKIP LOCKED
      )
      UPDATE workflow_runs r SET state = 'pending', wake_at = NULL, updated_at = now()
      FROM due WHERE r.id = due.id
      RETURNING r.id, r.workflow_name, r.workflow_version, r.lease_epoch, due.state AS previous_state`
    yield* recordTransitions(sql, rows.map((row) => ({
      runId: row.id,
      from: row.previous_state,
      to: "pending",
      reason: "woken"
    })))
    yield* outbox.enqueue(rows.map(runnable))
    return rows.length
  })).pipe(Effect.orDie)
  if (woken > 0) yield* outbox.notify
  return woken
}).pipe(Effect.withSpan("Reaper.wakeDueRuns"))

/** Republishes pending runs whose stream entry is gone or was never written; returns how many. */
export const republishLostRuns = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const outbox = yield* Outbox
  const streams = yield* RunStreams
  const config = yield* ServerConfig
  if (!streams.enabled) return 0
  const olderThan = config.republishAfterMs / 1000
  const republished = yield* sql.withTransaction(Effect.gen(function*() {
    // The latest outbox row of each pending run that has waited long enough and was not checked recently.
    const candidates = yield* sql<RequeuedRow & {
      readonly outbox_id: string | null
      readonly stream: string | null
      readonly message_id: string | null
      readonly published_at: Date | null
    }>`
      SELECT r.id, r.workflow_name, r.workflow_version, r.lease_epoch,
        o.id::text AS outbox_id, o.stream, o.message_id, o.published_at
      FROM workflow_runs r
      LEFT JOIN LATERAL (
        SELECT * FROM outbox WHERE outbox.run_id = r.id ORDER BY id DESC LIMIT 1
      ) o ON true
      WHERE r.state = 'pending'
        AND r.updated_at < now() - make_interval(secs => ${olderThan})
        AND (o.id IS NULL OR (o.published_at IS NOT NULL
          AND COALESCE(o.verified_at, o.published_at) < now() - make_interval(secs => ${olderThan})))
      ORDER BY COALESCE(o.verified_at, o.published_at) NULLS FIRST
      LIMIT ${batchSize}
      FOR UPDATE OF r SKIP LOCKED`
    if (candidates.length === 0) return 0
    const published = candidates.filter((c) => c.message_id !== null && c.stream !== null)
    const gone = yield* streams.missing(published.map((c) => ({ stream: c.stream!, messageId: c.message_id! })))
    const lost = [
      ...candidates.filter((c) => c.outbox_id === null),
      ...published.filter((_, i) => gone[i] === true)
    ]
    const present = published.filter((_, i) => gone[i] !== true).map((c) => c.outbox_id)
    if (present.length > 0) {
      yield* sql`UPDATE outbox SET verified_at = now() WHERE id::text IN ${sql.in(present)}`
    }
    yield* outbox.enqueue(lost.map(runnable))
    return lost.length
  })).pipe(Effect.catchTag("SqlError", Effect.die))
  if (republished > 0) {
    yield* outbox.notify
    yield* Effect.logInfo("Republished pending runs whose stream entry was lost", { count: republished })
  }
  return republished
}).pipe(Effect.withSpan("Reaper.republishLostRuns"))

/** Runs the checks every `REAPER_INTERVAL_MS` for as long as the layer is alive. */
export const layer = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* ServerConfig
  const tick = Effect.all([
    requeueExpiredLeases,
    wakeDueRuns,
    republishLostRuns.pipe(
      Effect.catchTag("RedisUnavailable", (e) => Effect.logWarning("Reaper cannot check Redis streams", e.reason))
    )
  ]).pipe(
    Effect.catchCause((cause) => Effect.logError("Reaper tick failed", cause)),
    Effect.annotateLogs({ service: "Reaper" })
  )
  yield* tick.pipe(Effect.repeat(Schedule.spaced(`${config.reaperIntervalMs} millis`)), Effect.forkScoped)
}))
