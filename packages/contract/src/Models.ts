/**
 * The records the API returns and accepts: runs, tasks and their attempts, state transitions, workers and
 * workflow definitions. Payloads and results are JSON values; timestamps are UTC instants (ISO strings on the wire).
 */
import { Schema } from "effect"
import { Role } from "./Access.ts"
import {
  EventName,
  IdempotencyKey,
  LeaseEpoch,
  RunId,
  TaskAddress,
  TaskName,
  WorkerId,
  WorkflowName,
  WorkflowVersion
} from "./Ids.ts"
import { RunState } from "./RunState.ts"
import { TaskState } from "./TaskState.ts"

/** A UTC instant, an ISO 8601 string on the wire (also inside SSE events, which encode to plain JSON). */
export const Timestamp = Schema.DateTimeUtcFromString
export type Timestamp = typeof Timestamp.Type

/** Any JSON value: payloads, results and error data. */
export const Json = Schema.Json
export type Json = Schema.Json

/** What a failure looks like once it is stored: enough to show it and to rebuild a typed error in the SDK. */
export const ErrorDetails = Schema.Struct({
  name: Schema.String,
  message: Schema.String,
  stack: Schema.optionalKey(Schema.String),
  /** The encoded typed error of an Effect workflow or task, when it has one. */
  data: Schema.optionalKey(Json)
})
export type ErrorDetails = typeof ErrorDetails.Type

export class WorkflowRun extends Schema.Class<WorkflowRun>("WorkflowRun")({
  id: RunId,
  workflowName: WorkflowName,
  workflowVersion: WorkflowVersion,
  state: RunState,
  payload: Json,
  result: Schema.optionalKey(Json),
  error: Schema.optionalKey(ErrorDetails),
  idempotencyKey: Schema.optionalKey(IdempotencyKey),
  /** How many times a worker was granted this run. */
  leaseEpoch: Schema.Int,
  leaseOwner: Schema.optionalKey(WorkerId),
  leaseExpiresAt: Schema.optionalKey(Timestamp),
  createdAt: Timestamp,
  updatedAt: Timestamp,
  startedAt: Schema.optionalKey(Timestamp),
  finishedAt: Schema.optionalKey(Timestamp),
  /** When a suspended run (`sleeping`, `awaiting_retry`) becomes pending again. */
  wakeAt: Schema.optionalKey(Timestamp),
  /** The W3C `traceparent` of the request that started the run; its execution continues that trace. */
  traceParent: Schema.optionalKey(Schema.String)
}) {}

/** One entry of a run's audit trail. Run transitions have no task address; task transitions do. */
export class Transition extends Schema.Class<Transition>("Transition")({
  id: Schema.Int,
  runId: RunId,
  taskAddress: Schema.optionalKey(TaskAddress),
  fromState: Schema.optionalKey(Schema.String),
  toState: Schema.String,
  reason: Schema.String,
  leaseEpoch: Schema.optionalKey(Schema.Int),
  workerId: Schema.optionalKey(WorkerId),
  at: Timestamp
}) {}

export class TaskAttempt extends Schema.Class<TaskAttempt>("TaskAttempt")({
  attempt: Schema.Int,
  leaseEpoch: Schema.Int,
  startedAt: Timestamp,
  finishedAt: Schema.optionalKey(Timestamp),
  error: Schema.optionalKey(ErrorDetails)
}) {}

/** A task of a run: one journal entry, with every attempt made at it. */
export class Task extends Schema.Class<Task>("Task")({
  address: TaskAddress,
  sequence: Schema.Int,
  name: TaskName,
  state: TaskState,
  payload: Json,
  result: Schema.optionalKey(Json),
  error: Schema.optionalKey(ErrorDetails),
  attempts: Schema.Array(TaskAttempt),
  createdAt: Timestamp,
  updatedAt: Timestamp
}) {}

