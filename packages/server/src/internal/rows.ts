/**
 * Rows as Postgres returns them, and their mapping to the contract's records. Rows come from our own schema, so
 * they are trusted: the mapping brands values instead of re-validating them.
 */
import type {
  EventName,
  IdempotencyKey,
  RunId,
  ScheduleId,
  TaskAddress,
  TaskName,
  WorkerId,
  WorkflowName,
  WorkflowVersion
} from "@aiki/contract/Ids"
import { DiscardedTask, type ErrorDetails, type Json, Task, TaskAttempt, Transition, WorkflowRun } from "@aiki/contract/Models"
import type { RunState } from "@aiki/contract/RunState"
import type { TaskState } from "@aiki/contract/TaskState"
import type { FailureReason } from "@aiki/contract/Timeouts"
import { DateTime } from "effect"
import type { FlowColumns } from "./flowControl.ts"

export interface RunRow extends FlowColumns {
  readonly id: string
  readonly workflow_name: string
  readonly workflow_version: string
  readonly state: RunState
  readonly payload: Json
  readonly result: Json | null
  readonly error: ErrorDetailsRow | null
  readonly idempotency_key: string | null
  readonly lease_epoch: number
  readonly lease_owner: string | null
  readonly lease_expires_at: Date | null
  readonly created_at: Date
  readonly updated_at: Date
  readonly started_at: Date | null
  readonly finished_at: Date | null
  readonly trace_parent: string | null
  readonly wake_at: Date | null
  readonly replay_version: number | null
  readonly awaiting_events: ReadonlyArray<string> | null
  readonly waiting_until: Date | null
  readonly waiting_message: string | null
  readonly schedule_id: string | null
  readonly scheduled_for: Date | null
  readonly deadline_at: Date | null
  readonly start_deadline_at: Date | null
  readonly failure_reason: FailureReason | null
  readonly lapses: number
  readonly attempt: number
  readonly policy_attempt: number
  readonly start_warning: string | null
  readonly parent_run_id: string | null
  readonly parent_close_policy: "cancel" | "abandon" | null
  readonly awaiting_children: ReadonlyArray<string> | null
}

export interface ErrorDetailsRow {
  readonly name: string
  readonly message: string
  readonly stack?: string
  readonly data?: Json
}

export interface TaskRow {
  readonly address: string
  readonly sequence: number
  readonly name: string
  readonly state: TaskState
  readonly payload: Json
  readonly result: Json | null
  readonly error: ErrorDetailsRow | null
  readonly outcome_order: number | null
  readonly not_before: Date | null
  readonly created_at: Date
  readonly updated_at: Date
  /** The task's attempts, aggregated as JSON by the query (`attemptsJson`). */
  readonly attempts: ReadonlyArray<AttemptRow>
}

interface AttemptRow {
  readonly attempt: number
  readonly lease_epoch: number
  readonly started_at: string
  readonly finished_at: string | null
  readonly error: ErrorDetailsRow | null
  readonly timeout_at?: string | null
  readonly heartbeat_timeout_ms?: number | null
  readonly heartbeat_at?: string | null
  readonly heartbeat_details?: Json | null
}

export interface TransitionRow {
  readonly id: string | number | bigint
  readonly run_id: string
  readonly task_address: string | null
  readonly from_state: string | null
  readonly to_state: string
  readonly reason: string
  readonly lease_epoch: number | null
  readonly worker_id: string | null
  readonly at: Date
}

const utc = (date: Date) => DateTime.fromDateUnsafe(date)
const utcString = (iso: string) => DateTime.fromDateUnsafe(new Date(iso))

export const errorDetails = (row: ErrorDetailsRow): ErrorDetails => row

