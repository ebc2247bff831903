/**
 * The Aiki HTTP API, declared once. The server implements it with `HttpApiBuilder`, the SDK derives its client
 * from it with `HttpApiClient`, and `/openapi.json` is generated from it.
 */
import * as Schema from "effect/Schema"
import * as HttpApi from "effect/http-api/HttpApi"
import * as HttpApiEndpoint from "effect/http-api/HttpApiEndpoint"
import * as HttpApiGroup from "effect/http-api/HttpApiGroup"
import * as HttpApiSchema from "effect/http-api/HttpApiSchema"
import * as OpenApi from "effect/http-api/OpenApi"
import { AdminAccess, ClientAccess, RequestValidation, WorkerAccess } from "./Access.ts"
import {
  DependencyUnavailable,
  EventConflict,
  Forbidden,
  IdempotencyConflict,
  InvalidRequest,
  InvalidTransition,
  RunNotFound,
  ScheduleExists,
  ScheduleNotFound,
  Unauthorized,
  WorkerNotFound
} from "./Errors.ts"
import { EventName, RunId, ScheduleId, WorkerId, WorkflowName, WorkflowVersion } from "./Ids.ts"
import {
  ClaimRuns,
  Claims,
  Health,
  Heartbeat,
  HeartbeatReply,
  Lease,
  Login,
  PollRuns,
  RegisteredWorkflow,
  RegisterWorker,
  ResetRun,
  DiscardedTask,
  Registration,
  RunActivity,
  RunCounts,
  RunPage,
  RunUpdate,
  SendEvent,
  SentEvent,
  Session,
  StartedRun,
  StartedRuns,
  StartRun,
  StartRuns,
  Task,
  Transition,
  WorkerHealth,
  WorkerSignal,
  WorkerSummary,
  WorkflowRun,
  WorkflowRunCounts,
  WriteBatch,
  WriteResults
} from "./Models.ts"
import { RunState } from "./RunState.ts"
import { Backfill, BackfillResult, CreateSchedule, Schedule } from "./Schedules.ts"
import { version } from "./Version.ts"

const runParams = { id: RunId }

const pageLimit = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 500 }))

/** Filters over runs of every workflow; `from`/`to` bound when the run was started (inclusive, exclusive). */
const runFilters = {
  workflow: Schema.optionalKey(WorkflowName),
  version: Schema.optionalKey(WorkflowVersion),
  from: Schema.optionalKey(Schema.DateTimeUtcFromString),
  to: Schema.optionalKey(Schema.DateTimeUtcFromString)
}

/** Liveness and dependency checks, unauthenticated so load balancers and orchestrators can call them. */
export class HealthApi extends HttpApiGroup.make("health").add(
  /** 503 while the server starts and waits for its database. */
  HttpApiEndpoint.get("server", "/health", { success: Health, error: DependencyUnavailable }),
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
    /** `InvalidRequest`: the payload violates the JSON Schema registered for the version (the issue names the field). */
    error: [IdempotencyConflict, InvalidRequest]
  }),
  /** Starts several runs in one request (each answered on its own, in order); the SDK's client sends its starts so. */
  HttpApiEndpoint.post("startMany", "/workflow-runs/start", {
    payload: StartRuns,
    success: StartedRuns
  }),
  HttpApiEndpoint.get("runs", "/workflows/:name/runs", {
    params: { name: WorkflowName },
    query: {
      state: Schema.optionalKey(RunState),
      version: Schema.optionalKey(WorkflowVersion),
      limit: Schema.optionalKey(pageLimit),
      cursor: Schema.optionalKey(RunId)
    },
    success: RunPage
  }),
  /** Every registered or started workflow version with its runs counted by state. */
  HttpApiEndpoint.get("counts", "/workflows/counts", { success: Schema.Array(WorkflowRunCounts) })
).middleware(RequestValidation).middleware(ClientAccess).annotateMerge(
  OpenApi.annotations({ title: "Workflows", description: "Start runs of a workflow version and list its runs" })
) {}

