/**
 * The initial schema. Postgres is the source of truth: runs, their tasks and attempts, the append-only audit trail
 * of transitions, the outbox that feeds Redis Streams, and the workers with the workflow versions they serve.
 */
import { Effect } from "effect"
import { SqlClient } from "effect/sql"

export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE TABLE workflow_versions (
      workflow_name       text        NOT NULL,
      version             text        NOT NULL,
      payload_schema      jsonb,
      result_schema       jsonb,
      first_registered_at timestamptz NOT NULL DEFAULT now(),
      last_registered_at  timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (workflow_name, version)
    )`
  yield* sql`
    CREATE TABLE workflow_runs (
      id               uuid        PRIMARY KEY,
      workflow_name    text        NOT NULL,
      workflow_version text        NOT NULL,
      state            text        NOT NULL CHECK (state IN (
        'pending', 'running', 'sleeping', 'awaiting_event', 'awaiting_child', 'awaiting_retry',
        'completed', 'failed', 'cancelled')),
      payload          jsonb       NOT NULL,
      result           jsonb,
      error            jsonb,
      idempotency_key  text,
      lease_epoch      integer     NOT NULL DEFAULT 0,
      lease_owner      text,
      lease_expires_at timestamptz,
      created_at       timestamptz NOT NULL DEFAULT now(),
      updated_at       timestamptz NOT NULL DEFAULT now(),
      started_at       timestamptz,
      finished_at      timestamptz
    )`
  // One run per key and workflow, enforced by the database rather than a check-then-insert race.
  yield* sql`CREATE UNIQUE INDEX workflow_runs_idempotency ON workflow_runs (workflow_name, idempotency_key)
    WHERE idempotency_key IS NOT NULL`
  yield* sql`CREATE INDEX workflow_runs_by_workflow ON workflow_runs (workflow_name, id DESC)`
  yield* sql`CREATE INDEX workflow_runs_by_lease_expiry ON workflow_runs (lease_expires_at) WHERE state = 'running'`
  yield* sql`CREATE INDEX workflow_runs_pending ON workflow_runs (updated_at) WHERE state = 'pending'`
  yield* sql`CREATE INDEX workflow_runs_pending_by_version ON workflow_runs (workflow_name, workflow_version, id)
    WHERE state = 'pending'`
  yield* sql`CREATE INDEX workflow_runs_by_owner ON workflow_runs (lease_owner) WHERE state = 'running'`
  yield* sql`
    CREATE TABLE tasks (
      seq        bigint      GENERATED ALWAYS AS IDENTITY,
      run_id     uuid        NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
      address    text        NOT NULL,
      sequence   integer     NOT NULL,
      name       text        NOT NULL,
      state      text        NOT NULL CHECK (state IN ('pending', 'running', 'completed', 'failed', 'retrying')),
      payload    jsonb       NOT NULL,
      result     jsonb,
      error      jsonb,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (run_id, address)
    )`
  yield* sql`
    CREATE TABLE task_attempts (
      run_id      uuid        NOT NULL,
      address     text        NOT NULL,
      attempt     integer     NOT NULL,
      lease_epoch integer     NOT NULL,
      started_at  timestamptz NOT NULL DEFAULT now(),
      finished_at timestamptz,
      error       jsonb,
      PRIMARY KEY (run_id, address, attempt),
      FOREIGN KEY (run_id, address) REFERENCES tasks (run_id, address) ON DELETE CASCADE
    )`
  yield* sql`
    CREATE TABLE transitions (
      id           bigserial   PRIMARY KEY,
      run_id       uuid        NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
      task_address text,
      from_state   text,
      to_state     text        NOT NULL,
      reason       text        NOT NULL,
      lease_epoch  integer,
      worker_id    text,
      at           timestamptz NOT NULL DEFAULT now()
    )`
  yield* sql`CREATE INDEX transitions_by_run ON transitions (run_id, id)`
  yield* sql`
    CREATE TABLE outbox (
      id           bigserial   PRIMARY KEY,
      run_id       uuid        NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
      stream       text        NOT NULL,
      created_at   timestamptz NOT NULL DEFAULT now(),
      published_at timestamptz,
      message_id   text,
      verified_at  timestamptz
    )`
  yield* sql`CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL`
  yield* sql`CREATE INDEX outbox_by_run ON outbox (run_id, id DESC)`
  yield* sql`
    CREATE TABLE workers (
      id                  text        PRIMARY KEY,
      max_concurrent_runs integer,
      registered_at       timestamptz NOT NULL DEFAULT now(),
      last_heartbeat_at   timestamptz NOT NULL DEFAULT now()
    )`
  yield* sql`
    CREATE TABLE worker_workflows (
      worker_id        text NOT NULL REFERENCES workers (id) ON DELETE CASCADE,
      workflow_name    text NOT NULL,
      workflow_version text NOT NULL,
      PRIMARY KEY (worker_id, workflow_name, workflow_version)
    )`
})