/** One page of runs, newest first; pass `nextCursor` back as `cursor` for the next page. */
export class RunPage extends Schema.Class<RunPage>("RunPage")({
  runs: Schema.Array(WorkflowRun),
  nextCursor: Schema.optionalKey(Schema.String)
}) {}

/** A workflow version a worker can execute, as it registers it. */
export const WorkflowDefinition = Schema.Struct({
  name: WorkflowName,
  version: WorkflowVersion,
  /** JSON Schema of the payload, when the definition has one. */
  payloadSchema: Schema.optionalKey(Json),
  /** JSON Schema of the result, when the definition has one. */
  resultSchema: Schema.optionalKey(Json)
})
export type WorkflowDefinition = typeof WorkflowDefinition.Type

/** A workflow version the server knows, as its workers registered it. */
export class RegisteredWorkflow extends Schema.Class<RegisteredWorkflow>("RegisteredWorkflow")({
  name: WorkflowName,
  version: WorkflowVersion,
  payloadSchema: Schema.optionalKey(Json),
  resultSchema: Schema.optionalKey(Json),
  firstRegisteredAt: Timestamp,
  lastRegisteredAt: Timestamp
}) {}

export const WorkerStatus = Schema.Literals(["healthy", "stale"])
export type WorkerStatus = typeof WorkerStatus.Type

export class WorkerHealth extends Schema.Class<WorkerHealth>("WorkerHealth")({
  id: WorkerId,
  status: WorkerStatus,
  registeredAt: Timestamp,
  lastHeartbeatAt: Timestamp,
  heartbeatAgeMs: Schema.Int,
  runsInFlight: Schema.Int,
  workflows: Schema.Array(Schema.Struct({ name: WorkflowName, version: WorkflowVersion }))
}) {}

// ---------------------------------------------------------------------------------------------------------------
// Requests and responses of the worker protocol

export const StartRun = Schema.Struct({
  payload: Json,
  idempotencyKey: Schema.optionalKey(IdempotencyKey)
})
export type StartRun = typeof StartRun.Type

export class StartedRun extends Schema.Class<StartedRun>("StartedRun")({
  id: RunId,
  state: RunState,
  /** False when an idempotency key matched an existing run, which is returned instead. */
  created: Schema.Boolean
}) {}

export const RegisterWorker = Schema.Struct({
  workflows: Schema.Array(WorkflowDefinition),
  maxConcurrentRuns: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)))
})
export type RegisterWorker = typeof RegisterWorker.Type

/** Bounds on how long a lease lasts before another worker may take the run over. */
export const LeaseMs = Schema.Int.check(Schema.isBetween({ minimum: 1_000, maximum: 3_600_000 }))

export const ClaimRun = Schema.Struct({
  workerId: WorkerId,
  /** @default 60_000 */
  leaseMs: Schema.optionalKey(LeaseMs)
})
export type ClaimRun = typeof ClaimRun.Type

/** A granted lease: the run, its epoch and expiry, and its journal of tasks so far. */
export class Lease extends Schema.Class<Lease>("Lease")({
  run: WorkflowRun,
  leaseEpoch: LeaseEpoch,
  leaseExpiresAt: Timestamp,
  journal: Schema.Array(Task)
}) {}

export const HeldRun = Schema.Struct({
  runId: RunId,
  leaseEpoch: LeaseEpoch
})
export type HeldRun = typeof HeldRun.Type

export const Heartbeat = Schema.Struct({
  runs: Schema.Array(HeldRun),
  /** @default 60_000 */
  leaseMs: Schema.optionalKey(LeaseMs)
})
export type Heartbeat = typeof Heartbeat.Type

/** Which held runs the worker must stop: cancelled ones, and ones whose lease another worker now holds. */
export class HeartbeatReply extends Schema.Class<HeartbeatReply>("HeartbeatReply")({
  extended: Schema.Array(RunId),
  cancelled: Schema.Array(RunId),
  lost: Schema.Array(RunId)
}) {}

