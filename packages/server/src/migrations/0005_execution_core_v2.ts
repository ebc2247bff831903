/**
 * Execution core v2: the order in which a run's outcomes were delivered to its code (replay delivers them in that
 * order), due times of waiting entries, the replay semantics each run is pinned to, the events a parked run waits
 * for, and a short liveness lease per worker (a dead worker's runs are taken over without waiting for their own
 * leases).
 *
 * Payloads, results and errors become `json` (their text as written) instead of `jsonb`: `jsonb` reorders object
 * keys, so a replay would see `{"code", "name"}` where the first execution saw `{"name", "code"}` — and code that
 * depends on key order (`JSON.stringify`, `Object.keys`) would depart from its journal.
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
  for (const [table, columns] of [
    ["workflow_runs", ["payload", "result", "error"]],
    ["tasks", ["payload", "result", "error"]],
    ["task_attempts", ["error"]],
    ["run_events", ["payload"]]
  ] as const) {
    for (const column of columns) {
      yield* sql.unsafe(`ALTER TABLE ${table} ALTER COLUMN ${column} TYPE json USING ${column}::json`)
    }
  }
})
