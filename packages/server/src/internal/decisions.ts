/**
 * What each kind of change does to a run and its journal, decided against the rows its group locked (the
 * `Ledger`). Every state move goes through `moveRun`/`moveEntry`, which check it against the state machines the
 * contract declares and append it to the audit trail; nothing else changes a state. Decisions are pure over the
 * ledger: the group writes what they decided in one statement afterwards.
 */
import {
  EventConflict,
  InvalidRequest,
  InvalidTransition,
  LeaseLost,
  PayloadTooLarge,
  RequestIssue,
  RunNotFound,
  TaskNotFound
} from "@aiki/contract/Errors"
import type { EventName, LeaseEpoch, RunId, TaskAddress, WorkerId } from "@aiki/contract/Ids"
import type {
  AwaitChild,
  BeginAttempt,
  ClaimRefusal,
  ErrorDetails,
  FinishTask,
  HeartbeatTask,
  Json,
  Lease,
  ParkRun,
  ReceiveEvent,
  StartChild,
  StartTask,
  WorkflowRun,
  Write,
  WriteResult
} from "@aiki/contract/Models"
import { canTransition as canRunTransition, isRetryable, isSuspended, isTerminal, type RunState } from "@aiki/contract/RunState"
import { canTransition as canEntryTransition, type TaskState } from "@aiki/contract/TaskState"
import { failureErrorName, type FailureReason, type TaskTimeoutKind, taskTimedOutName } from "@aiki/contract/Timeouts"
import { DateTime } from "effect"
import { admit, Debounce, debounce, holdBack, Offer, offer } from "./flowControl.ts"
import type { Ledger, LedgerEntry, LedgerEvent, LedgerRun } from "./Ledger.ts"

export { Debounce, Offer }

/** Why a run or an entry changed state, as the audit trail says it. */
export type Reason =
  | "started"
  | "claimed"
  | "lease_taken_over"
  | "lease_expired"
  | "worker_gone"
  | "released"
  | "suspended"
  | "woken"
  | "event_received"
  | "completed"
  | "failed"
  | "cancelled"
  | "task_started"
  | "task_completed"
  | "task_failed"
  | "task_retrying"
  | "workflow_retry"
  | "attempt_abandoned"
  | "task_timed_out"
  | FailureReason
  | "retried"
  | "reset"
  | "child_ended"
  | "parent_cancelled"

/** What a decision needs besides the ledger. */
export interface DecisionContext {
  readonly ledger: Ledger
  /**
   * Lapsed leases may be taken over. False for a while after this server (re)gained its database: workers that
   * were cut off during the outage get time to renew their leases before their runs are taken from them.
   */
  readonly leasesMayLapse: boolean
  /** The largest payload, result or error stored (`MAX_PAYLOAD_BYTES`). */
  readonly maxPayloadBytes: number
  /** A run whose lease lapsed this many times in a row without progress is failed as poisoned. */
  readonly poisonAfterLapses: number
}

// ---------------------------------------------------------------------------------------------------------------
// Changes: each carries its inputs and, once its group has decided, its outcome.

export interface Claim {
  readonly _tag: "Claim"
  readonly runId: RunId
  readonly workerId: WorkerId
  readonly leaseMs: number
  readonly replayVersion: number
  outcome: { readonly granted: true } | { readonly granted: false; readonly reason: ClaimRefusal; readonly message: string } | undefined
  /** Once granted and written: the lease, with the run as it now is and its journal. */
  lease: Lease | undefined
}
export const Claim = (runId: RunId, workerId: WorkerId, leaseMs: number, replayVersion: number): Claim => ({
  _tag: "Claim",
  runId,
  workerId,
  leaseMs,
  replayVersion,
  outcome: undefined,
  lease: undefined
})

export interface Extend {
  readonly _tag: "Extend"
  readonly runId: RunId
  readonly leaseEpoch: number
  readonly workerId: WorkerId
  readonly leaseMs: number
  outcome: "extended" | "cancelled" | "lost" | undefined
}
export const Extend = (runId: RunId, leaseEpoch: number, workerId: WorkerId, leaseMs: number): Extend => ({
  _tag: "Extend",
  runId,
  leaseEpoch,
  workerId,
  leaseMs,
  outcome: undefined
})

export interface WorkerWrite {
  readonly _tag: "WorkerWrite"
  readonly write: Write
  outcome: WriteResult | undefined
}
export const WorkerWrite = (write: Write): WorkerWrite => ({ _tag: "WorkerWrite", write, outcome: undefined })

export interface Requeue {
  readonly _tag: "Requeue"
  readonly runId: RunId
  outcome: boolean | undefined
}
export const Requeue = (runId: RunId): Requeue => ({ _tag: "Requeue", runId, outcome: undefined })

export interface Wake {
  readonly _tag: "Wake"
  readonly runId: RunId
  outcome: boolean | undefined
}
export const Wake = (runId: RunId): Wake => ({ _tag: "Wake", runId, outcome: undefined })

export interface Cancel {
  readonly _tag: "Cancel"
  readonly runId: RunId
  /** `parent_cancelled`: the cascade from a cancelled parent to a child whose policy is `cancel`. */
  readonly reason: "cancelled" | "parent_cancelled"
  outcome: RunNotFound | InvalidTransition | "cancelled" | undefined
  /** Once written: the run as it now is. */
  run: WorkflowRun | undefined
}
export const Cancel = (runId: RunId, reason: Cancel["reason"] = "cancelled"): Cancel => ({
  _tag: "Cancel",
  runId,
  reason,
  outcome: undefined,
  run: undefined
})

/** Child `childRunId` ended: its parent, parked waiting for it, becomes pending again. */
export interface WakeParent {
  readonly _tag: "WakeParent"
  readonly runId: RunId
  readonly childRunId: RunId
  outcome: boolean | undefined
}
export const WakeParent = (runId: RunId, childRunId: RunId): WakeParent => ({
  _tag: "WakeParent",
  runId,
  childRunId,
  outcome: undefined
})

