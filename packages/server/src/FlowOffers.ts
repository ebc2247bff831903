/**
 * Offers runs held back by flow control again, so that a waiting run is handed to a worker once it may run:
 * - at once, when a committed change gave a slot back (a run holding a concurrency key or a workflow slot stopped
 *   running) or passed a turn on (a run with an ordering key finished): the next waiting run of that key or
 *   workflow — as many as slots were freed, highest priority then oldest first; a workflow's slots go to the key
 *   with the fewest runs running, so that one busy key cannot starve the others;
 * - every `FLOW_SWEEP_INTERVAL_MS`: runs whose wait ran out (a debounce delay, a rate-limit window; at most the
 *   limit per bucket), and runs a crash left waiting although their key has room (the offer after the commit is in
 *   memory; the sweep is what makes it durable). A run seen waiting with room for it is offered only when a later
 *   sweep, `confirmAfterMs` on, still sees it so: the offer that follows a commit takes milliseconds, and a sweep
 *   that came in between must not offer the same slot to a second run.
 *
 * An offer clears the run's wait and gives it a stream entry in one transaction (`RunTransitions.offer`); the claim
 * that follows decides again, so an offer that lost a race only puts the run back to waiting.
 */
import type { RunId } from "@aiki/contract/Ids"
import { Clock, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { background } from "./DatabaseReady.ts"
import { FlowControl, type Freed } from "./FlowControl.ts"
import { versionKey } from "./internal/flowControl.ts"
import { RunTransitions } from "./RunTransitions.ts"
import { ServerConfig } from "./ServerConfig.ts"

const unfinished = "('pending', 'running', 'sleeping', 'awaiting_event', 'awaiting_child', 'awaiting_retry')"

/** The waiting runs that the slots and turns in `freed` let go, offered again; returns how many. */
export const offerFreed = Effect.fnUntraced(function*(freed: ReadonlyArray<Freed>) {
  const sql = yield* SqlClient.SqlClient
  const flow = yield* FlowControl
  const transitions = yield* RunTransitions
  const policies = yield* flow.policies(freed.map((f) => ({ name: f.workflowName, version: f.workflowVersion })))
  const count = <K extends string>(keys: ReadonlyArray<K>) => {
    const counts = new Map<K, number>()
    for (const k of keys) counts.set(k, (counts.get(k) ?? 0) + 1)
    return counts
  }
  const byKey = count(freed.flatMap((f) => f.concurrencyKey === null ? [] : [JSON.stringify([f.workflowName, f.concurrencyKey])]))
  // Only runs that held a slot of a limited workflow give one back (a finished turn frees none).
  const byWorkflow = count(freed.flatMap((f) =>
    f.slot && policies.get(versionKey(f.workflowName, f.workflowVersion))?.workflowLimit !== undefined ? [f.workflowName] : []
  ))
  const orders = [...new Set(freed.flatMap((f) => f.orderingKey === null ? [] : [JSON.stringify([f.workflowName, f.orderingKey])]))]
  if (byKey.size === 0 && byWorkflow.size === 0 && orders.length === 0) return 0
  const keys = [...byKey].map(([k, n]) => {
    const [name, key] = JSON.parse(k) as [string, string]
    return { name, key, n }
  })
  const workflows = [...byWorkflow].map(([name, n]) => ({ name, n }))
  const turns = orders.map((k) => {
    const [name, key] = JSON.parse(k) as [string, string]
    return { name, key }
  })
  const rows = yield* sql<{ readonly id: RunId }>`
    SELECT o.id FROM jsonb_to_recordset(${JSON.stringify(keys)}::jsonb) AS f(name text, key text, n int)
    JOIN LATERAL (
      SELECT w.id FROM workflow_runs w
      WHERE w.workflow_name = f.name AND w.concurrency_key = f.key AND w.state = 'pending'
        AND w.waiting_reason = 'concurrency_limit'
      ORDER BY w.priority DESC, w.id LIMIT f.n) o ON true
    UNION
    SELECT o.id FROM jsonb_to_recordset(${JSON.stringify(workflows)}::jsonb) AS f(name text, n int)
    JOIN LATERAL (
      SELECT w.id FROM workflow_runs w
      WHERE w.workflow_name = f.name AND w.state = 'pending' AND w.waiting_reason = 'workflow_limit'
      ORDER BY w.priority DESC,
        (SELECT count(*) FROM workflow_runs r
          WHERE r.workflow_name = w.workflow_name AND r.concurrency_key = w.concurrency_key AND r.state = 'running'),
        w.id
      LIMIT f.n) o ON true
    UNION
    SELECT h.id FROM jsonb_to_recordset(${JSON.stringify(turns)}::jsonb) AS f(name text, key text)
    JOIN LATERAL (
      SELECT w.id, w.waiting_reason FROM workflow_runs w
      WHERE w.workflow_name = f.name AND w.ordering_key = f.key AND w.state IN ${sql.literal(unfinished)}
      ORDER BY w.id LIMIT 1) h ON h.waiting_reason IS NOT NULL`.pipe(Effect.orDie)
  return yield* transitions.offer(rows.map((r) => r.id))
})

/** How long a run must be seen waiting with room for it before the sweep offers it. */
const confirmAfterMs = (sweepIntervalMs: number) => Math.max(2_000, 2 * sweepIntervalMs)

/**
 * A sweep: offers runs whose wait ran out, and runs left waiting although they may run (the offer after a commit
 * was lost with its server) once a later sweep confirms it; returns how many it offered. One replica sweeps at a
 * time. Each sweeper remembers the runs it saw waiting with room, and since when.
 */
export const makeSweep = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const transitions = yield* RunTransitions
  const config = yield* ServerConfig
  const suspects = new Map<RunId, number>()
  return Effect.gen(function*() {
    // Slots are taken by running runs and by runs about to be claimed (offered, or never held back).
    const taking = sql.literal(`(r.state = 'running' OR (r.state = 'pending' AND r.waiting_reason IS NULL))`)
    const rows = yield* sql.withTransaction(sql<{ readonly id: RunId; readonly due: boolean }>`
      WITH turn AS (SELECT pg_try_advisory_xact_lock(hashtextextended('aiki:flow-sweep', 0)) AS mine),
      waiting AS (
        SELECT w.id, w.workflow_name, w.concurrency_key, w.concurrency_limit, w.ordering_key, w.rate_limit_key,
          w.waiting_reason, w.waiting_until, w.priority, v.flow_control
        FROM workflow_runs w
        LEFT JOIN workflow_versions v ON v.workflow_name = w.workflow_name AND v.version = w.workflow_version
        WHERE w.state = 'pending' AND w.waiting_reason IS NOT NULL AND (SELECT mine FROM turn)
      ), keys AS (
        SELECT k.workflow_name, k.concurrency_key, (SELECT count(*) FROM workflow_runs r
          WHERE r.workflow_name = k.workflow_name AND r.concurrency_key = k.concurrency_key AND ${taking}) AS running
        FROM (SELECT DISTINCT workflow_name, concurrency_key FROM waiting WHERE waiting_reason = 'concurrency_limit') k
      ), workflows AS (
        SELECT k.workflow_name, (SELECT count(*) FROM workflow_runs r WHERE r.workflow_name = k.workflow_name AND ${taking})
          AS running
        FROM (SELECT DISTINCT workflow_name FROM waiting WHERE waiting_reason = 'workflow_limit') k
      )
      SELECT id, true AS due FROM waiting WHERE waiting_reason = 'debounce' AND waiting_until <= now()
      UNION ALL
      SELECT id, true FROM (
        SELECT id, row_number() OVER (PARTITION BY workflow_name, rate_limit_key ORDER BY priority DESC, id) AS place,
          COALESCE((flow_control->'rateLimit'->>'limit')::int, 1) AS room
        FROM waiting WHERE waiting_reason = 'rate_limit' AND waiting_until <= now()) r
      WHERE place <= room
      UNION ALL
      SELECT id, false FROM (
        SELECT w.id, row_number() OVER (PARTITION BY w.workflow_name, w.concurrency_key ORDER BY w.priority DESC, w.id) AS place,
          COALESCE(w.concurrency_limit, (w.flow_control->>'concurrencyLimit')::int, 2147483647) - k.running AS room
        FROM waiting w JOIN keys k USING (workflow_name, concurrency_key)
        WHERE w.waiting_reason = 'concurrency_limit') c
      WHERE place <= room
      UNION ALL
      SELECT id, false FROM (
        SELECT w.id, row_number() OVER (PARTITION BY w.workflow_name ORDER BY w.priority DESC, w.id) AS place,
          COALESCE((w.flow_control->>'workflowLimit')::int, 2147483647) - k.running AS room
        FROM waiting w JOIN workflows k USING (workflow_name)
        WHERE w.waiting_reason = 'workflow_limit') g
      WHERE place <= room
      UNION ALL
      SELECT w.id, false FROM waiting w
      WHERE w.waiting_reason = 'ordering' AND NOT EXISTS (
        SELECT 1 FROM workflow_runs o WHERE o.workflow_name = w.workflow_name AND o.ordering_key = w.ordering_key
          AND o.id < w.id AND o.state IN ${sql.literal(unfinished)})
      LIMIT 1000`).pipe(Effect.orDie)
    const now = yield* Clock.currentTimeMillis
    const seen = new Set(rows.filter((r) => !r.due).map((r) => r.id))
    for (const id of suspects.keys()) if (!seen.has(id)) suspects.delete(id)
    for (const id of seen) if (!suspects.has(id)) suspects.set(id, now)
    const confirmed = [...seen].filter((id) => now - suspects.get(id)! >= confirmAfterMs(config.flowSweepIntervalMs))
    for (const id of confirmed) suspects.delete(id)
    return yield* transitions.offer([...new Set([...rows.filter((r) => r.due).map((r) => r.id), ...confirmed])])
  }).pipe(Effect.withSpan("FlowOffers.sweep"))
})

/** Offers after commits, and the sweep, for as long as the layer is alive. */
export const layer = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* ServerConfig
  const flow = yield* FlowControl
  const sweep = yield* makeSweep
  const afterCommits = Effect.gen(function*() {
    while (true) yield* offerFreed(yield* flow.taken)
  })
  yield* background("FlowOffers", afterCommits, { every: "1 second", failure: "Flow control offers failed; restarting" })
  yield* background("FlowOffers", sweep, {
    every: `${config.flowSweepIntervalMs} millis`,
    failure: "Flow control sweep failed",
    delayFirst: true
  })
}))
