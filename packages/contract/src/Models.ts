/**
 * The records the API returns and accepts: runs, tasks and their attempts, state transitions, workers and
 * workflow definitions. Payloads and results are JSON values; timestamps are UTC instants (ISO strings on the wire).
 */
import * as Schema from "effect/Schema"
import { Role } from "./Access.ts"
import {
  EventName,
  IdempotencyKey,
  ScheduleId,
  LeaseEpoch,
  RunId,
  TaskAddress,
  TaskName,
  WorkerId,
  WorkflowName,
  WorkflowVersion
} from "./Ids.ts"
import { IdempotencyConflict, InvalidRequest, InvalidTransition, LeaseLost, PayloadTooLarge, RunNotFound, TaskNotFound } from "./Errors.ts"
import { Debounce, FlowPolicy, Limit, Priority, StartFlow, WaitingFor, WaitingReason } from "./FlowControl.ts"
import { ParkedState, RunState } from "./RunState.ts"
import { Trigger } from "./Schedules.ts"
import { TaskState } from "./TaskState.ts"
import { FailureReason, StartTimeouts, TaskTimeoutKind, TimeoutMs } from "./Timeouts.ts"

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

/**
 * What a parent's cancellation does to a child it started and that has not finished: `cancel` it too (and, through
 * it, its own children), or `abandon` it to run on.
 */
export const ParentClosePolicy = Schema.Literals(["cancel", "abandon"])
export type ParentClosePolicy = typeof ParentClosePolicy.Type

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
  traceParent: Schema.optionalKey(Schema.String),
  /** The replay semantics the run is pinned to (set when a worker first executes it); see `ReplayVersion`. */
  replayVersion: Schema.optionalKey(Schema.Int),
  /** While `awaiting_event`: the names of the events that wake it. */
  awaitingEvents: Schema.optionalKey(Schema.Array(EventName)),
  /** 1 (lowest) to 10 (highest); see `FlowControl.Priority`. Absent from runs recorded before priorities (5). */
  priority: Schema.optionalKey(Priority),
  /** Runs with this key share the concurrency limit. */
  concurrencyKey: Schema.optionalKey(Schema.String),
  /** This run's own per-key limit (over its version's). */
  concurrencyLimit: Schema.optionalKey(Limit),
  /** Runs with this key run one at a time, in the order they were started. */
  orderingKey: Schema.optionalKey(Schema.String),
  /** Its rate-limit bucket (`""` is the workflow's one bucket). */
  rateLimitKey: Schema.optionalKey(Schema.String),
  /** While it has not started: the debounce key later starts replace it under. */
  debounceKey: Schema.optionalKey(Schema.String),
  /** While pending: what it waits for before a worker may take it (a limit, its turn, a debounce delay). */
  waitingFor: Schema.optionalKey(WaitingFor),
  /** The schedule that started it, and the fire time it was started for. */
  scheduleId: Schema.optionalKey(ScheduleId),
  scheduledFor: Schema.optionalKey(Timestamp),
  /** When it fails as `timed_out` unless it finished (its execution timeout). */
  deadlineAt: Schema.optionalKey(Timestamp),
  /** When it fails as `schedule_to_start_timed_out` unless a worker claimed it by then. */
  startDeadlineAt: Schema.optionalKey(Timestamp),
  /** Set when the server failed the run (a timeout, a poisoned run); its `error` says more. */
  failureReason: Schema.optionalKey(FailureReason),
  /** How many times in a row its lease lapsed without progress (see `Timeouts.ts`). */
  lapses: Schema.optionalKey(Schema.Int),
  /**
   * The workflow attempt, counted by the server over the run's life: 1, then one more for each workflow-level retry
   * (the workflow's `retry` policy) and each retry or reset by hand. Absent from runs recorded before it (1).
   */
  attempt: Schema.optionalKey(Schema.Int),
  /** The attempt as the workflow's retry policy counts it: 1 again after each retry or reset by hand. */
  policyAttempt: Schema.optionalKey(Schema.Int),
  /** Why the start was flagged: e.g. no worker had registered its version yet (it waits for one). */
  startWarning: Schema.optionalKey(Schema.String),
  /** The run that started this one as its child (`startChild`), and what that run's cancellation does to it. */
  parentRunId: Schema.optionalKey(RunId),
  parentClosePolicy: Schema.optionalKey(ParentClosePolicy),
  /** While `awaiting_child`: the children whose end wakes it. */
  awaitingChildren: Schema.optionalKey(Schema.Array(RunId))
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
  error: Schema.optionalKey(ErrorDetails),
  /** The server fails the attempt (`TaskTimedOut`, kind `start_to_close`) if it is still open then. */
  timeoutAt: Schema.optionalKey(Timestamp),
  /** The attempt must heartbeat at least this often (`TaskTimedOut`, kind `heartbeat`). */
  heartbeatTimeoutMs: Schema.optionalKey(Schema.Int),
  /** Its last heartbeat, and the details it carried. */
  heartbeatAt: Schema.optionalKey(Timestamp),
  heartbeatDetails: Schema.optionalKey(Json)
}) {}

