/**
 * Timeouts and poison runs.
 *
 * Task attempts keep their deadlines, so the server's sweep can fail an overdue attempt with its own clock: the
 * start-to-close deadline (`timeout_at`), and the heartbeat timeout with the last heartbeat (its details too).
 * Runs keep their execution deadline (`deadline_at`), their schedule-to-start deadline (`start_deadline_at`), why the
 * server failed them (`failure_reason`), and how many times in a row their lease lapsed without progress (`lapses`).
 * A version may declare an execution timeout for its runs (`workflow_versions.execution_timeout_ms`).
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    ALTER TABLE task_attempts
      ADD COLUMN timeout_at timestamptz,
      ADD COLUMN heartbeat_timeout_ms integer,
      ADD COLUMN heartbeat_at timestamptz,
      ADD COLUMN heartbeat_details json`
  yield* sql`
    ALTER TABLE workflow_runs
      ADD COLUMN deadline_at timestamptz,
      ADD COLUMN start_deadline_at timestamptz,
      ADD COLUMN failure_reason text CHECK (failure_reason IN ('timed_out', 'poisoned', 'schedule_to_start_timed_out')),
      ADD COLUMN lapses integer NOT NULL DEFAULT 0`
  yield* sql`ALTER TABLE workflow_versions ADD COLUMN execution_timeout_ms bigint`
  // What the sweep looks for: open attempts with a deadline, unfinished runs with one.
  yield* sql`CREATE INDEX task_attempts_open_deadlines ON task_attempts (run_id)
    WHERE finished_at IS NULL AND (timeout_at IS NOT NULL OR heartbeat_timeout_ms IS NOT NULL)`
  yield* sql`CREATE INDEX workflow_runs_deadline ON workflow_runs (deadline_at)
    WHERE deadline_at IS NOT NULL AND finished_at IS NULL`
  yield* sql`CREATE INDEX workflow_runs_start_deadline ON workflow_runs (start_deadline_at)
    WHERE start_deadline_at IS NOT NULL AND started_at IS NULL`
})
