/**
 * Retention deletes finished runs oldest first (an index on `finished_at` of final runs) and, with them, their
 * events by cascade: `run_events` had no index on `run_id` alone, so each cascading delete would scan the table.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE INDEX workflow_runs_finished ON workflow_runs (finished_at)
    WHERE state IN ('completed', 'failed', 'cancelled')`
  yield* sql`CREATE INDEX run_events_by_run ON run_events (run_id)`
})
