/**
 * The dashboard finds a run by its idempotency key across every workflow; the unique index on
 * `(workflow_name, idempotency_key)` cannot serve a search without the workflow name.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE INDEX workflow_runs_by_idempotency_key ON workflow_runs (idempotency_key)
    WHERE idempotency_key IS NOT NULL`
})