export const toRun = (row: RunRow): WorkflowRun =>
  new WorkflowRun({
    id: row.id as RunId,
    workflowName: row.workflow_name as WorkflowName,
    workflowVersion: row.workflow_version as WorkflowVersion,
    state: row.state,
    payload: row.payload,
    ...(row.result !== null ? { result: row.result } : {}),
    ...(row.error !== null ? { error: errorDetails(row.error) } : {}),
    ...(row.idempotency_key !== null ? { idempotencyKey: row.idempotency_key as IdempotencyKey } : {}),
    leaseEpoch: row.lease_epoch,
    ...(row.lease_owner !== null ? { leaseOwner: row.lease_owner as WorkerId } : {}),
    ...(row.lease_expires_at !== null ? { leaseExpiresAt: utc(row.lease_expires_at) } : {}),
    createdAt: utc(row.created_at),
    updatedAt: utc(row.updated_at),
    ...(row.started_at !== null ? { startedAt: utc(row.started_at) } : {}),
    ...(row.finished_at !== null ? { finishedAt: utc(row.finished_at) } : {}),
    ...(row.wake_at !== null ? { wakeAt: utc(row.wake_at) } : {}),
    ...(row.trace_parent !== null ? { traceParent: row.trace_parent } : {}),
    ...(row.replay_version !== null ? { replayVersion: row.replay_version } : {}),
    ...(row.awaiting_events !== null ? { awaitingEvents: row.awaiting_events as ReadonlyArray<EventName> } : {}),
    priority: row.priority,
    ...(row.concurrency_key !== null ? { concurrencyKey: row.concurrency_key } : {}),
    ...(row.concurrency_limit !== null ? { concurrencyLimit: row.concurrency_limit } : {}),
    ...(row.ordering_key !== null ? { orderingKey: row.ordering_key } : {}),
    ...(row.rate_limit_key !== null ? { rateLimitKey: row.rate_limit_key } : {}),
    ...(row.debounce_key !== null && row.started_at === null ? { debounceKey: row.debounce_key } : {}),
    ...(row.state === "pending" && row.waiting_reason !== null
      ? {
        waitingFor: {
          reason: row.waiting_reason,
          message: row.waiting_message ?? row.waiting_reason,
          ...(row.waiting_until !== null ? { until: utc(row.waiting_until) } : {})
        }
      }
      : {}),
    ...(row.schedule_id !== null ? { scheduleId: row.schedule_id as ScheduleId } : {}),
    ...(row.scheduled_for !== null ? { scheduledFor: utc(row.scheduled_for) } : {}),
    ...(row.deadline_at != null ? { deadlineAt: utc(row.deadline_at) } : {}),
    ...(row.start_deadline_at != null && row.started_at === null ? { startDeadlineAt: utc(row.start_deadline_at) } : {}),
    ...(row.failure_reason != null ? { failureReason: row.failure_reason } : {}),
    ...(row.lapses > 0 ? { lapses: row.lapses } : {}),
    attempt: row.attempt,
    policyAttempt: row.policy_attempt,
    ...(row.start_warning !== null ? { startWarning: row.start_warning } : {}),
    ...(row.parent_run_id !== null ? { parentRunId: row.parent_run_id as RunId } : {}),
    ...(row.parent_close_policy !== null ? { parentClosePolicy: row.parent_close_policy } : {}),
    ...(row.awaiting_children !== null ? { awaitingChildren: row.awaiting_children as ReadonlyArray<RunId> } : {})
  }, { disableChecks: true })

export const toTask = (row: TaskRow): Task =>
  new Task({
    address: row.address as TaskAddress,
    sequence: row.sequence,
    name: row.name as TaskName,
    state: row.state,
    payload: row.payload,
    ...(row.result !== null ? { result: row.result } : {}),
    ...(row.error !== null ? { error: errorDetails(row.error) } : {}),
    attempts: row.attempts.map((a) =>
      new TaskAttempt({
        attempt: a.attempt,
        leaseEpoch: a.lease_epoch,
        startedAt: utcString(a.started_at),
        ...(a.finished_at !== null ? { finishedAt: utcString(a.finished_at) } : {}),
        ...(a.error !== null ? { error: errorDetails(a.error) } : {}),
        ...(a.timeout_at != null ? { timeoutAt: utcString(a.timeout_at) } : {}),
        ...(a.heartbeat_timeout_ms != null ? { heartbeatTimeoutMs: a.heartbeat_timeout_ms } : {}),
        ...(a.heartbeat_at != null ? { heartbeatAt: utcString(a.heartbeat_at) } : {}),
        ...(a.heartbeat_details != null ? { heartbeatDetails: a.heartbeat_details } : {})
      }, { disableChecks: true })
    ),
    ...(row.outcome_order !== null ? { outcomeOrder: row.outcome_order } : {}),
    ...(row.not_before !== null ? { notBefore: utc(row.not_before) } : {}),
    createdAt: utc(row.created_at),
    updatedAt: utc(row.updated_at)
  }, { disableChecks: true })

export const toTransition = (row: TransitionRow): Transition =>
  new Transition({
    id: Number(row.id),
    runId: row.run_id as RunId,
    ...(row.task_address !== null ? { taskAddress: row.task_address as TaskAddress } : {}),
    ...(row.from_state !== null ? { fromState: row.from_state } : {}),
    toState: row.to_state,
    reason: row.reason,
    ...(row.lease_epoch !== null ? { leaseEpoch: row.lease_epoch } : {}),
    ...(row.worker_id !== null ? { workerId: row.worker_id as WorkerId } : {}),
    at: utc(row.at)
  }, { disableChecks: true })

/** Encodes a value for a `${…}::jsonb` parameter. */
export const jsonb = (value: unknown): string => JSON.stringify(value)

/** A discarded entry: the task row as JSON (`Ledger.write` builds it with `TaskRow`'s keys; its times as text). */
export interface DiscardedRow {
  readonly reset: number
  readonly discarded_at: Date
  readonly entry: Omit<TaskRow, "created_at" | "updated_at" | "not_before"> & {
    readonly created_at: string
    readonly updated_at: string
    readonly not_before: string | null
  }
}

export const toDiscarded = (row: DiscardedRow): DiscardedTask =>
  new DiscardedTask({
    reset: row.reset,
    discardedAt: utc(row.discarded_at),
    task: toTask({
      ...row.entry,
      created_at: new Date(row.entry.created_at),
      updated_at: new Date(row.entry.updated_at),
      not_before: row.entry.not_before === null ? null : new Date(row.entry.not_before)
    })
  }, { disableChecks: true })