export interface SendEvent {
  readonly _tag: "SendEvent"
  readonly runId: RunId
  readonly name: EventName
  readonly payload: Json
  /** The sender's id for the event: a second send with it stores nothing. */
  readonly key: string | undefined
  /** Assigned before the group decides (events are numbered by the database's sequence, in the order sent). */
  eventId: string
  outcome:
    | RunNotFound
    | InvalidTransition
    | EventConflict
    | { readonly eventId: string; readonly runState: RunState; readonly duplicate: boolean }
    | undefined
}
export const SendEvent = (runId: RunId, name: EventName, payload: Json, key?: string): SendEvent => ({
  _tag: "SendEvent",
  runId,
  name,
  payload,
  key,
  eventId: "",
  outcome: undefined
})

/** The server's sweep found an open attempt past a deadline: it fails it (if it still is, under the lock). */
export interface TimeOutAttempt {
  readonly _tag: "TimeOutAttempt"
  readonly runId: RunId
  readonly address: string
  readonly attempt: number
  outcome: boolean | undefined
}
export const TimeOutAttempt = (runId: RunId, address: string, attempt: number): TimeOutAttempt => ({
  _tag: "TimeOutAttempt",
  runId,
  address,
  attempt,
  outcome: undefined
})

/** The server's sweep found a run past its execution (or schedule-to-start) deadline: it fails it. */
export interface TimeOutRun {
  readonly _tag: "TimeOutRun"
  readonly runId: RunId
  outcome: boolean | undefined
}
export const TimeOutRun = (runId: RunId): TimeOutRun => ({ _tag: "TimeOutRun", runId, outcome: undefined })

/** Where a reset goes back to: an entry's sequence, or the `occurrence`-th call of a task name. */
export type ResetTarget =
  | { readonly sequence: number }
  | { readonly task: string; readonly occurrence: number }

/**
 * A retry (`target` undefined) or a reset by hand of a failed or cancelled run: pending again as the same run, its
 * workflow attempt counted; a reset also discards its journal from the target entry on.
 */
export interface Reopen {
  readonly _tag: "Reopen"
  readonly runId: RunId
  readonly target: ResetTarget | undefined
  outcome: RunNotFound | InvalidTransition | InvalidRequest | "reopened" | undefined
  /** Once written: the run as it now is. */
  run: WorkflowRun | undefined
}
export const Reopen = (runId: RunId, target?: ResetTarget): Reopen => ({
  _tag: "Reopen",
  runId,
  target,
  outcome: undefined,
  run: undefined
})

/** A change to an existing run (starts are inserts, see `RunTransitions`). */
export type RunChange =
  | Claim
  | Extend
  | WorkerWrite
  | Requeue
  | Wake
  | Cancel
  | SendEvent
  | Offer
  | Debounce
  | TimeOutAttempt
  | TimeOutRun
  | Reopen
  | WakeParent

/** The run a change is about. */
export const runOf = (change: RunChange): RunId => change._tag === "WorkerWrite" ? change.write.runId : change.runId

// ---------------------------------------------------------------------------------------------------------------
// Moves

const invalidRun = (run: LedgerRun, to: string, why?: string) =>
  new InvalidTransition({
    runId: run.id as RunId,
    from: run.state,
    to,
    message: why ?? `Run ${run.id} cannot go from ${run.state} to ${to}`
  })

const invalidEntry = (entry: { readonly runId: string; readonly address: string }, from: string, to: string, why: string) =>
  new InvalidTransition({
    runId: entry.runId as RunId,
    taskAddress: entry.address as TaskAddress,
    from,
    to,
    message: `Task ${entry.address} of run ${entry.runId}: ${why}`
  })

/**
 * Moves a run to `to` and records why; refused (nothing changes) when the run state machine does not allow it.
 * Every run state change goes through here.
 */
const moveRun = (
  ledger: Ledger,
  run: LedgerRun,
  to: RunState,
  reason: Reason,
  by: { readonly leaseEpoch?: number; readonly workerId?: string | null } = {}
): InvalidTransition | undefined => {
  if (!canRunTransition(run.state, to)) return invalidRun(run, to)
  ledger.record(run, {
    taskAddress: null,
    from: run.state,
    to,
    reason,
    leaseEpoch: by.leaseEpoch ?? null,
    workerId: by.workerId ?? null
  })
  run.state = to
  ledger.patch(run, {})
  return undefined
}

/**
 * Moves an entry to `to` and records why; refused when the task state machine does not allow it. Every entry
 * state change goes through here.
 */
const moveEntry = (
  ledger: Ledger,
  run: LedgerRun,
  entry: LedgerEntry,
  to: TaskState,
  reason: Reason
): InvalidTransition | undefined => {
  if (!canEntryTransition(entry.state, to)) {
    return invalidEntry(entry, entry.state, to, `it cannot go from ${entry.state} to ${to}`)
  }
  ledger.record(run, {
    taskAddress: entry.address,
    from: entry.state,
    to,
    reason,
    leaseEpoch: run.leaseEpoch,
    workerId: run.leaseOwner
  })
  entry.state = to
  entry.changed = true
  return undefined
}

/** A runnable run again: pending, no owner, no lease, and a stream message to find a worker. */
const requeue = (
  ledger: Ledger,
  run: LedgerRun,
  reason: Reason,
  by: { readonly leaseEpoch?: number; readonly workerId?: string | null } = {}
): InvalidTransition | undefined => {
  const refused = moveRun(ledger, run, "pending", reason, by)
  if (refused !== undefined) return refused
  run.leaseOwner = null
  run.awaitingEvents = null
  run.awaitingChildren = null
  ledger.patch(run, { leaseMs: null, wakeAt: null })
  ledger.runnable.add(run.id)
  return undefined
}