/**
 * A journal entry of a run: a task (or a durable wait: `aiki.sleep`, `aiki.event`), with every attempt made at it.
 * `sequence` is its place among the calls the workflow's code made; `outcomeOrder` is the place of its outcome
 * among the outcomes the code received. A replay delivers recorded outcomes in that order, which is what makes
 * replaying concurrent code independent of timing.
 */
export class Task extends Schema.Class<Task>("Task")({
  address: TaskAddress,
  sequence: Schema.Int,
  name: TaskName,
  state: TaskState,
  payload: Json,
  result: Schema.optionalKey(Json),
  error: Schema.optionalKey(ErrorDetails),
  attempts: Schema.Array(TaskAttempt),
  /** Set once the outcome is final (`completed`, or `failed` for good). */
  outcomeOrder: Schema.optionalKey(Schema.Int),
  /**
   * When a waiting entry is due: a sleep's wake-up, a timed event wait's deadline, or the next attempt of a task
   * waiting to be retried.
   */
  notBefore: Schema.optionalKey(Timestamp),
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
  resultSchema: Schema.optionalKey(Json),
  /** The limits its runs obey (priority, concurrency, rate). */
  flowControl: Schema.optionalKey(FlowPolicy),
  /** The schedule it declares (`<name>:trigger`); the highest version declaring one owns it. */
  trigger: Schema.optionalKey(Trigger),
  /** Its runs fail (`timed_out`) this long after they were started, unless a start says otherwise. */
  executionTimeoutMs: Schema.optionalKey(TimeoutMs)
})
export type WorkflowDefinition = typeof WorkflowDefinition.Type

