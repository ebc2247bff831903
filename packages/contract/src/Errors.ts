/**
 * Every error that crosses HTTP. Each carries its status, so the server answers with it and the client derived
 * from the API decodes it back into the same class.
 */
import * as Schema from "effect/Schema"
import { RunId, TaskAddress } from "./Ids.ts"
import { RunState } from "./RunState.ts"

export class RunNotFound extends Schema.TaggedError<RunNotFound>()("RunNotFound", {
  runId: Schema.String,
  message: Schema.String
}, { httpApiStatus: 404 }) {
  static of(runId: string) {
    return new RunNotFound({ runId, message: `No workflow run has id ${runId}` })
  }
}

export class TaskNotFound extends Schema.TaggedError<TaskNotFound>()("TaskNotFound", {
  runId: RunId,
  address: TaskAddress,
  message: Schema.String
}, { httpApiStatus: 404 }) {}

export class WorkerNotFound extends Schema.TaggedError<WorkerNotFound>()("WorkerNotFound", {
  workerId: Schema.String,
  message: Schema.String
}, { httpApiStatus: 404 }) {}

/** The idempotency key was used before with a different payload. */
export class IdempotencyConflict extends Schema.TaggedError<IdempotencyConflict>()("IdempotencyConflict", {
  idempotencyKey: Schema.String,
  existingRunId: RunId,
  message: Schema.String
}, { httpApiStatus: 409 }) {}

/** An event id the run already has was sent again with another name or payload: nothing was stored. */
export class EventConflict extends Schema.TaggedError<EventConflict>()("EventConflict", {
  runId: RunId,
  eventId: Schema.String,
  message: Schema.String
}, { httpApiStatus: 409 }) {}

/** The state machine does not allow this change (e.g. cancelling a completed run). */
export class InvalidTransition extends Schema.TaggedError<InvalidTransition>()("InvalidTransition", {
  runId: RunId,
  taskAddress: Schema.optionalKey(TaskAddress),
  from: Schema.String,
  to: Schema.String,
  message: Schema.String
}, { httpApiStatus: 409 }) {}

/**
 * The worker no longer holds the run: another worker was granted a newer lease, the lease lapsed and the run was
 * requeued, or the run was cancelled or finished. The write changed nothing; the worker must stop the run.
 */
export class LeaseLost extends Schema.TaggedError<LeaseLost>()("LeaseLost", {
  runId: RunId,
  leaseEpoch: Schema.Int,
  currentEpoch: Schema.Int,
  state: RunState,
  message: Schema.String
}, { httpApiStatus: 409 }) {}

export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", {
  message: Schema.String
}, { httpApiStatus: 401 }) {}

export class Forbidden extends Schema.TaggedError<Forbidden>()("Forbidden", {
  message: Schema.String
}, { httpApiStatus: 403 }) {}

export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()("PayloadTooLarge", {
  maxBytes: Schema.Int,
  message: Schema.String
}, { httpApiStatus: 413 }) {}

/** One reason a request was rejected, with where in the request it was found. */
export class RequestIssue extends Schema.Class<RequestIssue>("RequestIssue")({
  path: Schema.Array(Schema.Union([Schema.String, Schema.Number])),
  message: Schema.String
}) {}

/** The request did not decode: malformed JSON, a missing field, a wrong type, an invalid id. */
export class InvalidRequest extends Schema.TaggedError<InvalidRequest>()("InvalidRequest", {
  message: Schema.String,
  issues: Schema.Array(RequestIssue)
}, { httpApiStatus: 400 }) {}

/** A dependency of the server (Postgres, Redis) does not answer. */
export class DependencyUnavailable extends Schema.TaggedError<DependencyUnavailable>()("DependencyUnavailable", {
  dependency: Schema.Literals(["database", "redis"]),
  message: Schema.String
}, { httpApiStatus: 503 }) {}

export class ScheduleNotFound extends Schema.TaggedError<ScheduleNotFound>()("ScheduleNotFound", {
  scheduleId: Schema.String,
  message: Schema.String
}, { httpApiStatus: 404 }) {
  static of(scheduleId: string) {
    return new ScheduleNotFound({ scheduleId, message: `No schedule has id ${scheduleId}` })
  }
}

/** A schedule with this id exists already (with other settings). */
export class ScheduleExists extends Schema.TaggedError<ScheduleExists>()("ScheduleExists", {
  scheduleId: Schema.String,
  message: Schema.String
}, { httpApiStatus: 409 }) {}