/** Reading runs across workflows, and reading, cancelling and signalling one run. */
export class RunsApi extends HttpApiGroup.make("runs").add(
  /**
   * Runs of every workflow, newest first, filtered; `q` finds a run by its id or by its idempotency key (exact
   * match). Pass `nextCursor` back as `cursor` for the next page.
   */
  HttpApiEndpoint.get("list", "/workflow-runs", {
    query: {
      ...runFilters,
      state: Schema.optionalKey(RunState),
      q: Schema.optionalKey(Schema.String.check(Schema.isMaxLength(256))),
      limit: Schema.optionalKey(pageLimit),
      cursor: Schema.optionalKey(RunId)
    },
    success: RunPage
  }),
  /** How many runs match the filters, by state. */
  HttpApiEndpoint.get("counts", "/workflow-runs/counts", { query: runFilters, success: RunCounts }),
  /**
   * Which runs change, as Server-Sent Events, for as long as the caller stays connected: lists refresh from it
   * instead of polling.
   */
  HttpApiEndpoint.get("activity", "/workflow-runs/activity", {
    success: HttpApiSchema.StreamSse({ data: RunActivity })
  }),
  HttpApiEndpoint.get("status", "/workflow-runs/:id/status", { params: runParams, success: WorkflowRun, error: RunNotFound }),
  HttpApiEndpoint.post("cancel", "/workflow-runs/:id/cancel", {
    params: runParams,
    success: WorkflowRun,
    error: [RunNotFound, InvalidTransition]
  }),
  /**
   * Runs a failed or cancelled run again, as the same run: completed tasks are replayed from its journal, failed
   * and unfinished ones run again, and its workflow attempt goes up by one. `InvalidTransition` (409) for a run in
   * any other state.
   */
  HttpApiEndpoint.post("retry", "/workflow-runs/:id/retry", {
    params: runParams,
    success: WorkflowRun,
    error: [RunNotFound, InvalidTransition]
  }),
  /**
   * Runs a failed or cancelled run again from a journal entry: that entry and every one after it are discarded
   * (kept in `/workflow-runs/:id/discarded`, no longer replayed), events they received are kept for the next waits.
   */
  HttpApiEndpoint.post("reset", "/workflow-runs/:id/reset", {
    params: runParams,
    payload: ResetRun,
    success: WorkflowRun,
    error: [RunNotFound, InvalidTransition, InvalidRequest]
  }),
  /** The journal entries resets discarded, oldest reset first. */
  HttpApiEndpoint.get("discarded", "/workflow-runs/:id/discarded", {
    params: runParams,
    success: Schema.Array(DiscardedTask),
    error: RunNotFound
  }),
  HttpApiEndpoint.get("tasks", "/workflow-runs/:id/tasks", {
    params: runParams,
    success: Schema.Array(Task),
    error: RunNotFound
  }),
  /** The runs this run started as children (`startChild`), oldest first. */
  HttpApiEndpoint.get("children", "/workflow-runs/:id/children", {
    params: runParams,
    success: Schema.Array(WorkflowRun),
    error: RunNotFound
  }),
  HttpApiEndpoint.get("transitions", "/workflow-runs/:id/transitions", {
    params: runParams,
    success: Schema.Array(Transition),
    error: RunNotFound
  }),
  /**
   * Sends an event to a run; a run waiting for that name wakes up, otherwise it is kept for its next wait of that
   * name. With `eventId`, sending again is idempotent.
   */
  HttpApiEndpoint.post("sendEvent", "/workflow-runs/:id/events/:name", {
    params: { id: RunId, name: EventName },
    payload: SendEvent,
    success: SentEvent,
    error: [RunNotFound, InvalidTransition, EventConflict]
  }),
  /**
   * Follows a run as Server-Sent Events: its current state first, then every change to it or its tasks, until it
   * reaches a final state (then the stream ends). `tasks=false` leaves the tasks out (the run's own changes only):
   * what waiting for a run's result needs, and the server then reads no task for every task change.
   */
  HttpApiEndpoint.get("events", "/workflow-runs/:id/events", {
    params: runParams,
    query: { tasks: Schema.optionalKey(Schema.Boolean) },
    success: HttpApiSchema.StreamSse({ data: RunUpdate }),
    error: RunNotFound
  })
).middleware(RequestValidation).middleware(ClientAccess).annotateMerge(
  OpenApi.annotations({ title: "Runs", description: "Status, tasks, audit trail and cancellation of a run" })
) {}

const scheduleParams = { id: ScheduleId }

/**
 * Schedules: runs started by the server at fire times (cron or interval). Each one shows its next fire times, its
 * latest runs and how many fire times it skipped.
 */