/** A workflow version the server knows, as its workers registered it. */
export class RegisteredWorkflow extends Schema.Class<RegisteredWorkflow>("RegisteredWorkflow")({
  name: WorkflowName,
  version: WorkflowVersion,
  payloadSchema: Schema.optionalKey(Json),
  resultSchema: Schema.optionalKey(Json),
  flowControl: Schema.optionalKey(FlowPolicy),
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

/** A debounced start takes no idempotency key: the debounce key says which run it is. */
const debouncedWithoutKey = Schema.makeFilter((start: { readonly debounce?: unknown; readonly idempotencyKey?: unknown }) =>
  start.debounce !== undefined && start.idempotencyKey !== undefined
    ? { path: ["debounce"], issue: "a debounced start takes no idempotency key (its key is the debounce key)" }
    : undefined
)

export const StartRun = Schema.Struct({
  payload: Json,
  idempotencyKey: Schema.optionalKey(IdempotencyKey),
  ...StartFlow,
  ...StartTimeouts,
  /** Replace the not-yet-started run with the same debounce key instead of starting another one. */
  debounce: Schema.optionalKey(Debounce)
}).check(debouncedWithoutKey)
export type StartRun = typeof StartRun.Type

export class StartedRun extends Schema.Class<StartedRun>("StartedRun")({
  id: RunId,
  state: RunState,
  /** False when an idempotency key matched an existing run, which is returned instead. */
  created: Schema.Boolean,
  /** True when the start replaced the payload of a run waiting under the same debounce key. */
  debounced: Schema.optionalKey(Schema.Boolean),
  /** The start was accepted but flagged: e.g. no worker has registered this version yet (also in the run's status). */
  warning: Schema.optionalKey(Schema.String)
}) {}

/**
 * Several runs to start in one request: the SDK's client gathers the starts its callers make concurrently. Each is
 * answered on its own, in order; the server commits them together.
 */
export const StartRuns = Schema.Struct({
  runs: Schema.Array(Schema.Struct({
    workflowName: WorkflowName,
    workflowVersion: WorkflowVersion,
    payload: Json,
    idempotencyKey: Schema.optionalKey(IdempotencyKey),
    /** The W3C `traceparent` the run's execution continues (the caller's span when it made this start). */
    traceParent: Schema.optionalKey(Schema.String),
    ...StartFlow,
    ...StartTimeouts,
    debounce: Schema.optionalKey(Debounce)
  }).check(debouncedWithoutKey)).check(Schema.isMinLength(1), Schema.isMaxLength(1_000))
})
export type StartRuns = typeof StartRuns.Type

/** A journal entry a reset discarded: the entry as it was, and which reset of the run discarded it (1 first). */
export class DiscardedTask extends Schema.Class<DiscardedTask>("DiscardedTask")({
  reset: Schema.Int,
  discardedAt: Timestamp,
  task: Task
}) {}

/**
 * Where a reset goes back to: the journal entry at `sequence`, or the `occurrence`-th call (0 first) of the task
 * `task`. That entry and every one after it are discarded (kept in the run's history, no longer replayed).
 */
export const ResetRun = Schema.Struct({
  sequence: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
  task: Schema.optionalKey(TaskName),
  /** @default 0 */
  occurrence: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)))
}).check(Schema.makeFilter((reset: { readonly sequence?: number; readonly task?: string }) =>
  (reset.sequence === undefined) === (reset.task === undefined)
    ? { path: ["sequence"], issue: "give either sequence or task (with an optional occurrence)" }
    : undefined
))
export type ResetRun = typeof ResetRun.Type

export class StartedRuns extends Schema.Class<StartedRuns>("StartedRuns")({
  results: Schema.Array(Schema.Union([StartedRun, IdempotencyConflict, PayloadTooLarge, InvalidRequest]))
}) {}

export const RegisterWorker = Schema.Struct({
  workflows: Schema.Array(WorkflowDefinition),
  maxConcurrentRuns: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)))
})
export type RegisterWorker = typeof RegisterWorker.Type

/** Bounds on how long a lease lasts before another worker may take the run over. */
export const LeaseMs = Schema.Int.check(Schema.isBetween({ minimum: 1_000, maximum: 3_600_000 }))

/**
 * The replay semantics a worker implements. A run is pinned to the version it was first executed with, and only
 * workers implementing that version (or a later one that keeps it) are granted it; see `docs/replay.md`.
 * 1: recorded outcomes are delivered in call order (journals recorded before outcome orders existed).
 * 2: recorded outcomes are delivered in their recorded outcome order, each once the workflow's code is idle.
 */
export const ReplayVersion = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 1_000 }))

/** A granted lease: the run, its epoch and expiry, its journal so far, and the server's clock when it was granted. */
export class Lease extends Schema.Class<Lease>("Lease")({
  run: WorkflowRun,
  leaseEpoch: LeaseEpoch,
  leaseExpiresAt: Timestamp,
  journal: Schema.Array(Task),
  /** The server's clock at the grant; workers measure the times they send (due times) against it. */
  serverTime: Timestamp
}) {}

