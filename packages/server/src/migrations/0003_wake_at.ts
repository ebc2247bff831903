/**
 * When a suspended run (a long retry delay, a sleep) is to be woken; the reaper finds due ones by this index.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE workflow_runs ADD COLUMN wake_at timestamptz`
  yield* sql`CREATE INDEX workflow_runs_due ON workflow_runs (wake_at)
    WHERE state IN ('sleeping', 'awaiting_event', 'awaiting_child', 'awaiting_retry')`
})
