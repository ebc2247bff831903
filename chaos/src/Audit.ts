/**
 * The verdict on a chaos run, from three witnesses: the database (read by `readRecords`, the one place with SQL,
 * so a schema change is adapted here only), the side-effect log the tasks wrote, and the log of kills.
 *
 * - every run started is in the database, terminal, `completed`, with exactly the expected result;
 * - no task has more than one completed outcome;
 * - a task executed more than once is justified only when the execution it repeats was in flight at a kill that
 *   explains losing it: its own worker was SIGKILLed while it ran, or the server its worker talks to (or
 *   Postgres) was down while it ran or shortly after (`outageShadowMs`: a lease that lapsed during the outage
 *   stays lapsed until the worker's next heartbeat gets through). A Redis restart justifies nothing: Redis only
 *   carries run ids;
 * - every execution's attempt is in the database, unless a kill explains that its start never got there (a start
 *   may travel with the task's later writes; the next execution then takes the same attempt number).
 */
import { isDeepStrictEqual } from "node:util"
import { Effect } from "effect"
import type { SqlClient } from "effect/sql"
import { type Execution, expectedResult, taskNames } from "./ChaosWorkflow.ts"
import type { Kill, KillKind } from "./Deployment.ts"

export interface RunRecord {
  readonly id: string
  readonly idempotencyKey: string | null
  readonly state: string
  readonly result: unknown
  readonly error: unknown
}

export interface TaskRecord {
  readonly runId: string
  readonly name: string
  readonly state: string
  /** Completed outcomes recorded for the task: the most of its `completed` transitions and its successful attempts. */
  readonly completions: number
}

export interface AttemptRecord {
  readonly runId: string
  readonly name: string
  readonly attempt: number
  readonly startedAt: number
  readonly finishedAt: number | null
  /** The error that ended it (`LeaseLost` when a later attempt closed it). */
  readonly error: string | null
}

/** The server took a run from a worker: its lease lapsed, or the worker stopped being heard from. */
export interface ExpiryRecord {
  readonly runId: string
  readonly workerId: string | null
  readonly at: number
  /** As the audit trail says it (`lease_expired`, `worker_gone`). */
  readonly reason: string
}

export interface Records {
  readonly runs: ReadonlyArray<RunRecord>
  readonly tasks: ReadonlyArray<TaskRecord>
  readonly attempts: ReadonlyArray<AttemptRecord>
  readonly expiries: ReadonlyArray<ExpiryRecord>
}

/** Everything the verdict needs from the database, for the runs of `workflowName`. */
export const readRecords = (sql: SqlClient.SqlClient, workflowName: string) =>
  Effect.all({
    runs: sql<RunRecord>`
      SELECT id::text AS id, idempotency_key AS "idempotencyKey", state, result, error
      FROM workflow_runs WHERE workflow_name = ${workflowName}`,
    tasks: sql<TaskRecord>`
      SELECT t.run_id::text AS "runId", t.name, t.state, GREATEST(
        (SELECT count(*) FROM transitions tr
          WHERE tr.run_id = t.run_id AND tr.task_address = t.address AND tr.to_state = 'completed'),
        (SELECT count(*) FROM task_attempts a
          WHERE a.run_id = t.run_id AND a.address = t.address AND a.finished_at IS NOT NULL AND a.error IS NULL)
      )::int AS completions
      FROM tasks t JOIN workflow_runs r ON r.id = t.run_id WHERE r.workflow_name = ${workflowName}`,
    attempts: sql<AttemptRecord>`
      SELECT a.run_id::text AS "runId", t.name, a.attempt,
        (extract(epoch FROM a.started_at) * 1000)::float8 AS "startedAt",
        (extract(epoch FROM a.finished_at) * 1000)::float8 AS "finishedAt",
        a.error->>'message' AS error
      FROM task_attempts a
      JOIN tasks t ON t.run_id = a.run_id AND t.address = a.address
      JOIN workflow_runs r ON r.id = a.run_id WHERE r.workflow_name = ${workflowName}`,
    expiries: sql<ExpiryRecord>`
      SELECT tr.run_id::text AS "runId", tr.worker_id AS "workerId", (extract(epoch FROM tr.at) * 1000)::float8 AS at,
        tr.reason
      FROM transitions tr JOIN workflow_runs r ON r.id = tr.run_id
      WHERE r.workflow_name = ${workflowName} AND tr.task_address IS NULL AND tr.reason IN ('lease_expired', 'worker_gone')`
  }, { concurrency: "unbounded" })

