/**
 * Schedules: runs of a workflow version started by the server at fire times, from a cron expression (with a time
 * zone) or a fixed interval. A schedule is declared with a workflow version (its `trigger`) or created through the
 * API, the SDK client or the CLI. Each fire time starts at most one run, whatever the number of server replicas:
 * the run's idempotency key is derived from the schedule and the fire time.
 *
 * When the previous run of a schedule is still going at a fire time, its overlap policy decides (`skip` by
 * default). After the server was down, fire times older than the catch-up window are skipped and counted; a
 * schedule never bursts into hundreds of runs.
 */
import * as Cron from "effect/Cron"
import * as DateTime from "effect/DateTime"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { StartFlow } from "./FlowControl.ts"
import { RunId, ScheduleId, WorkflowName, WorkflowVersion } from "./Ids.ts"
import { RunState } from "./RunState.ts"

const Timestamp = Schema.DateTimeUtcFromString

/** A cron expression of five fields (minutes first) or six (seconds first), e.g. `0 9 * * MON-FRI`. */
export const CronExpression = Schema.String.check(
  Schema.makeFilter((cron: string) => Result.isSuccess(Cron.parse(cron)) || `"${cron}" is not a valid cron expression`)
)

/** An IANA time zone (`Europe/Paris`) or a fixed offset (`+02:00`). */
export const TimeZone = Schema.String.check(
  Schema.makeFilter((zone: string) => Option.isSome(DateTime.zoneFromString(zone)) || `"${zone}" is not a known time zone`)
)

/** Fire times from a cron expression, in a time zone. */
export const CronSpec = Schema.Struct({
  cron: CronExpression,
  /** @default "UTC" */
  timezone: Schema.optionalKey(TimeZone)
})
export type CronSpec = typeof CronSpec.Type

/** Fire times every `everyMs`, aligned on the Unix epoch (every 15 minutes fires at :00, :15, :30, :45 UTC). */
export const EverySpec = Schema.Struct({
  everyMs: Schema.Int.check(Schema.isBetween({ minimum: 1_000, maximum: 366 * 86_400_000 }, {
    message: "an interval is from 1 second to 366 days"
  }))
})
export type EverySpec = typeof EverySpec.Type

export const ScheduleSpec = Schema.Union([CronSpec, EverySpec])
export type ScheduleSpec = typeof ScheduleSpec.Type

/**
 * What a fire time does while the schedule's previous run is still going: `skip` it (counted), `buffer_one` (start
 * one run when the previous ends; later fire times meanwhile are skipped), `allow_all` (start it anyway), or
 * `cancel_previous` (cancel the previous run, then start).
 */
export const OverlapPolicy = Schema.Literals(["skip", "buffer_one", "allow_all", "cancel_previous"])
export type OverlapPolicy = typeof OverlapPolicy.Type

/** Defaults of a schedule's settings. */
export const scheduleDefaults = {
  overlap: "skip" as OverlapPolicy,
  /** Fire times missed for longer than this (the server was down) are skipped and counted. */
  catchUpWindowMs: 60_000,
  jitterMs: 0
}

/** How a schedule fires, and the runs it starts. */
export const ScheduleSettings = {
  spec: ScheduleSpec,
  /** The payload of every run it starts. @default null */
  payload: Schema.optionalKey(Schema.Json),
  /** @default "skip" */
  overlap: Schema.optionalKey(OverlapPolicy),
  /** Missed fire times older than this are skipped (and counted) rather than started late. @default 60_000 */
  catchUpWindowMs: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 31 * 86_400_000 }))),
  /** Each fire time starts up to this much later (the same delay on every replica). @default 0 */
  jitterMs: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 86_400_000 }))),
  /** Flow control of the runs it starts (priority, keys), as a start would give it. */
  ...StartFlow
}

/** The schedule a workflow version declares (its `trigger`), as its workers register it. */
export const Trigger = Schema.Struct(ScheduleSettings)
export type Trigger = typeof Trigger.Type

export const CreateSchedule = Schema.Struct({
  /** @default a new id */
  id: Schema.optionalKey(ScheduleId),
  workflowName: WorkflowName,
  workflowVersion: WorkflowVersion,
  ...ScheduleSettings,
  /** Create it paused. @default false */
  paused: Schema.optionalKey(Schema.Boolean)
})
export type CreateSchedule = typeof CreateSchedule.Type

/** A run a schedule started. */
export const ScheduledRun = Schema.Struct({
  runId: RunId,
  scheduledFor: Timestamp,
  state: RunState
})
export type ScheduledRun = typeof ScheduledRun.Type

export class Schedule extends Schema.Class<Schedule>("Schedule")({
  id: ScheduleId,
  workflowName: WorkflowName,
  workflowVersion: WorkflowVersion,
  spec: ScheduleSpec,
  payload: Schema.Json,
  overlap: OverlapPolicy,
  catchUpWindowMs: Schema.Int,
  jitterMs: Schema.Int,
  ...StartFlow,
  paused: Schema.Boolean,
  /** Declared by a workflow version (`trigger`) rather than created through the API. */
  declared: Schema.Boolean,
  /** The next fire times (none while paused). */
  nextFireTimes: Schema.Array(Timestamp),
  /** The last fire time handled (started, skipped or buffered). */
  lastFireAt: Schema.optionalKey(Timestamp),
  /** A fire time waiting for the previous run to end (`buffer_one`). */
  bufferedFireAt: Schema.optionalKey(Timestamp),
  /** Fire times that started no run: overlapping a running one (`skip`), or missed beyond the catch-up window. */
  skippedCount: Schema.Int,
  /** Its latest runs, newest first. */
  lastRuns: Schema.Array(ScheduledRun),
  createdAt: Timestamp,
  updatedAt: Timestamp
}) {}

/** Starts the runs of every fire time in `[from, to)` (at most 1,000); fire times that have a run keep it. */
export const Backfill = Schema.Struct({ from: Timestamp, to: Timestamp })
export type Backfill = typeof Backfill.Type

export class BackfillResult extends Schema.Class<BackfillResult>("BackfillResult")({
  /** Fire times in the range. */
  fireTimes: Schema.Int,
  /** Runs started for them (the others already had theirs). */
  started: Schema.Int,
  runIds: Schema.Array(RunId)
}) {}