// ---------------------------------------------------------------------------------------------------------------
// Decisions

export const decide = (context: DecisionContext, change: RunChange): void => {
  switch (change._tag) {
    case "Claim":
      return claim(context, change)
    case "Extend":
      return extend(context.ledger, change)
    case "WorkerWrite":
      // A child's start is answered once the group inserted the child (see `ChildStart`).
      if (change.write._tag === "StartChild") return startChild(context, change, change.write)
      change.outcome = write(context, change.write)
      return
    case "Requeue":
      return requeueLapsed(context, change)
    case "Wake":
      return wake(context.ledger, change)
    case "Cancel":
      return cancel(context.ledger, change)
    case "SendEvent":
      return sendEvent(context.ledger, change)
    case "Offer":
      return offer(context.ledger, change)
    case "Debounce":
      return debounce(context.ledger, change)
    case "TimeOutAttempt":
      return timeOutAttempt(context.ledger, change)
    case "TimeOutRun":
      return timeOutRun(context.ledger, change)
    case "Reopen":
      return reopen(context.ledger, change)
    case "WakeParent":
      return wakeParent(context.ledger, change)
  }
}

const claim = (context: DecisionContext, change: Claim) => {
  const { ledger, leasesMayLapse } = context
  const refuse = (reason: ClaimRefusal, message: string) => {
    change.outcome = { granted: false, reason, message }
  }
  const run = ledger.runs.get(change.runId)
  if (run === undefined) return refuse("not_found", `No workflow run has id ${change.runId}`)
  if (isTerminal(run.state)) return refuse("finished", `Run ${run.id} is ${run.state}`)
  if (run.replayVersion !== null && run.replayVersion > change.replayVersion) {
    return refuse(
      "unsupported_replay_version",
      `Run ${run.id} was recorded with replay semantics version ${run.replayVersion}; this worker implements ${change.replayVersion}`
    )
  }
  if (run.state === "running" && !(leasesMayLapse && (run.leaseLapsed || run.ownerGone))) {
    return refuse("held", `Run ${run.id} is held by ${run.leaseOwner} under lease ${run.leaseEpoch}`)
  }
  // A takeover is a lapse too: the run may have poisoned every worker that took it.
  if (run.state === "running" && poisoned(context, run)) return refuse("finished", `Run ${run.id} is failed (poisoned)`)
  // A takeover keeps the places the run holds; a pending run must find room under its limits first.
  const fresh = run.state === "pending"
  const hold = fresh ? holdBack(ledger, run) : undefined
  if (hold !== undefined) return refuse(hold.reason, hold.message)
  const refused = moveRun(ledger, run, "running", run.state === "running" ? "lease_taken_over" : "claimed", {
    leaseEpoch: run.leaseEpoch + 1,
    workerId: change.workerId
  })
  if (refused !== undefined) return refuse("not_runnable", `Run ${run.id} is ${run.state}`)
  run.leaseEpoch += 1
  run.leaseOwner = change.workerId
  run.replayVersion ??= change.replayVersion
  ledger.patch(run, { leaseMs: change.leaseMs, started: true })
  if (fresh) admit(ledger, run)
  change.outcome = { granted: true }
}

const extend = (ledger: Ledger, change: Extend) => {
  const run = ledger.runs.get(change.runId)
  if (run !== undefined && run.state === "running" && run.leaseEpoch === change.leaseEpoch && run.leaseOwner === change.workerId) {
    // Not a transition: no audit row and no announcement, only a later expiry.
    ledger.patch(run, { leaseMs: change.leaseMs })
    change.outcome = "extended"
    return
  }
  change.outcome = run?.state === "cancelled" ? "cancelled" : "lost"
}

const requeueLapsed = (context: DecisionContext, change: Requeue) => {
  const { ledger, leasesMayLapse } = context
  const run = ledger.runs.get(change.runId)
  change.outcome = false
  if (run === undefined || run.state !== "running" || !leasesMayLapse || !(run.leaseLapsed || run.ownerGone)) return
  if (poisoned(context, run)) {
    change.outcome = true
    return
  }
  change.outcome = requeue(ledger, run, run.ownerGone ? "worker_gone" : "lease_expired", {
    leaseEpoch: run.leaseEpoch,
    workerId: run.leaseOwner
  }) === undefined
}

/**
 * Counts a lapse of `run`'s lease (its worker died or hung: it neither finished nor handed the run back). The run
 * fails as poisoned once it lapsed `poisonAfterLapses` times in a row without progress, instead of taking down one
 * worker after another; true when it did.
 */
const poisoned = ({ ledger, poisonAfterLapses }: DecisionContext, run: LedgerRun): boolean => {
  run.lapses += 1
  ledger.patch(run, {})
  if (run.lapses < poisonAfterLapses) return false
  return failByServer(ledger, run, "poisoned",
    `The lease of run ${run.id} lapsed ${run.lapses} times in a row without progress (its worker died or hung each ` +
      `time); it was failed instead of handed to another worker (POISON_AFTER_LAPSES=${poisonAfterLapses})`)
}

/** Progress: the run's counter of lapses in a row starts over. */
const progressed = (ledger: Ledger, run: LedgerRun) => {
  if (run.lapses === 0) return
  run.lapses = 0
  ledger.patch(run, {})
}

/**
 * Fails `run` for `reason`, the server's decision (a timeout, a poisoned run). Its worker, if it has one, keeps its
 * epoch (its next write or heartbeat finds the run failed) and is told at once over its signals stream.
 */
const failByServer = (ledger: Ledger, run: LedgerRun, reason: FailureReason, message: string): boolean => {
  const owner = run.state === "running" ? run.leaseOwner : null
  if (moveRun(ledger, run, "failed", reason, { leaseEpoch: run.leaseEpoch, workerId: owner }) !== undefined) return false
  ledger.patch(run, {
    error: { name: failureErrorName(reason), message, data: { reason } },
    failureReason: reason,
    leaseMs: null,
    wakeAt: null,
    finished: true
  })
  if (owner !== null) ledger.notices.push({ runId: run.id, task: null, state: "failed", owner, stopped: reason })
  return true
}