export const StartTask = Schema.Struct({
  leaseEpoch: LeaseEpoch,
  address: TaskAddress,
  name: TaskName,
  payload: Json,
  /**
   * The task's place among the run's task calls (0, 1, …), as the workflow code makes them. The journal is kept
   * in this order, so a replay can tell a changed workflow (non-determinism) from tasks that merely finished in
   * another order.
   */
  sequence: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  /** Run a task that failed for good once more (the workflow itself is being retried). @default false */
  restart: Schema.optionalKey(Schema.Boolean)
})
export type StartTask = typeof StartTask.Type

export const CompleteTask = Schema.Struct({
  leaseEpoch: LeaseEpoch,
  address: TaskAddress,
  attempt: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  result: Json
})
export type CompleteTask = typeof CompleteTask.Type

export const FailTask = Schema.Struct({
  leaseEpoch: LeaseEpoch,
  address: TaskAddress,
  attempt: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
  error: ErrorDetails,
  /** True when another attempt will follow (the task goes to `retrying`), false when it has failed for good. */
  willRetry: Schema.Boolean
})
export type FailTask = typeof FailTask.Type

export const CompleteRun = Schema.Struct({
  leaseEpoch: LeaseEpoch,
  result: Json
})
export type CompleteRun = typeof CompleteRun.Type

export const FailRun = Schema.Struct({
  leaseEpoch: LeaseEpoch,
  error: ErrorDetails
})
export type FailRun = typeof FailRun.Type

/** What a worker learns when it registers: where its runs are delivered. */
export class Registration extends Schema.Class<Registration>("Registration")({
  worker: WorkerHealth,
  /** The Redis stream of each registered version; absent when the server has no Redis (use `poll`). */
  streams: Schema.optionalKey(Schema.Array(Schema.Struct({
    name: WorkflowName,
    version: WorkflowVersion,
    stream: Schema.String
  }))),
  consumerGroup: Schema.String
}) {}

/**
 * Something a worker must act on at once, pushed to it while it is connected. `Connected` opens the stream and
 * `Ping` keeps it alive through idle proxies; `Cancelled` names a run of the worker's that was cancelled.
 */
export const WorkerSignal = Schema.Union([
  Schema.TaggedStruct("Connected", {}),
  Schema.TaggedStruct("Ping", {}),
  Schema.TaggedStruct("Cancelled", { runId: RunId })
])
export type WorkerSignal = typeof WorkerSignal.Type

export class Health extends Schema.Class<Health>("Health")({
  status: Schema.Literals(["ok"]),
  version: Schema.String
}) {}

/**
 * Parks a held run with no worker attached until `delayMs` has passed (a long retry delay, a sleep); the server
 * makes it pending again then, and any worker resumes it from its journal.
 */
export const SuspendRun = Schema.Struct({
  leaseEpoch: LeaseEpoch,
  state: Schema.Literals(["awaiting_retry", "sleeping"]),
  delayMs: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 366 * 24 * 3_600_000 })),
  /**
   * A journal entry to complete in the same transaction (a sleep: once the run is woken, its replay finds the
   * sleep done). Without it, a crash between the two writes could skip or repeat the wait.
   */
  completeTask: Schema.optionalKey(Schema.Struct({
    address: TaskAddress,
    attempt: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)),
    result: Json
  }))
})
export type SuspendRun = typeof SuspendRun.Type

export const ReleaseRun = Schema.Struct({
  leaseEpoch: LeaseEpoch
})
export type ReleaseRun = typeof ReleaseRun.Type

/** What a client following a run receives: the run whenever it changes, and each task as it changes. */
export const RunUpdate = Schema.Union([
  Schema.TaggedStruct("Run", { run: WorkflowRun }),
  Schema.TaggedStruct("Task", { task: Task })
])
export type RunUpdate = typeof RunUpdate.Type

/** A worker without Redis asks for runs: up to `max` of these versions, waiting up to `waitMs` for one. */
export const PollRuns = Schema.Struct({
  workflows: Schema.Array(Schema.Struct({ name: WorkflowName, version: WorkflowVersion })),
  max: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 100 })),
  /** @default 0 */
  waitMs: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 60_000 }))),
  /** @default 60_000 */
  leaseMs: Schema.optionalKey(LeaseMs)
})
export type PollRuns = typeof PollRuns.Type

