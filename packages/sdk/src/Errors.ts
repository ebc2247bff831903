/**
 * The errors the SDK itself raises. Errors of your workflows and tasks are your own types; these say what
 * happened to a run around them.
 */
import type { TaskTimeoutKind } from "@aiki/contract/Timeouts"
import type { ErrorDetails, Json } from "@aiki/contract/Models"
import * as Data from "effect/Data"
import * as Schema from "effect/Schema"

/**
 * A replay met a recorded journal it cannot match: the workflow's code asked for a different task (or different
 * payload) at a place where the recorded run had another. Workflow code must be deterministic outside tasks; a
 * change to a running workflow belongs in a new version. The run fails with this error.
 */
export class NonDeterminismError extends Schema.TaggedError<NonDeterminismError>()("NonDeterminismError", {
  runId: Schema.String,
  sequence: Schema.Int,
  expected: Schema.String,
  actual: Schema.String,
  message: Schema.String
}) {}

/** The run failed with an error that is not one of the workflow's declared errors (a defect or a foreign error). */
export class RunFailed extends Data.TaggedError("RunFailed")<{
  readonly runId: string
  readonly error: ErrorDetails
}> {
  override get message() {
    return `Workflow run ${this.runId} failed: ${this.error.name}: ${this.error.message}`
  }
}

/** The run was cancelled before it finished. */
export class RunCancelled extends Data.TaggedError("RunCancelled")<{ readonly runId: string }> {
  override get message() {
    return `Workflow run ${this.runId} was cancelled`
  }
}

/** `waitForCompletion` gave up before the run finished (the run goes on). */
export class WaitTimeout extends Data.TaggedError("WaitTimeout")<{ readonly runId: string; readonly timeoutMs: number }> {
  override get message() {
    return `Workflow run ${this.runId} did not finish within ${this.timeoutMs} ms`
  }
}

/** The payload or result could not be encoded to or decoded from JSON with the definition's schema. */
export class SerializationError extends Data.TaggedError("SerializationError")<{
  readonly what: string
  readonly cause: unknown
}> {
  override get message() {
    return `Cannot serialize ${this.what}: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/**
 * A task failed for good with an error that is not one of its declared errors (any thrown value in the promise
 * API). The workflow sees it the same way the first time and on every replay: rebuilt from what was stored, so
 * catching it is deterministic. `errorName` and `message` are those of what the task threw; `data` holds the rest:
 * an Error's own properties, or `{ thrown }` for a thrown value that is not an Error.
 */
export class TaskError extends Data.TaggedError("TaskError")<{
  readonly taskName: string
  readonly errorName: string
  readonly message: string
  readonly data?: Json
}> {
  static fromDetails(taskName: string, details: ErrorDetails): TaskError {
    const error = new TaskError({
      taskName,
      errorName: details.name,
      message: details.message,
      ...(details.data !== undefined ? { data: details.data } : {})
    })
    if (details.stack !== undefined) error.stack = details.stack
    return error
  }
}

/**
 * The server failed a task attempt for a timeout: it ran longer than its `timeoutMs` (`start_to_close`) or went
 * longer than its `heartbeatTimeoutMs` without `heartbeat` (`heartbeat`). The attempt was aborted (its signal, or
 * interruption) and counts as a failed attempt, retried per the task's policy; once none are left, the workflow
 * sees it as a `TaskError` whose `errorName` is `TaskTimedOut` and whose `data.kind` says which.
 */
export class TaskTimedOut extends Data.TaggedError("TaskTimedOut")<{
  readonly taskName: string
  readonly attempt: number
  readonly kind: TaskTimeoutKind
  readonly message: string
}> {}

/** The server refused a write of a run for good (a value too large, a transition the journal does not allow). */
export class WriteRefused extends Data.TaggedError("WriteRefused")<{
  readonly runId: string
  readonly write: string
  readonly reason: string
}> {
  override get message() {
    return `The server refused ${this.write} of run ${this.runId}: ${this.reason}`
  }
}

/**
 * Options the SDK does not know, or a required one missing or of the wrong kind: thrown at once by the call that
 * was given them (`task`, `workflow`, `client`, `worker`), naming the option, instead of being silently ignored.
 */
export class InvalidOptions extends Data.TaggedError("InvalidOptions")<{
  /** The call that was given the options, e.g. `worker()`. */
  readonly where: string
  /** The option at fault, as a path (`workflowRunSubscriber.pollInterval`). */
  readonly option: string
  readonly reason: string
}> {
  override get message() {
    return `${this.where}: ${this.reason}`
  }
}

/**
 * A child run (`Workflow.executeChild`, `ctx.executeChild`) ended without its result and without one of the
 * child's declared errors: it failed with another error, or was cancelled (it timed out: `failed`, and its error
 * says so). A Schema error, so a parent may declare it among its own errors and store it typed.
 */
export class ChildWorkflowFailed extends Schema.TaggedError<ChildWorkflowFailed>()("ChildWorkflowFailed", {
  childRunId: Schema.String,
  workflowName: Schema.String,
  state: Schema.Literals(["failed", "cancelled"]),
  errorName: Schema.String,
  message: Schema.String,
  data: Schema.optionalKey(Schema.Json)
}) {}