/** Runs a worker received (from Redis Streams) and asks to be granted, in one request. */
export const ClaimRuns = Schema.Struct({
  runIds: Schema.Array(RunId).check(Schema.isMaxLength(500)),
  /** @default 60_000 */
  leaseMs: Schema.optionalKey(LeaseMs),
  replayVersion: ReplayVersion
})
export type ClaimRuns = typeof ClaimRuns.Type

/** Why a run was not granted; flow control refusals (`WaitingReason`) leave it pending until it is offered again. */
export const ClaimRefusal = Schema.Literals([
  "held",
  "finished",
  "not_found",
  "unsupported_replay_version",
  "not_runnable",
  ...WaitingReason.literals
])
export type ClaimRefusal = typeof ClaimRefusal.Type

export class Claims extends Schema.Class<Claims>("Claims")({
  leases: Schema.Array(Lease),
  refused: Schema.Array(Schema.Struct({
    runId: RunId,
    reason: ClaimRefusal,
    message: Schema.String
  }))
}) {}

export const HeldRun = Schema.Struct({
  runId: RunId,
  leaseEpoch: LeaseEpoch
})
export type HeldRun = typeof HeldRun.Type

/** Bounds on how long a worker counts as alive without a heartbeat. */
export const LivenessMs = Schema.Int.check(Schema.isBetween({ minimum: 1_000, maximum: 600_000 }))

export const Heartbeat = Schema.Struct({
  /** Runs whose leases to extend (the worker sends them every `heartbeatIntervalMs`, not with every beat). */
  runs: Schema.Array(HeldRun),
  /** @default 60_000 */
  leaseMs: Schema.optionalKey(LeaseMs),
  /**
   * The worker counts as alive for this long after the beat. Once it lapses, the runs it holds may be taken over
   * at once, without waiting for their leases: that is what makes recovery after a worker's death take seconds.
   * @default 10_000
   */
  livenessMs: Schema.optionalKey(LivenessMs)
})
export type Heartbeat = typeof Heartbeat.Type

/** Which held runs the worker must stop: cancelled ones, and ones whose lease another worker now holds. */
export class HeartbeatReply extends Schema.Class<HeartbeatReply>("HeartbeatReply")({
  extended: Schema.Array(RunId),
  cancelled: Schema.Array(RunId),
  lost: Schema.Array(RunId)
}) {}

const held = { runId: RunId, leaseEpoch: LeaseEpoch }
const Attempt = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1))

/**
 * Attempt `attempt` of the journal entry at `address` began. Workers need not wait for it: it travels with their
 * next write (often with the attempt's own outcome). An attempt whose start never reached the server is not
 * counted (a crash before it was sent costs one uncounted attempt at most).
 */
export const StartTask = Schema.TaggedStruct("StartTask", {
  ...held,
  address: TaskAddress,
  /** The entry's place among the run's calls, as the workflow's code made them. */
  sequence: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  name: TaskName,
  payload: Json,
  attempt: Attempt,
  /** A durable wait's due time (a sleep's wake-up, a timed event wait's deadline). */
  notBefore: Schema.optionalKey(Timestamp),
  /** The server fails the attempt (`TaskTimedOut`) if it has not finished this long after it began. */
  timeoutMs: Schema.optionalKey(TimeoutMs),
  /** The server fails the attempt (`TaskTimedOut`) if it goes this long without a `HeartbeatTask`. */
  heartbeatTimeoutMs: Schema.optionalKey(TimeoutMs)
})
export type StartTask = typeof StartTask.Type

export const TaskOutcome = Schema.Union([
  Schema.TaggedStruct("Completed", { result: Json }),
  Schema.TaggedStruct("Failed", {
    error: ErrorDetails,
    /** Another attempt follows at this time (the entry goes to `retrying`); absent when it failed for good. */
    retryAt: Schema.optionalKey(Timestamp)
  })
])
export type TaskOutcome = typeof TaskOutcome.Type

