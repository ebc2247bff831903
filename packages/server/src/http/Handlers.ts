/**
 * The handlers of every endpoint group: each one decodes nothing and decides nothing itself, it hands the typed
 * request to the store that owns the behaviour.
 */
import { ClientAccess, Principal, rolesAllowed, sessionCookie } from "@aiki/contract/Access"
import { AikiApi } from "@aiki/contract/Api"
import { DependencyUnavailable, Forbidden, Unauthorized } from "@aiki/contract/Errors"
import { Health, Session, StartedRuns, WriteResults } from "@aiki/contract/Models"
import { version } from "@aiki/contract/Version"
import { DateTime, Effect, Layer, Option } from "effect"
import type { HttpServerRequest } from "effect/http"
import { HttpApiBuilder } from "effect/http-api"
import { SqlClient } from "effect/sql"
import { ApiKeys } from "../ApiKeys.ts"
import { BearerTokens } from "../BearerTokens.ts"
import { DatabaseReady } from "../DatabaseReady.ts"
import { Leases } from "../Leases.ts"
import { RunQueries } from "../RunQueries.ts"
import { RunStore } from "../RunStore.ts"
import { RunStreams } from "../RunStreams.ts"
import { RunTransitions } from "../RunTransitions.ts"
import { Schedules } from "../Schedules.ts"
import { ServerConfig } from "../ServerConfig.ts"
import { WorkerRegistry } from "../WorkerRegistry.ts"

const ok = new Health({ status: "ok", version })

/** What the health endpoints answer while the database has not been reached and migrated since start. */
export const starting = new DependencyUnavailable({
  dependency: "database",
  message: "The server is starting: it waits for Postgres to answer and be migrated"
})

