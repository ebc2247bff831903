/**
 * Identifiers and names shared by the server and the SDK. Each one is a branded string, so a run id can never be
 * passed where a worker id is expected, and each one carries the checks that make it safe to use as a database key,
 * a Redis stream name segment and a URL path segment.
 */
import * as Schema from "effect/Schema"

/** A workflow run id: a UUIDv7, so ids sort by creation time (cursor pagination relies on it). */
export const RunId = Schema.String.check(Schema.isUUID(undefined, { message: "a run id is a UUID" })).pipe(
  Schema.brand("RunId")
)
export type RunId = typeof RunId.Type

const slug = (what: string, max: number) =>
  Schema.String.check(
    Schema.isPattern(new RegExp(`^[A-Za-z0-9][A-Za-z0-9._-]{0,${max - 1}}$`), {
      message: `${what} is 1 to ${max} letters, digits, '.', '_' or '-', starting with a letter or digit`
    })
  )

/** A worker id chosen by the worker (its host name and pid, or a name given in its options). */
export const WorkerId = slug("a worker id", 128).pipe(Schema.brand("WorkerId"))
export type WorkerId = typeof WorkerId.Type

/** The name of a workflow, e.g. `order-processing`. */
export const WorkflowName = slug("a workflow name", 128).pipe(Schema.brand("WorkflowName"))
export type WorkflowName = typeof WorkflowName.Type

/** A semantic version, e.g. `1.0.0` or `2.1.0-beta.1`; runs are pinned to the version they started with. */
export const WorkflowVersion = Schema.String.check(
  Schema.isPattern(/^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]{1,64})?$/, {
    message: "a workflow version is a semantic version such as 1.0.0"
  })
).pipe(Schema.brand("WorkflowVersion"))
export type WorkflowVersion = typeof WorkflowVersion.Type

/**
 * Where a task sits in a run's journal: the SDK derives it from the task name, a hash of its payload and an
 * occurrence counter, so a replay finds the same entry. Opaque to the server.
 */
export const TaskAddress = Schema.String.check(
  Schema.isMinLength(1),
  Schema.isMaxLength(512, { message: "a task address is at most 512 characters" })
).pipe(Schema.brand("TaskAddress"))
export type TaskAddress = typeof TaskAddress.Type

/** A task's name as written in its definition. */
export const TaskName = slug("a task name", 128).pipe(Schema.brand("TaskName"))
export type TaskName = typeof TaskName.Type

/** A caller-chosen key that makes starting a run idempotent (per workflow name). */
export const IdempotencyKey = Schema.String.check(
  Schema.isMinLength(1, { message: "an idempotency key is not empty" }),
  Schema.isMaxLength(256, { message: "an idempotency key is at most 256 characters" })
).pipe(Schema.brand("IdempotencyKey"))
export type IdempotencyKey = typeof IdempotencyKey.Type

/** A lease generation: incremented each time a run is granted to a worker; every worker write carries it. */
export const LeaseEpoch = Schema.Int.check(Schema.isGreaterThanOrEqualTo(1)).pipe(Schema.brand("LeaseEpoch"))
export type LeaseEpoch = typeof LeaseEpoch.Type

/** The name of an event a run can wait for, e.g. `approval`. */
export const EventName = slug("an event name", 128).pipe(Schema.brand("EventName"))
export type EventName = typeof EventName.Type

/**
 * A schedule's id: chosen when it is created (e.g. `nightly-report`), or `<workflow>:trigger` for the schedule a
 * workflow version declares.
 */
export const ScheduleId = Schema.String.check(
  Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$/, {
    message: "a schedule id is 1 to 200 letters, digits, '.', '_', ':', '@' or '-', starting with a letter or digit"
  })
).pipe(Schema.brand("ScheduleId"))
export type ScheduleId = typeof ScheduleId.Type