/** Attempt `attempt` of the entry at `address` ended. */
export const FinishTask = Schema.TaggedStruct("FinishTask", {
  ...held,
  address: TaskAddress,
  attempt: Attempt,
  /** How long the attempt ran, by the worker's clock (places its start when both travel together). */
  elapsedMs: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  outcome: TaskOutcome,
  /** For a final outcome: its place among the outcomes the workflow's code received (see `Task.outcomeOrder`). */
  outcomeOrder: Schema.optionalKey(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)))
})
export type FinishTask = typeof FinishTask.Type

/**
 * Takes the oldest event `name` sent to the run that no entry received yet, for the entry at `address` (which must
 * be started). Asking again for the same entry returns the same event. Past a timed wait's deadline (the entry's
 * `notBefore`, by the database's clock) only an event sent by then is taken; otherwise the answer is
 * `NoEvent { timedOut: true }`.
 */
export const ReceiveEvent = Schema.TaggedStruct("ReceiveEvent", {
  ...held,
  address: TaskAddress,
  name: EventName
})
export type ReceiveEvent = typeof ReceiveEvent.Type

/**
 * Parks the run, holding no worker, until `wakeAt` or until one of `events` is sent, whichever comes first; the
 * server then makes it pending again and any worker resumes it from its journal. Refused (`EventWaiting`) when one
 * of `events` is already waiting to be received.
 */
export const ParkRun = Schema.TaggedStruct("ParkRun", {
  ...held,
  state: ParkedState,
  wakeAt: Schema.optionalKey(Timestamp),
  events: Schema.Array(EventName),
  /** Children whose end wakes the run (refused with `ChildrenEnded` when one of them has ended already). */
  children: Schema.optionalKey(Schema.Array(RunId))
})
export type ParkRun = typeof ParkRun.Type

/**
 * Starts a child run for the journal entry at `address` (named `aiki.child`, its payload the entry payload the
 * worker hashed): the entry and the child run are created together, the child naming the run as its parent. The
 * child's idempotency key is `idempotencyKey`, else one derived from the parent run and `sequence`, so asking again
 * (a retried request, a replay after a crash) returns the same child: a replay never starts it twice.
 */
export const StartChild = Schema.TaggedStruct("StartChild", {
  ...held,
  address: TaskAddress,
  sequence: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  /** The entry's payload, as the worker placed it in the journal. */
  entryPayload: Json,
  workflowName: WorkflowName,
  workflowVersion: WorkflowVersion,
  payload: Json,
  idempotencyKey: Schema.optionalKey(IdempotencyKey),
  parentClosePolicy: ParentClosePolicy
})
export type StartChild = typeof StartChild.Type

/**
 * Waits for child `childRunId` in the journal entry at `address` (named `aiki.child.result`), created on first
 * ask: answered `ChildEnded` with its outcome once it has ended, else `ChildRunning` (park the run with the child
 * in `children` to be woken when it ends).
 */
export const AwaitChild = Schema.TaggedStruct("AwaitChild", {
  ...held,
  address: TaskAddress,
  sequence: Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)),
  entryPayload: Json,
  childRunId: RunId
})
export type AwaitChild = typeof AwaitChild.Type

export const CompleteRun = Schema.TaggedStruct("CompleteRun", { ...held, result: Json })
export type CompleteRun = typeof CompleteRun.Type

export const FailRun = Schema.TaggedStruct("FailRun", { ...held, error: ErrorDetails })
export type FailRun = typeof FailRun.Type

/**
 * The running attempt `attempt` of the task at `address` is alive (`ctx.heartbeat(details)`): its heartbeat timeout
 * starts over. Answered `AttemptTimedOut` when the server already failed the attempt. With `probe`, it only asks
 * (the worker's check once a deadline passed, in case it missed the signal): nothing is renewed.
 */
