/**
 * SQL fragments shared by the stores: the audit trail insert and the task journal read.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql"
import type { Fragment } from "effect/sql/Statement"
import { type TaskRow, toTask } from "./rows.ts"

export interface TransitionInput {
  readonly runId: string
  readonly taskAddress?: string | undefined
  readonly from: string | null
  readonly to: string
  readonly reason: string
  readonly leaseEpoch?: number | undefined
  readonly workerId?: string | undefined
}

/** Transition entries as the JSON that `insertTransitions` reads. */
export const transitionRows = (entries: ReadonlyArray<TransitionInput>) =>
  JSON.stringify(entries.map((e) => ({
    run_id: e.runId,
    task_address: e.taskAddress ?? null,
    from_state: e.from,
    to_state: e.to,
    reason: e.reason,
    lease_epoch: e.leaseEpoch ?? null,
    worker_id: e.workerId ?? null
  })))

/** `${insertTransitions} ${transitionRows(…)}::jsonb) AS t(${transitionColumns})`: entries into the audit trail. */
export const insertTransitions = `INSERT INTO transitions (run_id, task_address, from_state, to_state, reason, lease_epoch, worker_id)
    SELECT run_id, task_address, from_state, to_state, reason, lease_epoch, worker_id FROM jsonb_to_recordset(`
export const transitionColumns =
  "run_id uuid, task_address text, from_state text, to_state text, reason text, lease_epoch int, worker_id text"

/**
 * Appends entries to the audit trail and announces them on `aiki_runs` (see `RunNotifications`), in one statement
 * however many entries. Inside a transaction the announcement is delivered when it commits, and only then.
 */
export const recordTransitions = (sql: SqlClient.SqlClient, entries: ReadonlyArray<TransitionInput>) =>
  entries.length === 0 ? Effect.void : sql`
    WITH recorded AS (
      ${sql.literal(insertTransitions)} ${transitionRows(entries)}::jsonb) AS t(${sql.literal(transitionColumns)})
      RETURNING run_id, task_address, to_state
    ), ${sql.literal(announced)}
    SELECT count(*) FROM announced
  `.pipe(Effect.asVoid)

/**
 * The tail of a single-statement write: announces, on `aiki_runs`, the transitions that a CTE named `recorded`
 * inserted (`RETURNING run_id, task_address, to_state`). Select `(SELECT count(*) FROM announced)` in the main
 * query: an unreferenced SELECT CTE would not run.
 */
export const announced = `announced AS (
  SELECT pg_notify('aiki_runs', json_build_object('runId', run_id, 'task', task_address, 'state', to_state)::text)
  FROM recorded)`

/**
 * The `recorded` CTE of a single-statement task write: `entries` (see `transitionRows`) by the owner of the locked
 * CTE `run`, recorded only if the CTE `task` wrote something.
 */
export const recordedForTask = (sql: SqlClient.SqlClient, entries: string) =>
  sql`recorded AS (
    INSERT INTO transitions (run_id, task_address, from_state, to_state, reason, lease_epoch, worker_id)
    SELECT e.run_id, e.task_address, e.from_state, e.to_state, e.reason, e.lease_epoch, (SELECT lease_owner FROM run)
    FROM jsonb_to_recordset(${entries}::jsonb) AS e(${sql.literal(transitionColumns)})
    WHERE EXISTS (SELECT 1 FROM task)
    RETURNING run_id, task_address, to_state
  )`

/**
 * The attempts of the task at (`runId`, `address`) as the JSON array `TaskRow.attempts` reads: one shape for
 * every query that returns a task.
 */
export const attemptsJson = (sql: SqlClient.SqlClient, runId: Fragment | string, address: Fragment | string) =>
  sql`COALESCE((
    SELECT jsonb_agg(jsonb_build_object(
      'attempt', a.attempt, 'lease_epoch', a.lease_epoch, 'started_at', a.started_at,
      'finished_at', a.finished_at, 'error', a.error) ORDER BY a.attempt)
    FROM task_attempts a WHERE a.run_id = ${runId} AND a.address = ${address}
  ), '[]'::jsonb)`

/** The tasks of a run in the order they were first started, each with its attempts. */
export const selectTasks = (sql: SqlClient.SqlClient, runId: string, address?: string) =>
  sql<TaskRow>`
    SELECT t.address, t.sequence, t.name, t.state, t.payload, t.result, t.error, t.created_at, t.updated_at,
      ${attemptsJson(sql, sql`t.run_id`, sql`t.address`)} AS attempts
    FROM tasks t
    WHERE t.run_id = ${runId} ${address === undefined ? sql`` : sql`AND t.address = ${address}`}
    ORDER BY t.sequence, t.seq
  `.pipe(Effect.map((rows) => rows.map(toTask)))