/** A run the harness asked for: its idempotency key, its payload, and its id once a start was answered. */
export interface Expected {
  readonly key: string
  readonly n: number
  readonly runId: string | undefined
}

export interface Verdict {
  readonly runs: number
  readonly completed: number
  /** Completed with exactly the expected result. */
  readonly exact: number
  /** Failed or cancelled. */
  readonly failed: number
  /** Never started, missing from the database, or not terminal when the harness gave up waiting. */
  readonly unfinished: number
  readonly tasksCompletedTwice: number
  readonly executions: number
  readonly reExecutions: number
  readonly justified: Readonly<Record<KillKind, number>>
  readonly unjustified: number
  /** One line per finding; empty when every invariant holds. */
  readonly violations: ReadonlyArray<string>
}

const key = (runId: string, task: string) => `${runId} ${task}`

export const judge = (input: {
  readonly expected: ReadonlyArray<Expected>
  readonly records: Records
  readonly executions: ReadonlyArray<Execution>
  readonly kills: ReadonlyArray<Kill>
  /** How long after a server or Postgres outage a lapsed lease may still cost a re-execution. */
  readonly outageShadowMs: number
  readonly replicaOf: (workerId: string) => number | undefined
  /** Times in findings are shown relative to this (ms since the epoch). */
  readonly origin: number
}): Verdict => {
  const { executions, kills, records } = input
  const violations: Array<string> = []
  const at = (ms: number) => `${((ms - input.origin) / 1000).toFixed(3)}s`

  // Runs.
  const byKey = new Map(records.runs.map((run) => [run.idempotencyKey, run]))
  let completed = 0
  let exact = 0
  let failed = 0
  let unfinished = 0
  for (const { key: idempotencyKey, n, runId } of input.expected) {
    const run = byKey.get(idempotencyKey)
    if (run === undefined) {
      unfinished++
      violations.push(runId === undefined
        ? `run ${idempotencyKey}: never started (every start request failed)`
        : `run ${idempotencyKey} (${runId}): started but not in the database`)
      continue
    }
    if (runId !== undefined && run.id !== runId) {
      violations.push(`run ${idempotencyKey}: started as ${runId}, but the database has ${run.id} for the key`)
    }
    switch (run.state) {
      case "completed":
        completed++
        if (isDeepStrictEqual(run.result, expectedResult(n))) exact++
        else violations.push(`run ${idempotencyKey} (${run.id}): result ${JSON.stringify(run.result)}, expected ${JSON.stringify(expectedResult(n))}`)
        break
      case "failed":
      case "cancelled":
        failed++
        violations.push(`run ${idempotencyKey} (${run.id}): ${run.state}: ${JSON.stringify(run.error)}`)
        break
      default:
        unfinished++
        violations.push(`run ${idempotencyKey} (${run.id}): still ${run.state}`)
    }
  }
  const keys = new Set(input.expected.map((e) => e.key))
  for (const run of records.runs) {
    if (run.idempotencyKey === null || !keys.has(run.idempotencyKey)) {
      violations.push(`run ${run.id}: in the database but never asked for (key ${run.idempotencyKey})`)
    }
  }

  // Tasks: one completed outcome each, and every completed run's tasks really ran.
  let tasksCompletedTwice = 0
  for (const task of records.tasks) {
    if (task.completions > 1) {
      tasksCompletedTwice++
      violations.push(`task ${task.name} of run ${task.runId}: completed ${task.completions} times`)
    }
  }
  const ran = new Map<string, Array<Execution>>()
  for (const execution of [...executions].sort((a, b) => a.at - b.at)) {
    const list = ran.get(key(execution.runId, execution.task)) ?? []
    list.push(execution)
    ran.set(key(execution.runId, execution.task), list)
  }
  for (const run of records.runs) {
    if (run.state !== "completed") continue
    for (const name of taskNames) {
      if (!ran.has(key(run.id, name))) violations.push(`task ${name} of run ${run.id}: completed, but no execution was recorded`)
    }
  }

  // Every execution is accounted for: repeated only when a kill explains losing the one before, and recorded in
  // the database unless a kill explains that its start never got there (a start may travel with a later write).
  const attempts = new Map(records.attempts.map((a) => [`${key(a.runId, a.name)} ${a.attempt}`, a]))
  const claims = new Map<string, number>()
  for (const e of executions) {
    const k = `${key(e.runId, e.task)} ${e.attempt}`
    claims.set(k, (claims.get(k) ?? 0) + 1)
  }
  const justified: Record<KillKind, number> = { worker: 0, server: 0, redis: 0, postgres: 0 }
  let unjustified = 0
  const overlaps = (kill: Kill, from: number, to: number) => kill.at <= to && from <= kill.back + input.outageShadowMs
  /** The kill that explains losing `execution`, in flight from its start until `end`. */
  const explanation = (execution: Execution, end: number): Kill | undefined =>
    kills.find((kill) => kill.kind === "worker" && kill.target === execution.workerId && execution.at <= kill.at && kill.at <= end) ??
      kills.find((kill) =>
        kill.kind === "server" && `server-${input.replicaOf(execution.workerId)}` === kill.target &&
        overlaps(kill, execution.at, end)
      ) ??
      kills.find((kill) => kill.kind === "postgres" && overlaps(kill, execution.at, end))
  for (const list of ran.values()) {
    for (let i = 0; i < list.length; i++) {
      const execution = list[i]!
      const next = list[i + 1]
      const k = `${key(execution.runId, execution.task)} ${execution.attempt}`
      // The database's attempt of this number, when no other execution claims the same number.
      const attempt = claims.get(k) === 1 ? attempts.get(k) : undefined
      const describe = `task ${execution.task} of run ${execution.runId}: attempt ${execution.attempt} on ` +
        `${execution.workerId} (${at(execution.at)}` +
        (attempt?.finishedAt != null ? `–${at(attempt.finishedAt)}, ${attempt.error ?? "completed"}` : "") + ")"
      if (next === undefined) {
        if (attempts.has(k) || explanation(execution, Infinity) !== undefined) continue
        violations.push(`${describe} ran, but the database has no such attempt and no kill explains it (a committed start lost?)`)
        continue
      }
      // A completed attempt was in flight until it completed; anything else until it was repeated.
      const end = attempt?.finishedAt != null && attempt.error === null ? attempt.finishedAt : next.at
      const kill = explanation(execution, end)
      if (kill !== undefined) {
        justified[kill.kind]++
        continue
      }
      unjustified++
      // Not justified, but maybe attributable: the server took the run from a worker that was alive.
      const expiry = records.expiries.find((e) =>
        e.runId === execution.runId && e.workerId === execution.workerId && execution.at <= e.at && e.at <= next.at
      )
      violations.push(
        `${describe} ran again as attempt ${next.attempt} on ${next.workerId} at ${at(next.at)}; no kill explains it` +
          (expiry === undefined
            ? ""
            : ` (the server took the run from ${execution.workerId} at ${at(expiry.at)}, ${expiry.reason}, while it was alive)`)
      )
    }
  }

  return {
    runs: input.expected.length,
    completed,
    exact,
    failed,
    unfinished,
    tasksCompletedTwice,
    executions: executions.length,
    reExecutions: executions.length - ran.size,
    justified,
    unjustified,
    violations
  }
}