export class SchedulesApi extends HttpApiGroup.make("schedules").add(
  /** Every schedule (or those of one workflow), by id. */
  HttpApiEndpoint.get("list", "/schedules", {
    query: { workflow: Schema.optionalKey(WorkflowName) },
    success: Schema.Array(Schedule)
  }),
  /** `InvalidRequest` when the payload violates the JSON Schema registered for the version. */
  HttpApiEndpoint.post("create", "/schedules", { payload: CreateSchedule, success: Schedule, error: [ScheduleExists, InvalidRequest] }),
  HttpApiEndpoint.get("get", "/schedules/:id", { params: scheduleParams, success: Schedule, error: ScheduleNotFound }),
  /** No fire time starts a run until it is resumed. */
  HttpApiEndpoint.post("pause", "/schedules/:id/pause", { params: scheduleParams, success: Schedule, error: ScheduleNotFound }),
  /** Fires again from the next fire time on (fire times while paused are not caught up). */
  HttpApiEndpoint.post("resume", "/schedules/:id/resume", { params: scheduleParams, success: Schedule, error: ScheduleNotFound }),
  /** Starts a run now, whatever the overlap policy says. */
  HttpApiEndpoint.post("trigger", "/schedules/:id/trigger", { params: scheduleParams, success: StartedRun, error: ScheduleNotFound }),
  /** Starts the runs of every fire time in a past range; fire times that already have a run keep it. */
  HttpApiEndpoint.post("backfill", "/schedules/:id/backfill", {
    params: scheduleParams,
    payload: Backfill,
    success: BackfillResult,
    error: [ScheduleNotFound, InvalidRequest]
  }),
  /** Deletes the schedule; the runs it started stay. */
  HttpApiEndpoint.delete("delete", "/schedules/:id", { params: scheduleParams, error: ScheduleNotFound })
).middleware(RequestValidation).middleware(ClientAccess).annotateMerge(
  OpenApi.annotations({ title: "Schedules", description: "Cron and interval schedules that start runs" })
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

/** The fleet: every worker with its health, capacity and the runs it holds. For operators only. */
export class FleetApi extends HttpApiGroup.make("fleet").add(
  HttpApiEndpoint.get("workers", "/workers", { success: Schema.Array(WorkerSummary) })
).middleware(RequestValidation).middleware(AdminAccess).annotateMerge(
  OpenApi.annotations({ title: "Fleet", description: "Every worker, for operators (admin keys)" })
) {}

/**
 * The dashboard's login: a browser exchanges an API key for an HttpOnly session cookie that stands for the key's
 * role, so that links and live updates authenticate without the key living in the page.
 */
export class SessionApi extends HttpApiGroup.make("session").add(
  /** Who the caller is (with its key or its cookie); without either, `Unauthorized` when keys are configured. */
  HttpApiEndpoint.get("current", "/auth/session", { success: Session }).middleware(ClientAccess),
  /** Checks the key and sets the session cookie. Only keys that may read runs (`admin`, `client`) may log in. */
  HttpApiEndpoint.post("login", "/auth/session", { payload: Login, success: Session, error: [Unauthorized, Forbidden] }),
  /** Clears the session cookie. */
  HttpApiEndpoint.delete("logout", "/auth/session", {})
).middleware(RequestValidation).annotateMerge(
  OpenApi.annotations({ title: "Session", description: "The dashboard's login with an API key (a session cookie)" })
) {}

/**
 * The worker protocol: register, claim runs (leases), heartbeat, and write what happens to the runs held. Every
 * write about a run carries the lease epoch it was granted; a stale epoch is answered `LeaseLost` and changes
 * nothing. Claims and writes are batched: a worker sends what all its runs have to say in one request.
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
  /** Grants the runs it can (a lease each, with its journal) and says why it refused the others. */
  HttpApiEndpoint.post("claim", "/workers/:id/claim", {
    params: { id: WorkerId },
    payload: ClaimRuns,
    success: Claims
  }),
  /**
   * Writes about the runs the worker holds (task attempts, outcomes, events received, parking, completion),
   * committed together and answered one by one, in order.
   */
  HttpApiEndpoint.post("write", "/workers/:id/writes", {
    params: { id: WorkerId },
    payload: WriteBatch,
    success: WriteResults
  })
).middleware(RequestValidation).middleware(WorkerAccess).annotateMerge(
  OpenApi.annotations({ title: "Execution", description: "The protocol workers speak: leases, tasks, results" })
) {}

export class AikiApi extends HttpApi.make("aiki")
  .add(HealthApi)
  .add(WorkflowsApi)
  .add(RunsApi)
  .add(SchedulesApi)
  .add(WorkersApi)
  .add(FleetApi)
  .add(SessionApi)
  .add(ExecutionApi)
  .annotateMerge(OpenApi.annotations({
    title: "Aiki",
    version,
    description: "Durable workflow engine: start runs, follow them, and the protocol workers use to execute them"
  }))
{}
