/**
 * The handlers of every endpoint group: each one decodes nothing and decides nothing itself, it hands the typed
 * request to the store that owns the behaviour.
 */
import { AikiApi } from "@aiki/contract/Api"
import { DependencyUnavailable } from "@aiki/contract/Errors"
import { Health } from "@aiki/contract/Models"
import { version } from "@aiki/contract/Version"
import { Effect, Layer } from "effect"
import { HttpApiBuilder } from "effect/http-api"
import { SqlClient } from "effect/sql"
import { RunLeases } from "../RunLeases.ts"
import { RunStore } from "../RunStore.ts"
import { RunStreams } from "../RunStreams.ts"
import { TaskJournal } from "../TaskJournal.ts"
import { WorkerRegistry } from "../WorkerRegistry.ts"

const ok = new Health({ status: "ok", version })

export const HealthHandlers = HttpApiBuilder.group(AikiApi, "health", Effect.fn(function*(handlers) {
  const sql = yield* SqlClient.SqlClient
  const streams = yield* RunStreams
  return handlers.handleAll({
    server: () => Effect.succeed(ok),
    database: () =>
      sql`SELECT 1`.pipe(
        Effect.timeout("2 seconds"),
        Effect.as(ok),
        Effect.mapError((e) =>
          new DependencyUnavailable({ dependency: "database", message: `Postgres does not answer: ${e.message}` })
        )
      ),
    redis: () =>
      streams.ping.pipe(
        Effect.timeout("2 seconds"),
        Effect.as(ok),
        Effect.mapError((e) =>
          new DependencyUnavailable({
            dependency: "redis",
            message: `Redis does not answer: ${"reason" in e ? e.reason : e.message}`
          })
        )
      )
  })
}))

export const WorkflowsHandlers = HttpApiBuilder.group(AikiApi, "workflows", Effect.fn(function*(handlers) {
  const runs = yield* RunStore
  const workers = yield* WorkerRegistry
  return handlers.handleAll({
    list: () => workers.workflows,
    start: ({ params, payload, request }) =>
      runs.start({
        workflowName: params.name,
        workflowVersion: params.version,
        payload: payload.payload,
        idempotencyKey: payload.idempotencyKey,
        traceParent: request.headers["traceparent"]
      }),
    runs: ({ params, query }) =>
      runs.list({
        workflowName: params.name,
        state: query.state,
        workflowVersion: query.version,
        limit: query.limit,
        cursor: query.cursor
      })
  })
}))

export const RunsHandlers = HttpApiBuilder.group(AikiApi, "runs", Effect.fn(function*(handlers) {
  const runs = yield* RunStore
  return handlers.handleAll({
    status: ({ params }) => runs.get(params.id),
    cancel: ({ params }) => runs.cancel(params.id),
    tasks: ({ params }) => runs.tasks(params.id),
    transitions: ({ params }) => runs.transitions(params.id),
    events: ({ params }) => runs.follow(params.id),
    sendEvent: ({ params, payload }) => runs.sendEvent(params.id, params.name, payload.payload)
  })
}))

export const WorkersHandlers = HttpApiBuilder.group(AikiApi, "workers", Effect.fn(function*(handlers) {
  const workers = yield* WorkerRegistry
  return handlers.handleAll({
    health: ({ params }) => workers.health(params.id)
  })
}))

export const ExecutionHandlers = HttpApiBuilder.group(AikiApi, "execution", Effect.fn(function*(handlers) {
  const workers = yield* WorkerRegistry
  const leases = yield* RunLeases
  const journal = yield* TaskJournal
  return handlers.handleAll({
    register: ({ params, payload }) => workers.register(params.id, payload.workflows, payload.maxConcurrentRuns),
    heartbeat: ({ params, payload }) => leases.heartbeat(params.id, payload.runs, payload.leaseMs),
    signals: ({ params }) => Effect.succeed(leases.signals(params.id)),
    poll: ({ params, payload }) => leases.poll(params.id, payload),
    claim: ({ params, payload }) => leases.claim(params.id, payload.workerId, payload.leaseMs),
    startTask: ({ params, payload }) => journal.start({ runId: params.id, ...payload }),
    completeTask: ({ params, payload }) => journal.complete({ runId: params.id, ...payload }),
    failTask: ({ params, payload }) => journal.fail({ runId: params.id, ...payload }),
    complete: ({ params, payload }) => leases.complete(params.id, payload.leaseEpoch, payload.result),
    fail: ({ params, payload }) => leases.fail(params.id, payload.leaseEpoch, payload.error),
    receiveEvent: ({ params, payload }) => leases.receiveEvent(params.id, payload),
    suspend: ({ params, payload }) =>
      leases.suspend(params.id, payload.leaseEpoch, payload.state, payload.delayMs, payload.completeTask),
    release: ({ params, payload }) => leases.release(params.id, payload.leaseEpoch)
  })
}))

/** Every group's handlers; they need the stores, the SQL client and Redis. */
export const layer = Layer.mergeAll(HealthHandlers, WorkflowsHandlers, RunsHandlers, WorkersHandlers, ExecutionHandlers)
