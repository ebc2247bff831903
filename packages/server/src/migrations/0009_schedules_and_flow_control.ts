/**
 * Schedules and flow control.
 *
 * Runs gain their flow control: a priority, the keys they share limits under (concurrency, ordering, rate limit,
 * debounce), a per-run concurrency limit, and — while pending and held back — what they wait for (`waiting_*`):
 * such a run has no stream entry and is not polled until it is offered again. A run started by a schedule keeps
 * the schedule and the fire time. Workflow versions keep the limits they declare (`flow_control`).
 *
 * Schedules fire from a cron expression or an interval; `next_fire_at` is the next fire time not yet handled, and a
 * short lease (`lease_until`) lets one replica at a time handle a schedule's fire times.
 *
 * The audit trail is stamped when each transition is written (`clock_timestamp()`) rather than when its transaction
 * began (`now()`): a claim granted because another run's end freed its slot is then recorded after that end, even
 * when the claim's transaction began first, so the trail shows flow control's limits as they held.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    ALTER TABLE workflow_runs
      ADD COLUMN priority smallint NOT NULL DEFAULT 5,
      ADD COLUMN concurrency_key text,
      ADD COLUMN concurrency_limit integer,
      ADD COLUMN ordering_key text,
      ADD COLUMN rate_limit_key text,
      ADD COLUMN debounce_key text,
      ADD COLUMN waiting_reason text CHECK (waiting_reason IN (
        'concurrency_limit', 'workflow_limit', 'ordering', 'rate_limit', 'debounce')),
      ADD COLUMN waiting_until timestamptz,
      ADD COLUMN waiting_message text,
      ADD COLUMN schedule_id text,
      ADD COLUMN scheduled_for timestamptz`
  yield* sql`ALTER TABLE workflow_versions ADD COLUMN flow_control jsonb`
  yield* sql`ALTER TABLE transitions ALTER COLUMN at SET DEFAULT clock_timestamp()`

  // What claims count under their key's lock: running runs per key and per workflow, unfinished runs per ordering
  // key (the oldest is the only one that may run), runs started per rate-limit bucket.
  yield* sql`CREATE INDEX workflow_runs_running_by_key ON workflow_runs (workflow_name, concurrency_key)
    WHERE state = 'running' AND concurrency_key IS NOT NULL`
  yield* sql`CREATE INDEX workflow_runs_running_by_workflow ON workflow_runs (workflow_name) WHERE state = 'running'`
  yield* sql`CREATE INDEX workflow_runs_ordering ON workflow_runs (workflow_name, ordering_key, id)
    WHERE ordering_key IS NOT NULL
      AND state IN ('pending', 'running', 'sleeping', 'awaiting_event', 'awaiting_child', 'awaiting_retry')`
  yield* sql`CREATE INDEX workflow_runs_rate ON workflow_runs (workflow_name, rate_limit_key, started_at)
    WHERE rate_limit_key IS NOT NULL AND started_at IS NOT NULL`
  // At most one run per debounce key has not started yet: the one later starts replace.
  yield* sql`CREATE UNIQUE INDEX workflow_runs_debounce ON workflow_runs (workflow_name, debounce_key)
    WHERE debounce_key IS NOT NULL AND state = 'pending' AND started_at IS NULL`
  // Runs held back, in the order they are offered again; and the runs a poll may take, by priority.
  yield* sql`CREATE INDEX workflow_runs_waiting ON workflow_runs (workflow_name, waiting_reason, priority DESC, id)
    WHERE state = 'pending' AND waiting_reason IS NOT NULL`
  yield* sql`CREATE INDEX workflow_runs_claimable ON workflow_runs (workflow_name, workflow_version, priority DESC, id)
    WHERE state = 'pending' AND waiting_reason IS NULL`
  yield* sql`CREATE INDEX workflow_runs_by_schedule ON workflow_runs (schedule_id, scheduled_for DESC)
    WHERE schedule_id IS NOT NULL`

  yield* sql`
    CREATE TABLE schedules (
      id                text        PRIMARY KEY,
      workflow_name     text        NOT NULL,
      workflow_version  text        NOT NULL,
      spec              jsonb       NOT NULL,
      payload           json        NOT NULL,
      run_options       jsonb       NOT NULL DEFAULT '{}',
      overlap           text        NOT NULL CHECK (overlap IN ('skip', 'buffer_one', 'allow_all', 'cancel_previous')),
      catch_up_window_ms bigint     NOT NULL,
      jitter_ms         integer     NOT NULL DEFAULT 0,
      paused            boolean     NOT NULL DEFAULT false,
      declared          boolean     NOT NULL DEFAULT false,
      next_fire_at      timestamptz NOT NULL,
      buffered_fire_at  timestamptz,
      last_fire_at      timestamptz,
      last_run_id       uuid,
      skipped_count     bigint      NOT NULL DEFAULT 0,
      lease_until       timestamptz,
      created_at        timestamptz NOT NULL DEFAULT now(),
      updated_at        timestamptz NOT NULL DEFAULT now()
    )`
  yield* sql`CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused`
})
