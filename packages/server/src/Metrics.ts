/**
 * Prometheus metrics, named as operators of Aiki expect them (`aiki_workflows_started_total`, …), correct when
 * every replica is scraped and the series are summed. Run and task counters count the transitions this replica
 * commits (`recordCommitted`, from the post-commit hook: each committed transition once, by the replica that
 * committed it, however large the burst). The worker gauges describe the whole fleet, read from the database, so
 * only one replica at a time exports them (the holder of the `metrics_leader` lease).
 */
import { Effect, Layer, Metric } from "effect"
import { SqlClient } from "effect/sql"
import { randomUUID } from "node:crypto"
import { hostname } from "node:os"
import type { TransitionRecord } from "./internal/Ledger.ts"
import { background } from "./DatabaseReady.ts"
import { ServerConfig } from "./ServerConfig.ts"

export const workflowsStarted = Metric.counter("aiki_workflows_started_total", { description: "Workflow runs started" })
export const workflowsCompleted = Metric.counter("aiki_workflows_completed_total", {
  description: "Workflow runs completed"
})
export const workflowsFailed = Metric.counter("aiki_workflows_failed_total", { description: "Workflow runs failed" })
export const workflowsCancelled = Metric.counter("aiki_workflows_cancelled_total", {
  description: "Workflow runs cancelled"
})
export const workflowDuration = Metric.histogram("aiki_workflow_duration_seconds", {
  description: "Time from start to a terminal state",
  boundaries: Metric.exponentialBoundaries({ start: 0.005, factor: 2, count: 20 })
})
export const tasksStarted = Metric.counter("aiki_tasks_started_total", { description: "Task attempts started" })
export const tasksCompleted = Metric.counter("aiki_tasks_completed_total", { description: "Tasks completed" })
export const tasksFailed = Metric.counter("aiki_tasks_failed_total", { description: "Task attempts failed" })
export const tasksRetried = Metric.counter("aiki_tasks_retried_total", { description: "Task attempts to be retried" })
export const optimisticFallbacks = Metric.counter("aiki_optimistic_fallbacks_total", {
  description: "Groups of claims and worker writes decided again under locks (reason: moved, a run changed since it " +
    "was read; flow_control, a claim whose grant depends on flow-control counts)"
})
/** Counts a group that was decided optimistically and then had to take the locked path. */
export const recordFallback = (reason: "moved" | "flow_control") =>
  Metric.update(Metric.withAttributes(optimisticFallbacks, { reason }), 1)
export const workersActive = Metric.gauge("aiki_workers_active", { description: "Workers with a recent heartbeat" })
export const workersHeartbeatAge = Metric.gauge("aiki_workers_heartbeat_age_seconds", {
  description: "Seconds since each recent worker's last heartbeat"
})

/**
 * Counts what a commit changed (called by the post-commit hook of `RunTransitions`, so every committed transition
 * is counted exactly once, by the replica that committed it: counters of several replicas sum up correctly).
 */
export const recordCommitted = (committed: {
  readonly transitions: ReadonlyArray<TransitionRecord>
  /** Workflow names of the runs created. */
  readonly created: ReadonlyArray<string>
  readonly now: number
}) =>
  Effect.gen(function*() {
    if (committed.created.length > 0) yield* Metric.update(workflowsStarted, committed.created.length)
    for (const t of committed.transitions) {
      if (t.taskAddress === null) {
        const counter = t.to === "completed"
          ? workflowsCompleted
          : t.to === "failed"
          ? workflowsFailed
          : t.to === "cancelled"
          ? workflowsCancelled
          : undefined
        if (counter === undefined) continue
        yield* Metric.update(counter, 1)
        if (t.runCreatedAt !== null) {
          yield* Metric.update(workflowDuration, Math.max(0, committed.now - t.runCreatedAt.getTime()) / 1000)
        }
        continue
      }
      switch (t.to) {
        case "running":
          yield* Metric.update(tasksStarted, 1)
          break
        case "completed":
          yield* Metric.update(tasksCompleted, 1)
          break
        case "failed":
          yield* Metric.update(tasksFailed, 1)
          break
        case "retrying":
          yield* Metric.update(tasksRetried, 1)
          break
      }
    }
  })

/** How long the replica exporting the fleet gauges keeps that role without renewing it (every sample renews it). */
const leaderLeaseSeconds = 15

/**
 * Reads the fleet gauges from the database, on the one replica that holds the `metrics_leader` lease (taking it
 * when it is free or lapsed); on the others the gauges are removed, so a sum over replicas counts the fleet once.
 * Worker series that are no longer reported (a stale or departed worker) are removed too, not left at their last
 * value.
 */
const sampleWorkers = (holder: string, exported: Set<string>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const config = yield* ServerConfig
    const leading = yield* sql<{ readonly holder: string }>`
      INSERT INTO metrics_leader (id, holder, expires_at)
      VALUES (true, ${holder}, now() + make_interval(secs => ${leaderLeaseSeconds}))
      ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
      WHERE metrics_leader.holder = EXCLUDED.holder OR metrics_leader.expires_at < now()
      RETURNING holder`
    const rows = leading.length === 0 ? [] : yield* sql<{ readonly id: string; readonly age: number }>`
      SELECT id, EXTRACT(EPOCH FROM (now() - last_heartbeat_at))::float8 AS age FROM workers
      WHERE last_heartbeat_at > now() - make_interval(secs => ${config.workerStaleAfterMs / 1000})`
    const current = new Set(rows.map((row) => row.id))
    for (const id of exported) {
      if (!current.has(id)) yield* Metric.remove(Metric.withAttributes(workersHeartbeatAge, { worker_id: id }))
    }
    exported.clear()
    if (leading.length === 0) {
      yield* Metric.remove(workersActive)
      return false
    }
    yield* Metric.update(workersActive, rows.length)
    for (const row of rows) {
      yield* Metric.update(Metric.withAttributes(workersHeartbeatAge, { worker_id: row.id }), row.age)
      exported.add(row.id)
    }
    return true
  })

/**
 * Keeps the fleet gauges current for as long as the layer is alive; on shutdown the replica gives up exporting
 * them, so another one takes over at its next sample instead of when the lease lapses.
 */
export const layer = Layer.effectDiscard(Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const holder = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`
  const exported = new Set<string>()
  let leading = false
  // Bounded: a server stopping because its database is gone must not wait on it.
  yield* Effect.addFinalizer(() =>
    leading
      ? sql`DELETE FROM metrics_leader WHERE holder = ${holder}`.pipe(Effect.timeout("2 seconds"), Effect.ignore)
      : Effect.void
  )
  const sample = sampleWorkers(holder, exported).pipe(Effect.tap((held) => Effect.sync(() => (leading = held))))
  yield* background("Metrics", sample, { every: "5 seconds", failure: "Cannot sample worker metrics", level: "warning" })
}))
