/**
 * Reads of run journals shared by the stores: a task with its attempts has one shape in every query.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql"
import type { Fragment } from "effect/sql/Statement"
import { type TaskRow, toTask } from "./rows.ts"

/**
 * `values` as a Postgres array literal, to bind as one parameter cast to an array type: `= ANY(${pgArray(ids)}::uuid[])`.
 * Unlike a set-returning function over a JSON parameter (which the planner takes for 100 rows), such a condition
 * lets it look the rows up by index however small the table, and costs nothing when the array is empty.
 */
export const pgArray = (values: ReadonlyArray<string | number>) =>
  `{${values.map((v) => typeof v === "number" ? String(v) : `"${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`).join(",")}}`

/**
 * The attempts of the task at (`runId`, `address`) as the JSON array `TaskRow.attempts` reads: one shape for
 * every query that returns a task.
 */
export const attemptsJson = (sql: SqlClient.SqlClient, runId: Fragment | string, address: Fragment | string) =>
  sql`COALESCE((
    SELECT json_agg(json_build_object(
      'attempt', a.attempt, 'lease_epoch', a.lease_epoch, 'started_at', a.started_at,
      'finished_at', a.finished_at, 'error', a.error, 'timeout_at', a.timeout_at,
      'heartbeat_timeout_ms', a.heartbeat_timeout_ms, 'heartbeat_at', a.heartbeat_at,
      'heartbeat_details', a.heartbeat_details) ORDER BY a.attempt)
    FROM task_attempts a WHERE a.run_id = ${runId} AND a.address = ${address}
  ), '[]'::json)`

const taskColumns = (sql: SqlClient.SqlClient) =>
  sql`t.run_id, t.address, t.sequence, t.name, t.state, t.payload, t.result, t.error, t.outcome_order, t.not_before,
    t.created_at, t.updated_at, ${attemptsJson(sql, sql`t.run_id`, sql`t.address`)} AS attempts`

/** The tasks of a run in the order its code called them, each with its attempts (or just the one at `address`). */
export const selectTasks = (sql: SqlClient.SqlClient, runId: string, address?: string) =>
  sql<TaskRow>`
    SELECT ${taskColumns(sql)}
    FROM tasks t
    WHERE t.run_id = ${runId} ${address === undefined ? sql`` : sql`AND t.address = ${address}`}
    ORDER BY t.sequence, t.seq
  `.pipe(Effect.map((rows) => rows.map(toTask)))

/** The journals of several runs at once (claims grant many runs in one request). */
export const selectJournals = (sql: SqlClient.SqlClient, runIds: ReadonlyArray<string>) =>
  runIds.length === 0 ? Effect.succeed(new Map<string, Array<ReturnType<typeof toTask>>>()) : sql<TaskRow & { readonly run_id: string }>`
    SELECT ${taskColumns(sql)}
    FROM tasks t
    WHERE t.run_id = ANY(${pgArray(runIds)}::uuid[])
    ORDER BY t.run_id, t.sequence, t.seq
  `.pipe(Effect.map((rows) => {
    const journals = new Map<string, Array<ReturnType<typeof toTask>>>(runIds.map((id) => [id, []]))
    for (const row of rows) journals.get(row.run_id)?.push(toTask(row))
    return journals
  }))
