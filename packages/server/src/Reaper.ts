/**
 * Recovery and timers, with Postgres as the truth. Each tick:
 * - runs whose lease lapsed, or whose worker stopped renewing its liveness, go back to `pending` (unless this server
 *   is in its grace period after an outage, see `LeaseGrace`);
 * - parked runs that are due (a sleep or a retry delay passed) go back to `pending`;
 * - parents parked waiting for a child that ended are woken, and children of cancelled parents are cancelled (both
 *   follow the child's or the parent's commit at once; the reaper catches what a process dying in between lost);
 * - pending runs whose stream entry is gone (an entry was lost) get a new one after `REPUBLISH_AFTER_MS`;
 * - and every second: when Redis lost all its data (restarted empty), every pending run gets a new entry at once.
 * Runs flow control holds back have no entry until they are offered again (`FlowOffers`): none is republished.
 * The reaper only finds candidates; `RunTransitions` re-checks each one under its lock, so several replicas may
 * reap at once and a run that changed in between is left alone.
 */
import type { RunId } from "@aiki/contract/Ids"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { background } from "./DatabaseReady.ts"
import { LeaseGrace } from "./LeaseGrace.ts"
import { Outbox } from "./Outbox.ts"
import { RunStreams } from "./RunStreams.ts"
import { RunTransitions } from "./RunTransitions.ts"
import { ServerConfig } from "./ServerConfig.ts"

const batchSize = 500

/** Requeues runs whose lease lapsed or whose worker is gone; returns how many. */
export const requeueLapsed = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const transitions = yield* RunTransitions
  const grace = yield* LeaseGrace
  if (!(yield* grace.leasesMayLapse)) return 0
  const candidates = yield* sql<{ readonly id: RunId }>`
    SELECT r.id FROM workflow_runs r LEFT JOIN workers w ON w.id = r.lease_owner
    WHERE r.state = 'running' AND (r.lease_expires_at < now() OR w.alive_until < now())
    ORDER BY r.lease_expires_at LIMIT ${batchSize}`.pipe(Effect.orDie)
  const requeued = yield* transitions.requeueLapsed(candidates.map((c) => c.id))
  if (requeued > 0) yield* Effect.logInfo("Requeued runs whose lease lapsed or whose worker is gone", { count: requeued })
  return requeued
}).pipe(Effect.withSpan("Reaper.requeueLapsed"))

/** Wakes parked runs that are due; returns how many. */
export const wakeDueRuns = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const transitions = yield* RunTransitions
  const due = yield* sql<{ readonly id: RunId }>`
    SELECT id FROM workflow_runs
    WHERE state IN ('sleeping', 'awaiting_event', 'awaiting_child', 'awaiting_retry') AND wake_at <= now()
    ORDER BY wake_at LIMIT ${batchSize}`.pipe(Effect.orDie)
  return yield* transitions.wakeDue(due.map((d) => d.id))
}).pipe(Effect.withSpan("Reaper.wakeDueRuns"))

/**
 * Wakes parked parents whose awaited child has ended. The child's commit wakes its parent through the post-commit
 * hook at once; this finds the wake-ups a process that died right after that commit never submitted.
 */
export const wakeParents = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const transitions = yield* RunTransitions
  const ended = yield* sql<{ readonly parent_run_id: RunId; readonly child_run_id: RunId }>`
    SELECT p.id AS parent_run_id, c.id AS child_run_id
    FROM workflow_runs p JOIN workflow_runs c ON c.id = ANY(p.awaiting_children)
    WHERE p.state IN ('sleeping', 'awaiting_event', 'awaiting_child', 'awaiting_retry') AND p.awaiting_children IS NOT NULL
      AND c.state IN ('completed', 'failed', 'cancelled')
    LIMIT ${batchSize}`.pipe(Effect.orDie)
  return yield* transitions.wakeParents(ended.map((e) => ({ parentRunId: e.parent_run_id, childRunId: e.child_run_id })))
}).pipe(Effect.withSpan("Reaper.wakeParents"))

/** Cancels unfinished children (policy `cancel`) of cancelled parents that the post-commit hook did not reach. */
export const cascadeCancels = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const transitions = yield* RunTransitions
  const orphans = yield* sql<{ readonly id: RunId }>`
    SELECT c.id FROM workflow_runs c JOIN workflow_runs p ON p.id = c.parent_run_id
    WHERE c.parent_run_id IS NOT NULL AND c.parent_close_policy = 'cancel'
      AND c.state NOT IN ('completed', 'failed', 'cancelled') AND p.state = 'cancelled'
    LIMIT ${batchSize}`.pipe(Effect.orDie)
  return yield* transitions.cancelChildren(orphans.map((o) => o.id))
}).pipe(Effect.withSpan("Reaper.cascadeCancels"))

