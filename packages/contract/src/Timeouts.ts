/**
 * Timeouts and poison runs: the limits the server enforces with its own clock, so they hold when a worker is gone.
 *
 * A task attempt may have a start-to-close timeout (`timeoutMs`) and a heartbeat timeout (`heartbeatTimeoutMs`:
 * the task must call `heartbeat` at least that often). A run may have an execution timeout (from its start, set by
 * the start or declared by its version) and a schedule-to-start timeout (a pending run nobody claimed in time).
 * A run whose lease lapsed `POISON_AFTER_LAPSES` times in a row without progress is failed as poisoned instead of
 * being handed to yet another worker. Each ends in a distinct, visible way: the attempt's error is `TaskTimedOut`
 * (with its kind), the run is `failed` with a `FailureReason`.
 */
import * as Schema from "effect/Schema"

/** A timeout in milliseconds: at least 1 ms, at most 31 days. */
export const TimeoutMs = Schema.Int.check(
  Schema.isBetween({ minimum: 1, maximum: 31 * 86_400_000 }, { message: "a timeout is an integer from 1 to 2678400000 (ms)" })
)
export type TimeoutMs = typeof TimeoutMs.Type

/** Which of a task attempt's timeouts fired. */
export const TaskTimeoutKind = Schema.Literals(["start_to_close", "heartbeat"])
export type TaskTimeoutKind = typeof TaskTimeoutKind.Type

/** The name of the error a timed-out attempt is closed with (its `data` is `{ kind }`). */
export const taskTimedOutName = "TaskTimedOut"

/** Why the server, not the workflow's code, failed a run. */
export const FailureReason = Schema.Literals(["timed_out", "poisoned", "schedule_to_start_timed_out"])
export type FailureReason = typeof FailureReason.Type

/** The name of the error a run failed by the server carries, for each reason. */
export const failureErrorName = (reason: FailureReason): string => {
  switch (reason) {
    case "timed_out":
      return "RunTimedOut"
    case "poisoned":
      return "RunPoisoned"
    case "schedule_to_start_timed_out":
      return "ScheduleToStartTimedOut"
  }
}

/** The timeouts a start asks for (beside what its version declares). */
export const StartTimeouts = {
  /** The run fails (`timed_out`) once this long has passed since it was started. @default the version's, else none */
  executionTimeoutMs: Schema.optionalKey(TimeoutMs),
  /** The run fails (`schedule_to_start_timed_out`) when no worker claimed it this long after it was started. */
  scheduleToStartTimeoutMs: Schema.optionalKey(TimeoutMs)
}
