/**
 * SQL fragments shared by the stores: the audit trail insert and the task journal read.
 */
import { Effect } from "effect"
import type { SqlClient } from "effect/sql"
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

/**
 * Appends entries to the audit trail and announces them on `aiki_runs` (see `RunNotifications`), in one statement
 * however many entries. Inside a transaction the announcement is delivered when it commits, and only then.
 */
export const recordTransitions = (sql: SqlClient.SqlClient, entries: ReadonlyArray<TransitionInput>) =>
  entries.length === 0 ? Effect.void : sql`
    WITH recorded AS (
    INSERT INTO transitions (run_id, task_address, from_state, to_state, reason, lease_epoch, worker_id)
    SELECT run_id, task_address, from_state, to_state, reason, lease_epoch, worker_id
    FROM jsonb_to_recordset(${JSON.stringify(entries.map((e) => ({
    run_id: e.runId,
    task_address: e.taskAddress ?? null,
    from_state: e.from,
    to_state: e.to,
    reason: e.reason,
    lease_epoch: e.leaseEpoch ?? null,
    worker_id: e.workerId ?? null
  })))}::jsonb)
      AS t(run_id uuid, task_address text, from_state text, to_state text, reason text, lease_epoch int, worker_id text)
    RETURNING run_id, task_address, to_state
    )
    SELECT pg_notify('aiki_runs', json_build_object('runId', run_id, 'task', task_address, 'state', to_state)::text)
    FROM recorded
  `.pipe(Effect.asVoid)

/** The tasks of a run in the order they were first started, each with its attempts. */
export const selectTasks = (sql: SqlClient.SqlClient, runId: string, address?: string) =>
  sql<TaskRow>`
    SELECT t.address, t.sequence, t.name, t.state, t.payload, t.result, t.error, t.created_at, t.updated_at,
      COALESCE((
        SELECT jsonb_agg(jsonb_build_object(
          'attempt', a.attempt, 'lease_epoch', a.lease_epoch, 'started_at', a.started_at,
          'finished_at', a.finished_at, 'error', a.error) ORDER BY a.attempt)
        FROM task_attempts a WHERE a.run_id = t.run_id AND a.address = t.address
      ), '[]'::jsonb) AS attempts
    FROM tasks t
    WHERE t.run_id = ${runId} ${address === undefined ? sql`` : sql`AND t.address = ${address}`}
    ORDER BY t.sequence, t.seq
  `.pipe(Effect.map((rows) => rows.map(toTask)))
