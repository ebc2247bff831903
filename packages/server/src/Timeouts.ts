/**
 * The timeout sweep: every `TIMEOUT_SWEEP_INTERVAL_MS`, with the database's clock, it finds
 * - open task attempts past their start-to-close deadline or their heartbeat timeout, and
 * - unfinished runs past their execution deadline, and pending runs never claimed past their schedule-to-start
 *   deadline,
 * and hands them to `RunTransitions`, which re-checks each under its lock and fails it (the attempt with
 * `TaskTimedOut`, the run `failed` with its `failureReason`) and tells the worker holding it. Being the server's, the
 * timeouts hold whether the worker is alive, hung or gone; several replicas may sweep at once.
 */
import type { RunId } from "@aiki/contract/Ids"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { background } from "./DatabaseReady.ts"
import { RunTransitions } from "./RunTransitions.ts"
import { ServerConfig } from "./ServerConfig.ts"

const batchSize = 500

/** Fails open attempts of running runs that are past a deadline; returns how many. */
export const timeOutAttempts = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const transitions = yield* RunTransitions
  const overdue = yield* sql<{ readonly run_id: RunId; readonly address: string; readonly attempt: number }>`
    SELECT a.run_id, a.address, a.attempt FROM task_attempts a JOIN workflow_runs r ON r.id = a.run_id
    WHERE a.finished_at IS NULL AND r.state = 'running'
      AND (a.timeout_at <= now()
        OR COALESCE(a.heartbeat_at, a.started_at) + make_interval(secs => a.heartbeat_timeout_ms / 1000.0) <= now())
    LIMIT ${batchSize}`.pipe(Effect.orDie)
  const failed = yield* transitions.timeOutAttempts(
    overdue.map((a) => ({ runId: a.run_id, address: a.address, attempt: a.attempt }))
  )
  if (failed > 0) yield* Effect.logInfo("Failed task attempts past their timeout", { count: failed })
  return failed
}).pipe(Effect.withSpan("Timeouts.timeOutAttempts"))

/** Fails runs past their execution deadline, or never claimed by their schedule-to-start deadline; returns how many. */
export const timeOutRuns = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const transitions = yield* RunTransitions
  const overdue = yield* sql<{ readonly id: RunId }>`
    (SELECT id FROM workflow_runs WHERE deadline_at <= now() AND finished_at IS NULL LIMIT ${batchSize})
    UNION
    (SELECT id FROM workflow_runs WHERE start_deadline_at <= now() AND started_at IS NULL AND state = 'pending'
      LIMIT ${batchSize})`.pipe(Effect.orDie)
  const failed = yield* transitions.timeOutRuns(overdue.map((r) => r.id))
  if (failed > 0) yield* Effect.logInfo("Failed runs past their timeout", { count: failed })
  return failed
}).pipe(Effect.withSpan("Timeouts.timeOutRuns"))

/** Sweeps every `TIMEOUT_SWEEP_INTERVAL_MS` for as long as the layer is alive. */
export const layer = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* ServerConfig
  yield* background("Timeouts", Effect.all([timeOutAttempts, timeOutRuns]), {
    every: `${config.timeoutSweepIntervalMs} millis`,
    failure: "Timeout sweep failed"
  })
}))
