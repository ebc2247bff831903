/**
 * The Aiki HTTP API, declared once. The server implements it with `HttpApiBuilder`, the SDK derives its client
 * from it with `HttpApiClient`, and `/openapi.json` is generated from it.
 */
import { Schema } from "effect"
import { HttpApi, HttpApiEndpoint, HttpApiGroup, HttpApiSchema, OpenApi } from "effect/http-api"
import { ClientAccess, RequestValidation, WorkerAccess } from "./Access.ts"
import {
  DependencyUnavailable,
  IdempotencyConflict,
  InvalidTransition,
  LeaseLost,
  RunNotClaimable,
  RunNotFound,
  TaskNotFound,
  WorkerNotFound
} from "./Errors.ts"
import { EventName, RunId, WorkerId, WorkflowName, WorkflowVersion } from "./Ids.ts"
import {
  ClaimRun,
  CompleteRun,
  CompleteTask,
  FailRun,
  FailTask,
  Health,
  Heartbeat,
  HeartbeatReply,
  Lease,
  PollRuns,
  ReceivedEvent,
  ReceiveEvent,
  RegisteredWorkflow,
  RegisterWorker,
  Registration,
  ReleaseRun,
  RunPage,
  RunUpdate,
  SendEvent,
  SentEvent,
  StartedRun,
  StartRun,
  StartTask,
  SuspendRun,
  Task,
  Transition,
  WorkerHealth,
  WorkerSignal,
  WorkflowRun
} from "./Models.ts"
import { RunState } from "./RunState.ts"
import { version } from "./Version.ts"

const runParams = { id: RunId }

/** Liveness and dependency checks, unauthenticated so load balancers and orchestrators can call them. */
export class HealthApi extends HttpApiGroup.make("health").add(
  HttpApiEndpoint.get("server", "/health", { success: Health }),
  HttpApiEndpoint.get("database", "/health/database", { success: Health, error: DependencyUnavailable }),
  HttpApiEndpoint.get("redis", "/health/redis", { success: Health, error: DependencyUnavailable })
).annotateMerge(OpenApi.annotations({ title: "Health", description: "Liveness and dependency checks" })) {}

/** Starting runs and listing a workflow's runs. */
export class WorkflowsApi extends HttpApiGroup.make("workflows").add(
  /** Every workflow version workers have registered, with their schemas. */
  HttpApiEndpoint.get("list", "/workflows", { success: Schema.Array(RegisteredWorkflow) }),
  HttpApiEndpoint.post("start", "/workflows/:name/versions/:version/start", {
    params: { name: WorkflowName, version: WorkflowVersion },
    payload: StartRun,
    success: StartedRun,
    error: IdempotencyConflict
  }),
  HttpApiEndpoint.get("runs", "/workflows/:name/runs", {
    params: { name: WorkflowName },
    query: {
      state: Schema.optionalKey(RunState),
      version: Schema.optionalKey(WorkflowVersion),
      limit: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 500 }))),
      cursor: Schema.optionalKey(RunId)
    },
    success: RunPage
  })
).middleware(RequestValidation).middleware(ClientAccess).annotateMerge(
  OpenApi.annotations({ title: "Workflows", description: "Start runs of a workflow version and list its runs" })
) {}

/** Reading and cancelling one run. */
export class RunsApi extends HttpApiGroup.make("runs").add(
  HttpApiEndpoint.get("status", "/workflow-runs/:id/status", { params: runParams, success: WorkflowRun, error: RunNotFound }),
  HttpApiEndpoint.post("cancel", "/workflow-runs/:id/cancel", {
    params: runParams,
    success: WorkflowRun,
    error: [RunNotFound, InvalidTransition]
  }),
  HttpApiEndpoint.get("tasks", "/workflow-runs/:id/tasks", {
    params: runParams,
    success: Schema.Array(Task),
    error: RunNotFound
  }),
  HttpApiEndpoint.get("transitions", "/workflow-runs/:id/transitions", {
    params: runParams,
    success: Schema.Array(Transition),
    error: RunNotFound
  }),
  /** Sends an event to a run; a run waiting for it wakes up, otherwise it is kept for its next wait. */
  HttpApiEndpoint.post("sendEvent", "/workflow-runs/:id/events/:name", {
    params: { id: RunId, name: EventName },
    payload: SendEvent,
    success: SentEvent,
    error: [RunNotFound, InvalidTransition]
  }),
  /**
   * Follows a run as Server-Sent Events: its current state first, then every change to it or its tasks, until it
   * reaches a final state (then the stream ends).
   */
  HttpApiEndpoint.get("events", "/workflow-runs/:id/events", {
    params: runParams,
    success: HttpApiSchema.StreamSse({ data: RunUpdate }),
    error: RunNotFound
  })
).middleware(RequestValidation).middleware(ClientAccess).annotateMerge(
  OpenApi.annotations({ title: "Runs", description: "Status, tasks, audit trail and cancellation of a run" })
) {}

