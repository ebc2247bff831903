/**
 * A run's revision: one more with every committed change to the run, its journal entries, their attempts or its
 * events (`Ledger.write`, `flowControl.writeFlow`). A worker's writes may then be decided on rows read without a
 * lock and written by one statement that applies only if no run it touches moved meanwhile (see
 * `RunTransitions`, "Optimistic writes").
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE workflow_runs ADD COLUMN revision bigint NOT NULL DEFAULT 0`
})
