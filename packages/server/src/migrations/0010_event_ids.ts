/**
 * Event ids: a sender may name an event (`SendEvent.eventId`) so that sending it again — a retried webhook, a
 * client that lost the answer — stores nothing more. The key stays with the row after a wait consumed it, so a
 * late duplicate is recognised too; it goes with the run (retention cascades).
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE run_events ADD COLUMN event_key text`
  yield* sql`CREATE UNIQUE INDEX run_events_key ON run_events (run_id, event_key) WHERE event_key IS NOT NULL`
})
