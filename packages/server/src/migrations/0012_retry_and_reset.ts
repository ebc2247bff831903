/**
 * Retrying and resetting runs by hand, durable workflow attempts, and flagged starts.
 *
 * A run counts its workflow attempts (`attempt`): the worker reads it with its lease and writes each new attempt of
 * the workflow's retry policy, so a takeover goes on counting instead of starting over. `policy_attempt` is the
 * attempt as the retry policy sees it: 1 again after a retry or reset by hand, which gives the run a fresh policy.
 *
 * A reset discards journal entries from a point on. They move to `discarded_tasks` (the entry with its attempts, as
 * JSON, and which reset of the run discarded it) rather than being deleted, so the run's history keeps them while
 * replays no longer see them; the addresses they held are free for the entries the run records again.
 *
 * `start_warning` says why a start was flagged (no worker had registered the version when it was started).
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    ALTER TABLE workflow_runs
      ADD COLUMN attempt integer NOT NULL DEFAULT 1,
      ADD COLUMN policy_attempt integer NOT NULL DEFAULT 1,
      ADD COLUMN resets integer NOT NULL DEFAULT 0,
      ADD COLUMN start_warning text`
  yield* sql`
    CREATE TABLE discarded_tasks (
      id           bigserial   PRIMARY KEY,
      run_id       uuid        NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
      reset        integer     NOT NULL,
      sequence     integer     NOT NULL,
      address      text        NOT NULL,
      entry        json        NOT NULL,
      discarded_at timestamptz NOT NULL DEFAULT now()
    )`
  yield* sql`CREATE INDEX discarded_tasks_by_run ON discarded_tasks (run_id, id)`
})