export const HealthHandlers = HttpApiBuilder.group(AikiApi, "health", Effect.fn(function*(handlers) {
  const sql = yield* SqlClient.SqlClient
  const streams = yield* RunStreams
  const ready = yield* DatabaseReady
  const whenReady = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | DependencyUnavailable, R> =>
    Effect.flatMap(ready.isReady, (isReady): Effect.Effect<A, E | DependencyUnavailable, R> => isReady ? effect : Effect.fail(starting))
  return handlers.handleAll({
    server: () => whenReady(Effect.succeed(ok)),
    database: () =>
      whenReady(sql`SELECT 1`).pipe(
        Effect.timeout("2 seconds"),
        Effect.as(ok),
        Effect.catchTag(["SqlError", "TimeoutError"], (e) =>
          Effect.fail(new DependencyUnavailable({ dependency: "database", message: `Postgres does not answer: ${e.message}` }))
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
  const queries = yield* RunQueries
  const workers = yield* WorkerRegistry
  return handlers.handleAll({
    list: () => workers.workflows,
    counts: () => queries.workflowCounts,
    start: ({ params, payload, request }) =>
      runs.start({
        workflowName: params.name,
        workflowVersion: params.version,
        payload: payload.payload,
        idempotencyKey: payload.idempotencyKey,
        traceParent: request.headers["traceparent"],
        priority: payload.priority,
        concurrencyKey: payload.concurrencyKey,
        concurrencyLimit: payload.concurrencyLimit,
        orderingKey: payload.orderingKey,
        rateLimitKey: payload.rateLimitKey,
        debounce: payload.debounce,
        executionTimeoutMs: payload.executionTimeoutMs,
        scheduleToStartTimeoutMs: payload.scheduleToStartTimeoutMs
      }),
    startMany: ({ payload }) => Effect.map(runs.startMany(payload.runs), (results) => new StartedRuns({ results })),
    runs: ({ params, query }) =>
      queries.list({
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
  const queries = yield* RunQueries
  return handlers.handleAll({
    list: ({ query }) =>
      queries.list({
        workflowName: query.workflow,
        workflowVersion: query.version,
        from: query.from,
        to: query.to,
        state: query.state,
        query: query.q,
        limit: query.limit,
        cursor: query.cursor
      }),
    counts: ({ query }) =>
      queries.counts({ workflowName: query.workflow, workflowVersion: query.version, from: query.from, to: query.to }),
    activity: () => Effect.succeed(queries.activity),
    status: ({ params }) => runs.get(params.id),
    cancel: ({ params }) => runs.cancel(params.id),
    retry: ({ params }) => runs.retry(params.id),
    reset: ({ params, payload }) => runs.reset(params.id, payload),
    discarded: ({ params }) => runs.discarded(params.id),
    tasks: ({ params }) => runs.tasks(params.id),
    transitions: ({ params }) => runs.transitions(params.id),
    children: ({ params }) => runs.children(params.id),
    events: ({ params, query }) => runs.follow(params.id, query),
    sendEvent: ({ params, payload }) => runs.sendEvent(params.id, params.name, payload.payload, payload.eventId)
  })
}))

export const SchedulesHandlers = HttpApiBuilder.group(AikiApi, "schedules", Effect.fn(function*(handlers) {
  const schedules = yield* Schedules
  return handlers.handleAll({
    list: ({ query }) => schedules.list(query.workflow),
    create: ({ payload }) => schedules.create(payload),
    get: ({ params }) => schedules.get(params.id),
    pause: ({ params }) => schedules.pause(params.id),
    resume: ({ params }) => schedules.resume(params.id),
    trigger: ({ params }) => schedules.trigger(params.id),
    backfill: ({ params, payload }) => schedules.backfill(params.id, payload.from, payload.to),
    delete: ({ params }) => schedules.remove(params.id)
  })
}))

export const WorkersHandlers = HttpApiBuilder.group(AikiApi, "workers", Effect.fn(function*(handlers) {
  const workers = yield* WorkerRegistry
  return handlers.handleAll({
    health: ({ params }) => workers.health(params.id)
  })
}))

export const FleetHandlers = HttpApiBuilder.group(AikiApi, "fleet", Effect.fn(function*(handlers) {
  const workers = yield* WorkerRegistry
  return handlers.handleAll({
    workers: () => workers.list
  })
}))

/** The roles that may log in to the dashboard: those that may read runs. */
const dashboardRoles = rolesAllowed.get(ClientAccess.key) ?? []

export const SessionHandlers = HttpApiBuilder.group(AikiApi, "session", Effect.fn(function*(handlers) {
  const keys = yield* ApiKeys
  const tokens = yield* BearerTokens
  const config = yield* ServerConfig
  const anonymous = new Session({ role: "admin", keyName: "anonymous", authRequired: false })
  const authRequired = keys.enabled || tokens.enabled
  /** HttpOnly and SameSite=Strict always (no script reads it, no other site sends it); Secure over HTTPS. */
  const cookieOptions = (request: HttpServerRequest.HttpServerRequest) => ({
    httpOnly: true,
    sameSite: "strict" as const,
    path: "/",
    secure: Option.isSome(config.tls) || request.headers["x-forwarded-proto"] === "https"
  })
  return handlers.handleAll({
    current: () =>
      Principal.useSync((principal) =>
        authRequired ? new Session({ role: principal.role, keyName: principal.keyName, authRequired: true }) : anonymous
      ),
    login: ({ payload, request }) =>
      Effect.gen(function*() {
        if (!authRequired) return anonymous
        const key = keys.find(payload.apiKey)
        if (Option.isNone(key)) return yield* new Unauthorized({ message: "Invalid API key" })
        if (!dashboardRoles.includes(key.value.role)) {
          return yield* new Forbidden({ message: `A ${key.value.role} key cannot read runs, so it cannot log in` })
        }
        const { expiresAt, token } = yield* keys.issueSession(key.value)
        yield* HttpApiBuilder.securitySetCookie(sessionCookie, token, {
          ...cookieOptions(request),
          maxAge: `${config.sessionTtlMs} millis`
        })
        return new Session({
          role: key.value.role,
          keyName: key.value.name,
          authRequired: true,
          expiresAt: DateTime.makeUnsafe(expiresAt)
        })
      }),
    logout: ({ request }) =>
      HttpApiBuilder.securitySetCookie(sessionCookie, "", { ...cookieOptions(request), maxAge: 0, expires: new Date(0) })
  })
}))

export const ExecutionHandlers = HttpApiBuilder.group(AikiApi, "execution", Effect.fn(function*(handlers) {
  const workers = yield* WorkerRegistry
  const leases = yield* Leases
  const transitions = yield* RunTransitions
  return handlers.handleAll({
    register: ({ params, payload }) => workers.register(params.id, payload.workflows, payload.maxConcurrentRuns),
    heartbeat: ({ params, payload }) => leases.heartbeat(params.id, payload.runs, payload),
    signals: ({ params }) => Effect.succeed(leases.signals(params.id)),
    poll: ({ params, payload }) => leases.poll(params.id, payload),
    claim: ({ params, payload }) => leases.claim(params.id, payload.runIds, payload),
    write: ({ payload }) => Effect.map(transitions.write(payload.writes), (results) => new WriteResults({ results }))
  })
}))

/** Every group's handlers; they need the stores, the SQL client and Redis. */
export const layer = Layer.mergeAll(
  HealthHandlers,
  WorkflowsHandlers,
  RunsHandlers,
  SchedulesHandlers,
  WorkersHandlers,
  FleetHandlers,
  SessionHandlers,
  ExecutionHandlers
)
