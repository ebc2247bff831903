/**
 * Workers and the workflow versions they serve. Registering records the worker and its definitions (name,
 * version, schemas, the limits its runs obey, the schedule it declares), so the server knows which versions can run;
 * health derives from the last heartbeat and from the runs the worker holds right now (the database's leases, not
 * the worker's word).
 */
import { WorkerNotFound } from "@aiki/contract/Errors"
import type { FlowPolicy } from "@aiki/contract/FlowControl"
import type { RunId, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import {
  type Json,
  RegisteredWorkflow,
  Registration,
  type WorkflowDefinition,
  WorkerHealth,
  WorkerSummary
} from "@aiki/contract/Models"
import { Context, DateTime, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { FlowControl } from "./FlowControl.ts"
import { maxBatchBytes } from "./http/HttpServer.ts"
import { defaultLivenessMs } from "./Leases.ts"
import { bands, consumerGroup, RunStreams, streamKey } from "./RunStreams.ts"
import { Schedules } from "./Schedules.ts"
import { ServerConfig } from "./ServerConfig.ts"

interface WorkerRow {
  readonly id: string
  readonly registered_at: Date
  readonly last_heartbeat_at: Date
  readonly heartbeat_age_ms: number
  readonly runs_in_flight: number
  readonly workflows: ReadonlyArray<{ readonly name: string; readonly version: string }>
  readonly max_concurrent_runs: number | null
  readonly held_runs: ReadonlyArray<string>
}

export class WorkerRegistry extends Context.Service<WorkerRegistry, {
  readonly register: (
    workerId: WorkerId,
    workflows: ReadonlyArray<WorkflowDefinition>,
    maxConcurrentRuns?: number
  ) => Effect.Effect<Registration>
  readonly health: (workerId: WorkerId) => Effect.Effect<WorkerHealth, WorkerNotFound>
  /** Every worker that registered, by id, with its capacity and the runs it holds. */
  readonly list: Effect.Effect<ReadonlyArray<WorkerSummary>>
  /** Every registered workflow version with its schemas, by name then version. */
  readonly workflows: Effect.Effect<ReadonlyArray<RegisteredWorkflow>>
  /** Workers whose last heartbeat is recent enough to count as alive. */
  readonly activeCount: Effect.Effect<number>
}>()("@aiki/server/WorkerRegistry") {
  static readonly layer = Layer.effect(
    WorkerRegistry,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const config = yield* ServerConfig
      const streams = yield* RunStreams
      const flowControl = yield* FlowControl
      const schedules = yield* Schedules

      /** Workers (all, or the one with `workerId`) as their summary, which includes their health. */
      const select = (workerId?: WorkerId) =>
        sql<WorkerRow>`
          SELECT w.id, w.registered_at, w.last_heartbeat_at, w.max_concurrent_runs,
            (EXTRACT(EPOCH FROM (now() - w.last_heartbeat_at)) * 1000)::int AS heartbeat_age_ms,
            (SELECT count(*)::int FROM workflow_runs r WHERE r.lease_owner = w.id AND r.state = 'running') AS runs_in_flight,
            COALESCE((SELECT jsonb_agg(h.id ORDER BY h.id DESC) FROM (
                       SELECT r.id FROM workflow_runs r WHERE r.lease_owner = w.id AND r.state = 'running'
                       ORDER BY r.id DESC LIMIT 100) h), '[]'::jsonb) AS held_runs,
            COALESCE((SELECT jsonb_agg(jsonb_build_object('name', ww.workflow_name, 'version', ww.workflow_version)
                       ORDER BY ww.workflow_name, ww.workflow_version)
                      FROM worker_workflows ww WHERE ww.worker_id = w.id), '[]'::jsonb) AS workflows
          FROM workers w ${workerId === undefined ? sql`` : sql`WHERE w.id = ${workerId}`}
          ORDER BY w.id`.pipe(
          Effect.orDie,
          Effect.map((rows) =>
            rows.map((row) =>
              new WorkerSummary({
                id: row.id as WorkerId,
                status: row.heartbeat_age_ms <= config.workerStaleAfterMs ? "healthy" : "stale",
                registeredAt: DateTime.fromDateUnsafe(row.registered_at),
                lastHeartbeatAt: DateTime.fromDateUnsafe(row.last_heartbeat_at),
                heartbeatAgeMs: Math.max(0, row.heartbeat_age_ms),
                runsInFlight: row.runs_in_flight,
                workflows: row.workflows.map((w) => ({
                  name: w.name as WorkflowName,
                  version: w.version as WorkflowVersion
                })),
                ...(row.max_concurrent_runs !== null ? { maxConcurrentRuns: row.max_concurrent_runs } : {}),
                heldRuns: row.held_runs as ReadonlyArray<RunId>
              }, { disableChecks: true })
            )
          )
        )

      /** A worker's health alone, as the health endpoint and registration answer it. */
      const healthOf = (workerId: WorkerId) =>
        select(workerId).pipe(Effect.map(([summary]) =>
          summary === undefined ? undefined : new WorkerHealth({
            id: summary.id,
            status: summary.status,
            registeredAt: summary.registeredAt,
            lastHeartbeatAt: summary.lastHeartbeatAt,
            heartbeatAgeMs: summary.heartbeatAgeMs,
            runsInFlight: summary.runsInFlight,
            workflows: summary.workflows
          }, { disableChecks: true })
        ))

      const register = Effect.fn("WorkerRegistry.register")(
        function*(workerId: WorkerId, workflows: ReadonlyArray<WorkflowDefinition>, maxConcurrentRuns?: number) {
          const definitions = JSON.stringify(workflows.map((w) => ({
            name: w.name,
            version: w.version,
            payload_schema: w.payloadSchema ?? null,
            result_schema: w.resultSchema ?? null,
            flow_control: w.flowControl ?? null,
            execution_timeout_ms: w.executionTimeoutMs ?? null
          })))
          yield* sql.withTransaction(Effect.gen(function*() {
            yield* sql`
              INSERT INTO workers (id, max_concurrent_runs, alive_until)
              VALUES (${workerId}, ${maxConcurrentRuns ?? null}, now() + make_interval(secs => ${defaultLivenessMs / 1000}))
              ON CONFLICT (id) DO UPDATE SET max_concurrent_runs = EXCLUDED.max_concurrent_runs,
                registered_at = now(), last_heartbeat_at = now(), alive_until = EXCLUDED.alive_until`
            yield* sql`DELETE FROM worker_workflows WHERE worker_id = ${workerId}`
            yield* sql`
              WITH defs AS (
                SELECT DISTINCT ON (name, version) * FROM jsonb_to_recordset(${definitions}::jsonb)
                  AS d(name text, version text, payload_schema jsonb, result_schema jsonb, flow_control jsonb,
                    execution_timeout_ms bigint)
              ), versions AS (
                INSERT INTO workflow_versions (workflow_name, version, payload_schema, result_schema, flow_control,
                  execution_timeout_ms)
                SELECT name, version, payload_schema, result_schema, flow_control, execution_timeout_ms FROM defs
                ON CONFLICT (workflow_name, version) DO UPDATE SET last_registered_at = now(),
                  payload_schema = COALESCE(EXCLUDED.payload_schema, workflow_versions.payload_schema),
                  result_schema = COALESCE(EXCLUDED.result_schema, workflow_versions.result_schema),
                  flow_control = EXCLUDED.flow_control, execution_timeout_ms = EXCLUDED.execution_timeout_ms
              )
              INSERT INTO worker_workflows (worker_id, workflow_name, workflow_version)
              SELECT ${workerId}, name, version FROM defs`
          })).pipe(Effect.orDie)
          yield* Effect.forEach(workflows, (w) => flowControl.forget({ name: w.name, version: w.version }), { discard: true })
          yield* Effect.forEach(
            workflows,
            (w) => w.trigger === undefined ? Effect.void : schedules.declare(w.name, w.version, w.trigger),
            { discard: true }
          )
          const worker = (yield* healthOf(workerId))!
          return new Registration({
            worker,
            consumerGroup,
            maxPayloadBytes: config.maxPayloadBytes,
            maxBatchBytes: maxBatchBytes(config.maxPayloadBytes),
            ...(streams.enabled
              ? {
                // Every priority band of every version, the highest first.
                streams: bands.flatMap((band) =>
                  worker.workflows.map((w) => ({ ...w, band, stream: streamKey(config.redisPrefix, w.name, w.version, band) }))
                )
              }
              : {})
          })
        }
      )

      const health = Effect.fn("WorkerRegistry.health")(function*(workerId: WorkerId) {
        const health = yield* healthOf(workerId)
        if (health === undefined) {
          return yield* new WorkerNotFound({ workerId, message: `No worker has registered with id ${workerId}` })
        }
        return health
      })

      const activeCount = sql<{ readonly n: number }>`
        SELECT count(*)::int AS n FROM workers
        WHERE last_heartbeat_at > now() - make_interval(secs => ${config.workerStaleAfterMs / 1000})`.pipe(
        Effect.orDie,
        Effect.map((rows) => rows[0]?.n ?? 0)
      )

      const workflows = sql<{
        readonly workflow_name: string
        readonly version: string
        readonly payload_schema: Json | null
        readonly result_schema: Json | null
        readonly flow_control: FlowPolicy | null
        readonly first_registered_at: Date
        readonly last_registered_at: Date
      }>`SELECT * FROM workflow_versions ORDER BY workflow_name, version`.pipe(
        Effect.orDie,
        Effect.map((rows) =>
          rows.map((row) =>
            new RegisteredWorkflow({
              name: row.workflow_name as WorkflowName,
              version: row.version as WorkflowVersion,
              ...(row.payload_schema !== null ? { payloadSchema: row.payload_schema } : {}),
              ...(row.result_schema !== null ? { resultSchema: row.result_schema } : {}),
              ...(row.flow_control !== null ? { flowControl: row.flow_control } : {}),
              firstRegisteredAt: DateTime.fromDateUnsafe(row.first_registered_at),
              lastRegisteredAt: DateTime.fromDateUnsafe(row.last_registered_at)
            }, { disableChecks: true })
          )
        ),
        Effect.withSpan("WorkerRegistry.workflows")
      )

      const list = select().pipe(Effect.withSpan("WorkerRegistry.list"))

      return WorkerRegistry.of({ register, health, list, workflows, activeCount })
    })
  )
}
