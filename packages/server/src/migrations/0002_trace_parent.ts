/**
 * The trace a run was started in (a W3C `traceparent`), so the worker that executes it continues that trace.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE workflow_runs ADD COLUMN trace_parent text`
})