/** An event for a run: delivered to its next `waitForEvent` of that name (kept until then). */
export const SendEvent = Schema.Struct({ payload: Json })
export type SendEvent = typeof SendEvent.Type

export class SentEvent extends Schema.Class<SentEvent>("SentEvent")({
  eventId: Schema.String,
  /** The run's state after the event arrived (`pending` when it woke a run waiting for it). */
  runState: RunState
}) {}

/** A worker asks for the run's oldest unconsumed event `name`, for the journal entry `address`. */
export const ReceiveEvent = Schema.Struct({
  leaseEpoch: LeaseEpoch,
  name: EventName,
  address: TaskAddress,
  attempt: Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))
})
export type ReceiveEvent = typeof ReceiveEvent.Type

/** The event, with the journal entry that now records it; or none yet: the run is parked (`awaiting_event`). */
export const ReceivedEvent = Schema.Union([
  Schema.TaggedStruct("Received", { payload: Json, task: Task }),
  Schema.TaggedStruct("Waiting", { run: WorkflowRun })
])
export type ReceivedEvent = typeof ReceivedEvent.Type

// ---------------------------------------------------------------------------------------------------------------
// Queries for operators and the dashboard: runs across workflows, counts, the fleet, the browser session

/** How many runs are in each state (every state is present, 0 when none). */
export const StateCounts = Schema.Record(RunState, Schema.Int)
export type StateCounts = typeof StateCounts.Type

/** Runs matching a filter, counted by state. */
export class RunCounts extends Schema.Class<RunCounts>("RunCounts")({
  total: Schema.Int,
  byState: StateCounts
}) {}

/** The runs of one workflow version, counted by state. */
export class WorkflowRunCounts extends Schema.Class<WorkflowRunCounts>("WorkflowRunCounts")({
  name: WorkflowName,
  version: WorkflowVersion,
  total: Schema.Int,
  byState: StateCounts
}) {}

/** A worker as operators see it: its health, the versions it serves, its capacity and the runs it holds. */
export class WorkerSummary extends Schema.Class<WorkerSummary>("WorkerSummary")({
  ...WorkerHealth.fields,
  /** How many runs it may hold at once, as it registered (absent when it did not say). */
  maxConcurrentRuns: Schema.optionalKey(Schema.Int),
  /** The runs it holds right now (running under its lease), newest first, at most 100. */
  heldRuns: Schema.Array(RunId)
}) {}

/**
 * Runs that changed, for pages that list runs: `Connected` opens the stream, `Changed` names the runs whose state
 * changed (coalesced over a short window), `Ping` keeps the stream alive through idle proxies.
 */
export const RunActivity = Schema.Union([
  Schema.TaggedStruct("Connected", {}),
  Schema.TaggedStruct("Changed", { runIds: Schema.Array(RunId) }),
  Schema.TaggedStruct("Ping", {})
])
export type RunActivity = typeof RunActivity.Type

/** A dashboard login: the API key, exchanged for a session cookie. */
export const Login = Schema.Struct({
  apiKey: Schema.String.check(Schema.isMinLength(1, { message: "an API key is not empty" }))
})
export type Login = typeof Login.Type

/** Who the browser is: the role of the key it logged in with (an anonymous admin when authentication is off). */
export class Session extends Schema.Class<Session>("Session")({
  role: Role,
  /** The key's non-secret name (`API_KEY`, `API_KEYS[1]`), or `anonymous`. */
  keyName: Schema.String,
  /** False when the server has no keys configured (`aiki dev`): nobody needs to log in. */
  authRequired: Schema.Boolean,
  /** When the session cookie stops being accepted; absent for API keys and when authentication is off. */
  expiresAt: Schema.optionalKey(Timestamp)
}) {}