export const HeartbeatTask = Schema.TaggedStruct("HeartbeatTask", {
  ...held,
  address: TaskAddress,
  attempt: Attempt,
  details: Schema.optionalKey(Json),
  probe: Schema.optionalKey(Schema.Boolean)
})
export type HeartbeatTask = typeof HeartbeatTask.Type

/** Gives a held run back (the worker is shutting down): pending again, for another worker at once. */
export const ReleaseRun = Schema.TaggedStruct("ReleaseRun", held)
export type ReleaseRun = typeof ReleaseRun.Type

/**
 * The workflow failed and its retry policy runs it again: the server counts the attempt (`WorkflowRun.attempt`),
 * so a worker taking the run over goes on from it instead of starting the count over. Idempotent.
 */
export const BeginAttempt = Schema.TaggedStruct("BeginAttempt", {
  ...held,
  /** The attempt beginning, as the retry policy counts it (`WorkflowRun.policyAttempt`). */
  attempt: Attempt
})
export type BeginAttempt = typeof BeginAttempt.Type

/** One thing a worker reports about a run it holds. Every write is fenced by the lease epoch it carries. */
export const Write = Schema.Union([
  StartTask,
  FinishTask,
  ReceiveEvent,
  ParkRun,
  CompleteRun,
  FailRun,
  ReleaseRun,
  HeartbeatTask,
  BeginAttempt,
  StartChild,
  AwaitChild
])
export type Write = typeof Write.Type

/**
 * Writes from all the runs a worker holds, committed together in one transaction and answered one by one, in
 * order: one run's lost lease does not fail its neighbours. Writes of one run are applied in the order given.
 */
export const WriteBatch = Schema.Struct({
  writes: Schema.Array(Write).check(Schema.isMinLength(1), Schema.isMaxLength(2_000))
})
export type WriteBatch = typeof WriteBatch.Type

/** The answer to one write that was applied (or was already applied: writes are idempotent). */
export const Written = Schema.TaggedStruct("Written", {})
/** `ReceiveEvent`: the event the entry received. */
export const EventReceived = Schema.TaggedStruct("EventReceived", { payload: Json })
/**
 * `ReceiveEvent`: no such event yet. `timedOut` when the entry's deadline (its `notBefore`, a timed wait's) has
 * passed by the server's clock: the wait is over, an event sent from now on stays for the next wait.
 */
export const NoEvent = Schema.TaggedStruct("NoEvent", { timedOut: Schema.optionalKey(Schema.Boolean) })
/** `ParkRun` refused: an awaited event is already waiting, receive it instead. */
export const EventWaiting = Schema.TaggedStruct("EventWaiting", { names: Schema.Array(EventName) })
/** `HeartbeatTask`: the server failed the attempt for a timeout; the worker must abort it. */
export const AttemptTimedOut = Schema.TaggedStruct("AttemptTimedOut", { kind: TaskTimeoutKind })

/** `StartChild`: the child run (created now, or the one the idempotency key already names). */
export const ChildStarted = Schema.TaggedStruct("ChildStarted", { childRunId: RunId })
/** `AwaitChild`: the child has not ended yet. */
export const ChildRunning = Schema.TaggedStruct("ChildRunning", {})
/** `AwaitChild`: how the child ended (a run that timed out ended `failed`, saying so in its error). */
export const ChildEnded = Schema.TaggedStruct("ChildEnded", {
  state: Schema.Literals(["completed", "failed", "cancelled"]),
  result: Schema.optionalKey(Json),
  error: Schema.optionalKey(ErrorDetails)
})
export type ChildEnded = typeof ChildEnded.Type
/** `ParkRun` refused: an awaited child has ended already, ask for its outcome instead. */
export const ChildrenEnded = Schema.TaggedStruct("ChildrenEnded", { runIds: Schema.Array(RunId) })

