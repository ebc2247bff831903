/**
 * Which server replica exports the gauges read from the database (the fleet of workers): one row, held by a
 * replica for a short lease it keeps renewing, so that several replicas do not each report the same fleet.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE metrics_leader (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    holder text NOT NULL,
    expires_at timestamptz NOT NULL
  )`
})
