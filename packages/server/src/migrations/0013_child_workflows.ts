/**
 * Child workflows: a run started by another run's `startChild` names its parent (and the journal entry that started
 * it, and what the parent's cancellation does to it); a parent parked in `awaiting_child` names the children whose
 * end wakes it. The index finds a parent's children (its cancellation cascades, the API lists them).
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE workflow_runs
    ADD COLUMN parent_run_id uuid REFERENCES workflow_runs (id) ON DELETE SET NULL,
    ADD COLUMN parent_close_policy text CHECK (parent_close_policy IN ('cancel', 'abandon')),
    ADD COLUMN awaiting_children uuid[]`
  yield* sql`CREATE INDEX workflow_runs_parent ON workflow_runs (parent_run_id) WHERE parent_run_id IS NOT NULL`
})