const timeOutRun = (ledger: Ledger, change: TimeOutRun) => {
  const run = ledger.runs.get(change.runId)
  change.outcome = false
  if (run === undefined || isTerminal(run.state)) return
  if (run.deadlinePassed) {
    change.outcome = failByServer(ledger, run, "timed_out", `Run ${run.id} ran out of its execution timeout`)
  } else if (run.startDeadlinePassed && run.state === "pending") {
    change.outcome = failByServer(ledger, run, "schedule_to_start_timed_out",
      `No worker claimed run ${run.id} within its schedule-to-start timeout`)
  }
}

const timeOutMessage = (kind: TaskTimeoutKind, address: string, attempt: number) =>
  kind === "start_to_close"
    ? `Attempt ${attempt} of task ${address} did not finish within its timeout (timeoutMs)`
    : `Attempt ${attempt} of task ${address} did not heartbeat within its heartbeat timeout (heartbeatTimeoutMs)`

/**
 * Closes an open attempt past its deadline with a `TaskTimedOut` error; the entry stays `running` for the worker
 * holding the run, told at once, to abort the attempt and decide per its retry policy (it assigns outcome orders).
 * A worker that is gone leaves the run to lapse: the next one starts the next attempt.
 */
const timeOutAttempt = (ledger: Ledger, change: TimeOutAttempt) => {
  change.outcome = false
  const run = ledger.runs.get(change.runId)
  const entry = ledger.entry(change.runId, change.address)
  const attempt = entry?.attempts.find((a) => a.attempt === change.attempt)
  if (run === undefined || run.state !== "running" || entry === undefined || entry.state !== "running") return
  if (attempt === undefined || attempt.finished || attempt.overdue === null) return
  const kind = attempt.overdue
  if (moveEntry(ledger, run, entry, "running", "task_timed_out") !== undefined) return
  attempt.finished = true
  attempt.timedOut = kind
  ledger.writeAttempt({
    runId: run.id,
    address: entry.address,
    attempt: attempt.attempt,
    leaseEpoch: attempt.leaseEpoch,
    isNew: false,
    startedAgoMs: 0,
    finished: true,
    error: { name: taskTimedOutName, message: timeOutMessage(kind, entry.address, attempt.attempt), data: { kind } }
  })
  if (run.leaseOwner !== null) {
    ledger.notices.push({
      runId: run.id,
      task: entry.address,
      state: entry.state,
      owner: run.leaseOwner,
      timedOut: { attempt: attempt.attempt, kind }
    })
  }
  change.outcome = true
}

const wake = (ledger: Ledger, change: Wake) => {
  const run = ledger.runs.get(change.runId)
  change.outcome = false
  if (run === undefined || !isSuspended(run.state) || !run.due) return
  change.outcome = requeue(ledger, run, "woken") === undefined
}

const cancel = (ledger: Ledger, change: Cancel) => {
  const run = ledger.runs.get(change.runId)
  if (run === undefined) {
    change.outcome = RunNotFound.of(change.runId)
    return
  }
  if (run.state === "cancelled") {
    change.outcome = "cancelled"
    return
  }
  // The owner keeps its epoch: its next heartbeat or write finds the run cancelled and stops it.
  const refused = moveRun(ledger, run, "cancelled", change.reason, { leaseEpoch: run.leaseEpoch, workerId: run.leaseOwner })
  if (refused !== undefined) {
    change.outcome = invalidRun(run, "cancelled", `Run ${run.id} is already ${run.state} and cannot be cancelled`)
    return
  }
  run.awaitingChildren = null
  ledger.patch(run, { leaseMs: null, wakeAt: null, finished: true })
  change.outcome = "cancelled"
}

/** The sequence a reset goes back to, among the run's entries, or the request's issue naming the field. */
const resetSequence = (ledger: Ledger, run: LedgerRun, target: ResetTarget): number | InvalidRequest => {
  const heads = ledger.journals.get(run.id) ?? []
  const found = "sequence" in target
    ? heads.find((h) => h.sequence === target.sequence)
    : heads.filter((h) => h.name === target.task)[target.occurrence]
  if (found !== undefined) return found.sequence
  const [path, message] = "sequence" in target
    ? [["sequence"], `Run ${run.id} has no journal entry at sequence ${target.sequence} (it has ${heads.length})`]
    : [["task"], `Run ${run.id} has no call #${target.occurrence} of task "${target.task}" in its journal`]
  return new InvalidRequest({ message, issues: [new RequestIssue({ path, message })] })
}

const reopen = (ledger: Ledger, change: Reopen) => {
  const run = ledger.runs.get(change.runId)
  if (run === undefined) {
    change.outcome = RunNotFound.of(change.runId)
    return
  }
  const what = change.target === undefined ? "retried" : "reset"
  if (!isRetryable(run.state)) {
    change.outcome = invalidRun(run, "pending", `Run ${run.id} is ${run.state}; only a failed or cancelled run can be ${what}`)
    return
  }
  const from = change.target === undefined ? undefined : resetSequence(ledger, run, change.target)
  if (from instanceof InvalidRequest) {
    change.outcome = from
    return
  }
  const refused = requeue(ledger, run, what)
  if (refused !== undefined) {
    change.outcome = refused
    return
  }
  // A new workflow attempt, with its retry policy's count started over. Entries that failed for good run again
  // (the worker reruns them from attempt 2 on); completed ones are replayed.
  run.attempt += 1
  run.policyAttempt = 1
  // Its lapses without progress count from zero again: a poisoned run retried by hand gets a fresh chance.
  run.lapses = 0
  ledger.patch(run, { reopened: true })
  if (from !== undefined) {
    run.resets += 1
    ledger.discards.push({ runId: run.id, fromSequence: from, reset: run.resets })
  }
  change.outcome = "reopened"
}