/** Worker health, for operators and dashboards. */
export class WorkersApi extends HttpApiGroup.make("workers").add(
  HttpApiEndpoint.get("health", "/workers/:id/health", {
    params: { id: WorkerId },
    success: WorkerHealth,
    error: WorkerNotFound
  })
).middleware(RequestValidation).middleware(ClientAccess).annotateMerge(
  OpenApi.annotations({ title: "Workers", description: "Health of the workers" })
) {}

/**
 * The worker protocol: register, claim a run (a lease), heartbeat, record tasks and finish runs. Every write about
 * a run carries the lease epoch it was granted; a stale epoch is rejected with `LeaseLost` and changes nothing.
 */
export class ExecutionApi extends HttpApiGroup.make("execution").add(
  HttpApiEndpoint.post("register", "/workers/:id/register", {
    params: { id: WorkerId },
    payload: RegisterWorker,
    success: Registration
  }),
  /** Signals for the worker's runs (cancellations) as Server-Sent Events, for as long as it stays connected. */
  HttpApiEndpoint.get("signals", "/workers/:id/signals", {
    params: { id: WorkerId },
    success: HttpApiSchema.StreamSse({ data: WorkerSignal })
  }),
  HttpApiEndpoint.post("heartbeat", "/workers/:id/heartbeat", {
    params: { id: WorkerId },
    payload: Heartbeat,
    success: HeartbeatReply,
    error: WorkerNotFound
  }),
  /** Claims up to `max` pending runs of the given versions, waiting up to `waitMs` for the first one. */
  HttpApiEndpoint.post("poll", "/workers/:id/poll", {
    params: { id: WorkerId },
    payload: PollRuns,
    success: Schema.Array(Lease)
  }),
  HttpApiEndpoint.post("claim", "/workflow-runs/:id/claim", {
    params: runParams,
    payload: ClaimRun,
    success: Lease,
    error: [RunNotFound, RunNotClaimable]
  }),
  HttpApiEndpoint.post("startTask", "/workflow-runs/:id/tasks/start", {
    params: runParams,
    payload: StartTask,
    success: Task,
    error: [RunNotFound, LeaseLost, InvalidTransition]
  }),
  HttpApiEndpoint.post("completeTask", "/workflow-runs/:id/tasks/complete", {
    params: runParams,
    payload: CompleteTask,
    success: Task,
    error: [RunNotFound, LeaseLost, InvalidTransition, TaskNotFound]
  }),
  HttpApiEndpoint.post("failTask", "/workflow-runs/:id/tasks/fail", {
    params: runParams,
    payload: FailTask,
    success: Task,
    error: [RunNotFound, LeaseLost, InvalidTransition, TaskNotFound]
  }),
  HttpApiEndpoint.post("complete", "/workflow-runs/:id/complete", {
    params: runParams,
    payload: CompleteRun,
    success: WorkflowRun,
    error: [RunNotFound, LeaseLost]
  }),
  HttpApiEndpoint.post("fail", "/workflow-runs/:id/fail", {
    params: runParams,
    payload: FailRun,
    success: WorkflowRun,
    error: [RunNotFound, LeaseLost]
  }),
  HttpApiEndpoint.post("receiveEvent", "/workflow-runs/:id/receive-event", {
    params: runParams,
    payload: ReceiveEvent,
    success: ReceivedEvent,
    error: [RunNotFound, LeaseLost, InvalidTransition, TaskNotFound]
  }),
  HttpApiEndpoint.post("suspend", "/workflow-runs/:id/suspend", {
    params: runParams,
    payload: SuspendRun,
    success: WorkflowRun,
    error: [RunNotFound, LeaseLost, InvalidTransition, TaskNotFound]
  }),
  HttpApiEndpoint.post("release", "/workflow-runs/:id/release", {
    params: runParams,
    payload: ReleaseRun,
    success: WorkflowRun,
    error: [RunNotFound, LeaseLost]
  })
).middleware(RequestValidation).middleware(WorkerAccess).annotateMerge(
  OpenApi.annotations({ title: "Execution", description: "The protocol workers speak: leases, tasks, results" })
) {}

export class AikiApi extends HttpApi.make("aiki")
  .add(HealthApi)
  .add(WorkflowsApi)
  .add(RunsApi)
  .add(WorkersApi)
  .add(ExecutionApi)
  .annotateMerge(OpenApi.annotations({
    title: "Aiki",
    version,
    description: "Durable workflow engine: start runs, follow them, and the protocol workers use to execute them"
  }))
{}