/** The answer to each write of a batch, in the order of the writes. */
export const WriteResult = Schema.Union([
  Written,
  EventReceived,
  NoEvent,
  EventWaiting,
  AttemptTimedOut,
  ChildStarted,
  ChildRunning,
  ChildEnded,
  ChildrenEnded,
  IdempotencyConflict,
  LeaseLost,
  RunNotFound,
  InvalidTransition,
  TaskNotFound,
  PayloadTooLarge
])
export type WriteResult = typeof WriteResult.Type

export class WriteResults extends Schema.Class<WriteResults>("WriteResults")({
  results: Schema.Array(WriteResult)
}) {}

/** What a worker learns when it registers: where its runs are delivered, and the server's limits. */
export class Registration extends Schema.Class<Registration>("Registration")({
  worker: WorkerHealth,
  /** The Redis stream of each registered version; absent when the server has no Redis (use `poll`). */
  streams: Schema.optionalKey(Schema.Array(Schema.Struct({
    name: WorkflowName,
    version: WorkflowVersion,
    stream: Schema.String,
    /** The priorities the stream carries (`FlowControl.Priority`); read the high band first. @default "normal" */
    band: Schema.optionalKey(Schema.Literals(["high", "normal", "low"]))
  }))),
  consumerGroup: Schema.String,
  /** The largest payload, result or error the server stores, in bytes (`MAX_PAYLOAD_BYTES`). */
  maxPayloadBytes: Schema.Int,
  /** The largest request of writes or claims the server accepts, in bytes. */
  maxBatchBytes: Schema.Int
}) {}

/**
 * Something a worker must act on at once, pushed to it while it is connected. `Connected` opens the stream and
 * `Ping` keeps it alive through idle proxies; `Cancelled` names a run of the worker's that was cancelled,
 * `TaskTimedOut` an attempt the server failed for a timeout, `RunStopped` a run the server failed.
 */
export const WorkerSignal = Schema.Union([
  Schema.TaggedStruct("Connected", {}),
  Schema.TaggedStruct("Ping", {}),
  Schema.TaggedStruct("Cancelled", { runId: RunId }),
  /** The server failed an attempt of one of the worker's runs for a timeout: abort it. */
  Schema.TaggedStruct("TaskTimedOut", { runId: RunId, address: TaskAddress, attempt: Schema.Int, kind: TaskTimeoutKind }),
  /** The server ended one of the worker's runs (`failed`, see `failureReason`): stop it. */
  Schema.TaggedStruct("RunStopped", { runId: RunId, reason: FailureReason })
])
export type WorkerSignal = typeof WorkerSignal.Type

export class Health extends Schema.Class<Health>("Health")({
  status: Schema.Literals(["ok"]),
  version: Schema.String
}) {}

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
  leaseMs: Schema.optionalKey(LeaseMs),
  replayVersion: ReplayVersion
})
export type PollRuns = typeof PollRuns.Type

/** An event for a run: delivered to its next `waitForEvent` of that name (kept until then). */
export const SendEvent = Schema.Struct({
  payload: Json,
  /**
   * Makes sending idempotent: an event with an id the run already has (received or not) stores nothing and answers
   * with the first (`duplicate: true`); the same id with another name or payload is an `EventConflict`.
   * @default none: every send is a new event
   */
  eventId: Schema.optionalKey(Schema.String.check(Schema.isMinLength(1), Schema.isMaxLength(256)))
})
export type SendEvent = typeof SendEvent.Type

export class SentEvent extends Schema.Class<SentEvent>("SentEvent")({
  /** The id given with the event, or else the number the server gave it. */
  eventId: Schema.String,
  /** True when an event with this id was sent before: nothing new was stored, nothing woke. */
  duplicate: Schema.optionalKey(Schema.Boolean),
  /** The run's state after the event arrived (`pending` when it woke a run waiting for it). */
  runState: RunState
}) {}

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