const wakeParent = (ledger: Ledger, change: WakeParent) => {
  const run = ledger.runs.get(change.runId)
  change.outcome = false
  if (run === undefined || !isSuspended(run.state) || !(run.awaitingChildren ?? []).includes(change.childRunId)) return
  change.outcome = requeue(ledger, run, "child_ended") === undefined
}

const sendEvent = (ledger: Ledger, change: SendEvent) => {
  const run = ledger.runs.get(change.runId)
  if (run === undefined) {
    change.outcome = RunNotFound.of(change.runId)
    return
  }
  const earlier = change.key === undefined ? undefined : ledger.events.find((e) => e.runId === run.id && e.key === change.key)
  if (earlier !== undefined) {
    // A repeated send (a retried webhook, a lost answer): the first one stands, whether or not it was received,
    // even once the run has finished.
    change.outcome = earlier.name === change.name && sameJson(earlier.payload, change.payload)
      ? { eventId: change.key!, runState: run.state, duplicate: true }
      : new EventConflict({
        runId: run.id as RunId,
        eventId: change.key!,
        message: `Run ${run.id} already has event id ${change.key} (event ${earlier.name}) with another name or payload`
      })
    return
  }
  if (isTerminal(run.state)) {
    change.outcome = invalidRun(run, "event", `Run ${run.id} is ${run.state}; it can no longer receive events`)
    return
  }
  ledger.events.push({
    id: change.eventId,
    key: change.key ?? null,
    runId: run.id,
    name: change.name,
    payload: change.payload,
    consumedBy: null,
    changed: true,
    isNew: true
  })
  // Only an awaited name wakes a parked run (a run parked before names were recorded wakes on any). A run waiting
  // for a child and an event at once (a race) is parked `awaiting_child`, its event names beside.
  const awaited = run.awaitingEvents === null ? run.state === "awaiting_event" : run.awaitingEvents.includes(change.name)
  if (isSuspended(run.state) && awaited) {
    requeue(ledger, run, "event_received")
  }
  change.outcome = { eventId: change.key ?? change.eventId, runState: run.state, duplicate: false }
}