/** A pending run with its latest outbox row (none when it was never published). */
interface Candidate {
  readonly id: string
  readonly workflow_name: string
  readonly workflow_version: string
  readonly outbox_id: string | null
  readonly stream: string | null
  readonly message_id: string | null
  readonly priority: number
}

const candidateColumns = `r.id, r.workflow_name, r.workflow_version, r.priority, o.id::text AS outbox_id, o.stream, o.message_id`
const latestOutbox = `LEFT JOIN LATERAL (SELECT * FROM outbox WHERE outbox.run_id = r.id ORDER BY id DESC LIMIT 1) o ON true`

/** Republishes those of `candidates` whose entry is gone (or was never written); marks the others checked. */
const republishGone = (candidates: ReadonlyArray<Candidate>) =>
  Effect.gen(function*() {
    if (candidates.length === 0) return 0
    const sql = yield* SqlClient.SqlClient
    const outbox = yield* Outbox
    const streams = yield* RunStreams
    const published = candidates.filter((c) => c.message_id !== null && c.stream !== null)
    const gone = yield* streams.missing(published.map((c) => ({ stream: c.stream!, messageId: c.message_id! })))
    const lost = [...candidates.filter((c) => c.outbox_id === null), ...published.filter((_, i) => gone[i] === true)]
    const present = published.filter((_, i) => gone[i] !== true).map((c) => c.outbox_id!)
    if (present.length > 0) {
      yield* sql`UPDATE outbox SET verified_at = now() WHERE id::text IN ${sql.in(present)}`.pipe(Effect.orDie)
    }
    yield* outbox.republish(
      lost.map((c) => ({ id: c.id, workflowName: c.workflow_name, workflowVersion: c.workflow_version, priority: c.priority }))
    )
    return lost.length
  })

/** Republishes pending runs whose stream entry is gone or was never written; returns how many. */
export const republishLostRuns = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const streams = yield* RunStreams
  const config = yield* ServerConfig
  if (!streams.enabled) return 0
  const olderThan = config.republishAfterMs / 1000
  // Pending runs that have waited long enough and were not checked recently, least recently checked first.
  const candidates = yield* sql<Candidate>`
    SELECT ${sql.literal(candidateColumns)} FROM workflow_runs r ${sql.literal(latestOutbox)}
    WHERE r.state = 'pending' AND r.waiting_reason IS NULL
      AND r.updated_at < now() - make_interval(secs => ${olderThan})
      AND (o.id IS NULL OR (o.published_at IS NOT NULL
        AND COALESCE(o.verified_at, o.published_at) < now() - make_interval(secs => ${olderThan})))
    ORDER BY COALESCE(o.verified_at, o.published_at) NULLS FIRST
    LIMIT ${batchSize}`.pipe(Effect.orDie)
  const republished = yield* republishGone(candidates)
  if (republished > 0) yield* Effect.logInfo("Republished pending runs whose stream entry was lost", { count: republished })
  return republished
}).pipe(Effect.withSpan("Reaper.republishLostRuns"))

/**
 * When Redis lost its data (restarted empty), checks the entry of every pending run at once — not after
 * `REPUBLISH_AFTER_MS` — and republishes those that are gone; returns how many.
 */
export const republishAfterDataLoss = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const streams = yield* RunStreams
  if (!streams.enabled || !(yield* streams.dataLost)) return 0
  let republished = 0
  let after = "00000000-0000-0000-0000-000000000000"
  while (true) {
    const page = yield* sql<Candidate>`
      SELECT ${sql.literal(candidateColumns)} FROM workflow_runs r ${sql.literal(latestOutbox)}
      WHERE r.state = 'pending' AND r.waiting_reason IS NULL AND r.id > ${after}
      ORDER BY r.id LIMIT ${batchSize}`.pipe(Effect.orDie)
    republished += yield* republishGone(page)
    if (page.length < batchSize) break
    after = page[page.length - 1]!.id
  }
  if (republished > 0) {
    yield* Effect.logWarning("Redis had lost its data: republished the pending runs whose entries were gone", { count: republished })
  }
  return republished
}).pipe(Effect.withSpan("Reaper.republishAfterDataLoss"))

/** Runs the checks every `REAPER_INTERVAL_MS` for as long as the layer is alive. */
export const layer = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* ServerConfig
  const tick = Effect.all([
    requeueLapsed,
    wakeDueRuns,
    wakeParents,
    cascadeCancels,
    republishLostRuns.pipe(
      Effect.catchTag("RedisUnavailable", (e) => Effect.logWarning("Reaper cannot check Redis streams", e.reason))
    )
  ])
  yield* background("Reaper", tick, { every: `${config.reaperIntervalMs} millis`, failure: "Reaper tick failed" })
  // Losing Redis's data is noticed within a second, not after `REPUBLISH_AFTER_MS`.
  yield* background("Reaper", republishAfterDataLoss.pipe(Effect.catchTag("RedisUnavailable", () => Effect.succeed(0))), {
    every: "1 second",
    failure: "Checking Redis for lost data failed"
  })
}))
