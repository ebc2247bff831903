/**
 * Room on each page of `workflow_runs` for a run's next versions. A running run's row changes with every write of
 * its worker (the revision, at least) while no indexed column does, so Postgres can update it in place (a HOT
 * update: no new entry in any of the table's ~20 indexes) — but only if the new version fits on the row's page.
 * Filled to the brim (the default, 100%), the pages of freshly started runs had no room: in a burst of 2,000 runs
 * (~4 run updates each) only ~1 in 4 updates was HOT, the rest wrote new entries into the run's indexes and moved
 * the row to another page. At 70% about half are (all but the claim and the completion, which change the run's
 * state, an indexed column); the burst writes ~5% less WAL and a smaller table (docs/architecture.md →
 * Performance). Postgres's CPU per run moved by less than these machines' noise.
 *
 * It applies to pages written from now on; existing pages keep their layout until rewritten.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE workflow_runs SET (fillfactor = 70)`
})