/** Equal as JSON values, whatever the order of object keys (stored events are `jsonb`, which reorders them). */
const sameJson = (a: Json, b: Json): boolean => canonical(a) === canonical(b)
const canonical = (value: unknown): string =>
  Array.isArray(value)
    ? `[${value.map(canonical).join(",")}]`
    : value !== null && typeof value === "object"
    ? `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`).join(",")}}`
    : JSON.stringify(value)

// ---------------------------------------------------------------------------------------------------------------
// Worker writes

/** The run `write` is about, if `leaseEpoch` still holds it. */
const fence = (ledger: Ledger, write: Write): LedgerRun | RunNotFound | LeaseLost => {
  const run = ledger.runs.get(write.runId)
  if (run === undefined) return RunNotFound.of(write.runId)
  if (run.leaseEpoch === write.leaseEpoch && run.state === "running") return run
  return new LeaseLost({
    runId: write.runId,
    leaseEpoch: write.leaseEpoch,
    currentEpoch: run.leaseEpoch,
    state: run.state,
    message: run.leaseEpoch !== write.leaseEpoch
      ? `Lease ${write.leaseEpoch} of run ${run.id} was superseded by lease ${run.leaseEpoch}`
      : `Run ${run.id} is ${run.state}; lease ${write.leaseEpoch} no longer holds it`
  })
}

const written: WriteResult = { _tag: "Written" }

/** The size of a value as stored (JSON, UTF-8), or undefined when it fits. */
const oversized = (value: unknown, max: number): number | undefined => {
  const text = JSON.stringify(value) ?? "null"
  // Cheap first: a string of n UTF-16 units has at most 3n UTF-8 bytes.
  if (text.length * 3 <= max) return undefined
  const bytes = Buffer.byteLength(text)
  return bytes > max ? bytes : undefined
}

const tooLarge = (what: string, bytes: number, max: number) =>
  new PayloadTooLarge({ maxBytes: max, message: `${what} is ${bytes} bytes, more than the ${max} bytes the server stores (MAX_PAYLOAD_BYTES)` })

const write = (context: DecisionContext, write: Write): WriteResult => {
  const { ledger, maxPayloadBytes: max } = context
  switch (write._tag) {
    case "StartTask": {
      const bytes = oversized(write.payload, max)
      if (bytes !== undefined) return tooLarge(`The payload of task ${write.name}`, bytes, max)
      return startTask(ledger, write)
    }
    case "FinishTask": {
      const value = write.outcome._tag === "Completed" ? write.outcome.result : write.outcome.error
      const bytes = oversized(value, max)
      if (bytes !== undefined) {
        return tooLarge(`The ${write.outcome._tag === "Completed" ? "result" : "error"} of task ${write.address}`, bytes, max)
      }
      return finishTask(ledger, write)
    }
    case "ReceiveEvent":
      return receiveEvent(ledger, write)
    case "ParkRun":
      return park(ledger, write)
    case "CompleteRun": {
      const run = ledger.runs.get(write.runId)
      if (run?.state === "completed" && run.leaseEpoch === write.leaseEpoch) return written
      const bytes = oversized(write.result, max)
      if (bytes !== undefined) return tooLarge(`The result of run ${write.runId}`, bytes, max)
      return finishRun(ledger, write, "completed", { result: write.result })
    }
    case "FailRun": {
      const run = ledger.runs.get(write.runId)
      if (run?.state === "failed" && run.leaseEpoch === write.leaseEpoch) return written
      const bytes = oversized(write.error, max)
      if (bytes !== undefined) return tooLarge(`The error of run ${write.runId}`, bytes, max)
      return finishRun(ledger, write, "failed", { error: write.error })
    }
    case "ReleaseRun": {
      const run = fence(ledger, write)
      if (!isRun(run)) return run
      return requeue(ledger, run, "released", { leaseEpoch: run.leaseEpoch, workerId: run.leaseOwner }) ?? written
    }
    case "HeartbeatTask":
      return heartbeatTask(ledger, write)
    case "BeginAttempt":
      return beginAttempt(ledger, write)
    case "StartChild":
      // Decided by `startChild` (its answer comes after the insert).
      return invalidEntry(write, "pending", "running", "a child's start is decided on its own")
    case "AwaitChild":
      return awaitChild(ledger, write)
  }
}

/**
 * The workflow's retry policy runs it again: the attempt is counted on the run (not a state change). A repeated or
 * older attempt number changes nothing, so the count only goes up.
 */
const beginAttempt = (ledger: Ledger, write: BeginAttempt): WriteResult => {
  const run = fence(ledger, write)
  if (!isRun(run)) return run
  const step = write.attempt - run.policyAttempt
  if (step <= 0) return written
  run.attempt += step
  run.policyAttempt = write.attempt
  ledger.patch(run, {})
  return written
}

/** An attempt's heartbeat: its heartbeat timeout starts over, unless the server already timed it out. */
const heartbeatTask = (ledger: Ledger, write: HeartbeatTask): WriteResult => {
  const run = fence(ledger, write)
  if (!isRun(run)) return run
  const attempt = ledger.entry(run.id, write.address)?.attempts.find((a) => a.attempt === write.attempt)
  if (attempt === undefined) {
    return new TaskNotFound({
      runId: write.runId,
      address: write.address,
      message: `Run ${write.runId} has no attempt ${write.attempt} of task ${write.address}`
    })
  }
  if (attempt.timedOut !== null) return { _tag: "AttemptTimedOut", kind: attempt.timedOut }
  if (attempt.finished || write.probe === true) return written
  // A heartbeat is the worker alive and the task moving: progress.
  progressed(ledger, run)
  const started = ledger.attempt(run.id, write.address, write.attempt)
  // An attempt started in this same group is inserted with its beat (the statement's update would not see it).
  if (started?.isNew === true) started.beat = { details: write.details ?? started.beat?.details }
  else ledger.attemptBeats.push({ runId: run.id, address: write.address, attempt: write.attempt, details: write.details })
  return written
}

const isRun = (value: LedgerRun | RunNotFound | LeaseLost): value is LedgerRun =>
  !(value instanceof RunNotFound) && !(value instanceof LeaseLost)

const finishRun = (
  ledger: Ledger,
  write: { readonly runId: RunId; readonly leaseEpoch: LeaseEpoch },
  to: "completed" | "failed",
  patch: { readonly result?: Json; readonly error?: ErrorDetails }
): WriteResult => {
  const run = fence(ledger, write as Write)
  if (!isRun(run)) return run
  const refused = moveRun(ledger, run, to, to, { leaseEpoch: run.leaseEpoch, workerId: run.leaseOwner })
  if (refused !== undefined) return refused
  ledger.patch(run, { ...patch, leaseMs: null, finished: true })
  return written
}

const startTask = (ledger: Ledger, write: StartTask): WriteResult => {
  const run = fence(ledger, write)
  if (!isRun(run)) return run
  const existing = ledger.entry(run.id, write.address)
  const open = (entry: LedgerEntry) => {
    entry.attempts.push({ attempt: write.attempt, leaseEpoch: write.leaseEpoch, finished: false, timedOut: null, overdue: null })
    entry.notBefore = write.notBefore === undefined ? null : DateTime.formatIso(write.notBefore)
    ledger.writeAttempt({
      runId: run.id,
      address: write.address,
      attempt: write.attempt,
      leaseEpoch: write.leaseEpoch,
      isNew: true,
      startedAgoMs: 0,
      finished: false,
      error: null,
      timeoutMs: write.timeoutMs,
      heartbeatTimeoutMs: write.heartbeatTimeoutMs
    })
  }
  if (existing === undefined) {
    if (write.attempt !== 1) {
      return invalidEntry(write, "pending", "running", `its first attempt is 1, not ${write.attempt}`)
    }
    const entry: LedgerEntry = {
      runId: run.id,
      address: write.address,
      sequence: write.sequence,
      name: write.name,
      state: "pending",
      outcomeOrder: null,
      notBefore: null,
      attempts: [],
      isNew: true,
      payload: write.payload,
      changed: true,
      result: undefined,
      error: undefined
    }
    ledger.addEntry(entry)
    const refused = moveEntry(ledger, run, entry, "running", "task_started")
    if (refused !== undefined) return refused
    open(entry)
    return written
  }
  const same = existing.attempts.find((a) => a.attempt === write.attempt)
  // A repeated request (the worker retried it) changes nothing.
  if (same !== undefined && same.leaseEpoch === write.leaseEpoch) return written
  const last = existing.attempts.reduce((max, a) => Math.max(max, a.attempt), 0)
  if (write.attempt !== last + 1) {
    return invalidEntry(existing, existing.state, "running", `attempt ${write.attempt} cannot follow attempt ${last}`)
  }
  switch (existing.state) {
    case "completed":
      return invalidEntry(existing, "completed", "running", "it is completed; its result is final")
    case "failed": {
      // Failed for good, and the workflow is being retried: the task runs again.
      const refused = moveEntry(ledger, run, existing, "retrying", "workflow_retry") ??
        moveEntry(ledger, run, existing, "running", "task_started")
      if (refused !== undefined) return refused
      existing.outcomeOrder = null
      break
    }
    case "retrying":
    case "pending": {
      const refused = moveEntry(ledger, run, existing, "running", "task_started")
      if (refused !== undefined) return refused
      break
    }
    case "running": {
      const cutOff = existing.attempts.find((a) => !a.finished)
      if (cutOff !== undefined && cutOff.leaseEpoch === write.leaseEpoch) {
        return invalidEntry(existing, "running", "running", `attempt ${cutOff.attempt} of this lease is still running`)
      }
      // The attempt a lost lease cut off ends here, as abandoned.
      if (cutOff !== undefined) {
        cutOff.finished = true
        ledger.writeAttempt({
          runId: run.id,
          address: existing.address,
          attempt: cutOff.attempt,
          leaseEpoch: cutOff.leaseEpoch,
          isNew: false,
          startedAgoMs: 0,
          finished: true,
          error: { name: "LeaseLost", message: "The worker running this attempt lost its lease" }
        })
      }
      const refused = moveEntry(ledger, run, existing, "running", "attempt_abandoned")
      if (refused !== undefined) return refused
      break
    }
  }
  existing.error = undefined
  open(existing)
  return written
}

const finishTask = (ledger: Ledger, write: FinishTask): WriteResult => {
  const entry = ledger.entry(write.runId, write.address)
  const attempt = entry?.attempts.find((a) => a.attempt === write.attempt)
  // A repeated request for an outcome already recorded (the run may have moved on since) is answered as done.
  if (entry !== undefined && attempt?.finished === true && entry.state !== "running") return written
  const run = fence(ledger, write)
  if (!isRun(run)) return run
  if (entry === undefined) {
    return new TaskNotFound({
      runId: write.runId,
      address: write.address,
      message: `Run ${write.runId} has no task ${write.address}; start it before reporting its outcome`
    })
  }
  const to: TaskState = write.outcome._tag === "Completed" ? "completed" : "failed"
  // The lease holding the run may end its open attempt, even one begun under an earlier lease: a durable wait (a
  // sleep, an event) started before the run was parked ends after it was woken. The run's fence is the guard.
  // An attempt the server timed out is closed already (its error says so); the worker's outcome still moves the
  // entry: a failure per its retry policy, or a completion that crossed the timeout on the wire.
  const timedOut = attempt !== undefined && attempt.timedOut !== null && entry.state === "running"
  if (attempt === undefined || (attempt.finished && !timedOut) || entry.state !== "running") {
    return invalidEntry(entry, entry.state, to, `attempt ${write.attempt} is not the one running`)
  }
  progressed(ledger, run)
  attempt.finished = true
  const attemptWrite = ledger.attempt(run.id, entry.address, write.attempt)
  const error = write.outcome._tag === "Failed" ? write.outcome.error : null
  if (!timedOut) ledger.writeAttempt({
    runId: run.id,
    address: entry.address,
    attempt: write.attempt,
    leaseEpoch: write.leaseEpoch,
    // Started in this same group: its start is placed where the worker measured it.
    isNew: attemptWrite?.isNew ?? false,
    startedAgoMs: attemptWrite?.isNew === true ? write.elapsedMs : 0,
    finished: true,
    error
  })
  switch (write.outcome._tag) {
    case "Completed": {
      const refused = moveEntry(ledger, run, entry, "completed", "task_completed")
      if (refused !== undefined) return refused
      entry.result = write.outcome.result
      entry.error = undefined
      entry.outcomeOrder = write.outcomeOrder ?? null
      entry.notBefore = null
      break
    }
    case "Failed": {
      const refused = moveEntry(ledger, run, entry, "failed", "task_failed") ??
        (write.outcome.retryAt !== undefined ? moveEntry(ledger, run, entry, "retrying", "task_retrying") : undefined)
      if (refused !== undefined) return refused
      entry.error = write.outcome.error
      if (write.outcome.retryAt !== undefined) {
        entry.notBefore = DateTime.formatIso(write.outcome.retryAt)
      } else {
        entry.outcomeOrder = write.outcomeOrder ?? null
        entry.notBefore = null
      }
      break
    }
  }
  return written
}

const receiveEvent = (ledger: Ledger, write: ReceiveEvent): WriteResult => {
  const run = fence(ledger, write)
  if (!isRun(run)) return run
  const entry = ledger.entry(run.id, write.address)
  if (entry === undefined || entry.state !== "running") {
    return new TaskNotFound({
      runId: write.runId,
      address: write.address,
      message: `Run ${write.runId} has no waiting entry ${write.address}; start the wait before receiving its event`
    })
  }
  const events = ledger.events.filter((e) => e.runId === run.id)
  const received = events.find((e) => e.consumedBy === write.address)
  if (received !== undefined) return { _tag: "EventReceived", payload: received.payload }
  // A timed wait's deadline is its `notBefore`, judged by the database's clock read with the entry. Past it, only
  // an event sent by then is received; one sent later stays for the next wait of that name.
  const deadline = entry.due === true && entry.notBefore !== null ? Date.parse(entry.notBefore) : undefined
  const inTime = (e: LedgerEvent) => deadline === undefined || (e.sentAt !== undefined && e.sentAt <= deadline)
  const next = events.find((e) => e.consumedBy === null && e.name === write.name && inTime(e))
  if (next === undefined) return deadline !== undefined ? { _tag: "NoEvent", timedOut: true } : { _tag: "NoEvent" }
  next.consumedBy = write.address
  next.changed = true
  return { _tag: "EventReceived", payload: next.payload }
}

const park = (ledger: Ledger, write: ParkRun): WriteResult => {
  const run = fence(ledger, write)
  if (!isRun(run)) return run
  const waiting = [
    ...new Set(ledger.events.filter((e) => e.runId === run.id && e.consumedBy === null && write.events.includes(e.name as EventName))
      .map((e) => e.name as EventName))
  ]
  if (waiting.length > 0) return { _tag: "EventWaiting", names: waiting }
  const children = write.children ?? []
  // A child that ended before the run could park would never wake it: its outcome is asked for instead.
  const ended = children.filter((id) => {
    const child = ledger.children.get(id)
    return child === undefined || isTerminal(child.state)
  })
  if (ended.length > 0) return { _tag: "ChildrenEnded", runIds: ended }
  const refused = moveRun(ledger, run, write.state, "suspended", { leaseEpoch: run.leaseEpoch, workerId: run.leaseOwner })
  if (refused !== undefined) return refused
  progressed(ledger, run)
  run.leaseOwner = null
  run.awaitingChildren = children.length > 0 ? children : null
  run.awaitingEvents = write.events.length > 0 ? write.events : null
  ledger.patch(run, { leaseMs: null, wakeAt: write.wakeAt === undefined ? null : DateTime.formatIso(write.wakeAt) })
  return written
}

/** Opens the entry of a durable wait at `address` (attempt 1, running) unless the journal has it already. */
const openWait = (
  ledger: Ledger,
  run: LedgerRun,
  write: { readonly address: TaskAddress; readonly sequence: number; readonly leaseEpoch: number; readonly entryPayload: Json },
  name: string
): InvalidTransition | undefined => {
  if (ledger.entry(run.id, write.address) !== undefined) return undefined
  const entry: LedgerEntry = {
    runId: run.id,
    address: write.address,
    sequence: write.sequence,
    name,
    state: "pending",
    outcomeOrder: null,
    notBefore: null,
    attempts: [{ attempt: 1, leaseEpoch: write.leaseEpoch, finished: false, timedOut: null, overdue: null }],
    isNew: true,
    payload: write.entryPayload,
    changed: true,
    result: undefined,
    error: undefined
  }
  ledger.addEntry(entry)
  const refused = moveEntry(ledger, run, entry, "running", "task_started")
  if (refused !== undefined) return refused
  ledger.writeAttempt({
    runId: run.id,
    address: write.address,
    attempt: 1,
    leaseEpoch: write.leaseEpoch,
    isNew: true,
    startedAgoMs: 0,
    finished: false,
    error: null
  })
  return undefined
}

/**
 * A child's start: its entry opened and the child queued for the group's insert, which answers the write. Asked
 * again (a retried request, a replay before the entry's outcome was written), the same idempotency key finds the
 * same child.
 */
const startChild = (context: DecisionContext, change: WorkerWrite, write: StartChild) => {
  const { ledger, maxPayloadBytes: max } = context
  const bytes = oversized(write.payload, max)
  if (bytes !== undefined) {
    change.outcome = tooLarge(`The payload of child workflow ${write.workflowName}`, bytes, max)
    return
  }
  const run = fence(ledger, write)
  if (!isRun(run)) {
    change.outcome = run
    return
  }
  const refused = openWait(ledger, run, write, "aiki.child")
  if (refused !== undefined) {
    change.outcome = refused
    return
  }
  ledger.childStarts.push({
    parentRunId: run.id,
    traceParent: run.traceParent,
    sequence: write.sequence,
    write,
    answer: (outcome) => (change.outcome = outcome)
  })
}

const awaitChild = (ledger: Ledger, write: AwaitChild): WriteResult => {
  const run = fence(ledger, write)
  if (!isRun(run)) return run
  const refused = openWait(ledger, run, write, "aiki.child.result")
  if (refused !== undefined) return refused
  const child = ledger.children.get(write.childRunId)
  if (child === undefined) {
    return {
      _tag: "ChildEnded",
      state: "failed",
      error: { name: "ChildNotFound", message: `Child run ${write.childRunId} does not exist (deleted by retention?)` }
    }
  }
  switch (child.state) {
    case "completed":
      return { _tag: "ChildEnded", state: "completed", result: child.result }
    case "failed":
    case "cancelled":
      return {
        _tag: "ChildEnded",
        state: child.state,
        ...(child.error !== null ? { error: child.error as ErrorDetails } : {})
      }
    case "pending":
    case "running":
    case "sleeping":
    case "awaiting_event":
    case "awaiting_child":
    case "awaiting_retry":
      return { _tag: "ChildRunning" }
  }
}

/** The entries a group must read before deciding its writes. */
export const entriesOf = (change: RunChange): ReadonlyArray<{ readonly runId: string; readonly address: string }> => {
  if (change._tag === "TimeOutAttempt") return [{ runId: change.runId, address: change.address }]
  if (change._tag !== "WorkerWrite") return []
  const write = change.write
  switch (write._tag) {
    case "StartTask":
    case "FinishTask":
    case "ReceiveEvent":
    case "HeartbeatTask":
    case "StartChild":
    case "AwaitChild":
      return [{ runId: write.runId, address: write.address }]
    case "ParkRun":
    case "CompleteRun":
    case "FailRun":
    case "ReleaseRun":
    case "BeginAttempt":
      return []
  }
}

/** Whether a change needs the run's events read first (for which entry, or which sender's id). */
export const eventsOf = (
  change: RunChange
): { readonly runId: string; readonly address: string | null; readonly key?: string } | undefined => {
  if (change._tag === "SendEvent") return change.key === undefined ? undefined : { runId: change.runId, address: null, key: change.key }
  if (change._tag !== "WorkerWrite") return undefined
  switch (change.write._tag) {
    case "ReceiveEvent":
      return { runId: change.write.runId, address: change.write.address }
    case "ParkRun":
      return change.write.events.length > 0 ? { runId: change.write.runId, address: null } : undefined
    default:
      return undefined
  }
}

/** The children a change needs read first: the one it awaits, or those the run parks on. */
export const childrenOf = (change: RunChange): ReadonlyArray<string> => {
  if (change._tag !== "WorkerWrite") return []
  switch (change.write._tag) {
    case "AwaitChild":
      return [change.write.childRunId]
    case "ParkRun":
      return change.write.children ?? []
    default:
      return []
  }
}

export { isRun }
