/**
 * Execution core v2: the order in which a run's outcomes were delivered to its code (replay delivers them in that
 * order), due times of waiting entries, the replay semantics each run is pinned to, the events a parked run waits
 * for, and a short liveness lease per worker (a dead worker's runs are taken over without waiting for their own
 * leases).
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE tasks ADD COLUMN outcome_order integer`
  yield* sql`ALTER TABLE tasks ADD COLUMN not_before timestamptz`
  yield* sql`ALTER TABLE workflow_runs ADD COLUMN replay_version integer`
  yield* sql`ALTER TABLE workflow_runs ADD COLUMN awaiting_events text[]`
  // Runs executed before outcome orders were recorded replay with version 1 (outcomes in call order).
  yield* sql`UPDATE workflow_runs SET replay_version = 1 WHERE started_at IS NOT NULL`
  yield* sql`ALTER TABLE workers ADD COLUMN alive_until timestamptz`
})
