/**
 * Events sent to runs (approvals, webhooks, signals): kept until a `waitForEvent` of the run consumes them, each
 * at most once (`consumed_by` is the journal entry that received it).
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE TABLE run_events (
      id          bigserial   PRIMARY KEY,
      run_id      uuid        NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
      name        text        NOT NULL,
      payload     jsonb       NOT NULL,
      sent_at     timestamptz NOT NULL DEFAULT now(),
      consumed_by text,
      consumed_at timestamptz
    )`
  yield* sql`CREATE INDEX run_events_waiting ON run_events (run_id, name, id) WHERE consumed_by IS NULL`
})
