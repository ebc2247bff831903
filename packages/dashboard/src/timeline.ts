/**
 * Where a run's time went, as bars on one time axis (milliseconds since the run was started): the run's own
 * states (queued, running, parked in a durable wait) on the first row, then one row per journal entry — each task
 * with every attempt it took (failed attempts and the retry delays between them show as gaps), and each durable
 * sleep or event wait. The chart and the accessible table below it are both drawn from these bars.
 */
import type { Task, Transition, WorkflowRun } from "@aiki/contract/Models"
import { isTerminal, type RunState } from "@aiki/contract/RunState"
import { duration, errorSummary, millis } from "./format.ts"

export type BarKind = "queued" | "running" | "waiting" | "completed" | "failed" | "active"

export interface Bar {
  /** The row's label: `Run`, or the journal entry's. */
  readonly row: string
  /** Milliseconds since the run was started. */
  readonly start: number
  readonly end: number
  readonly kind: BarKind
  /** What the bar is, in words: `attempt 2`, `awaiting_event`. */
  readonly what: string
  readonly error?: string
}

const runKind = (state: RunState): BarKind => {
  switch (state) {
    case "pending":
      return "queued"
    case "running":
      return "running"
    case "sleeping":
    case "awaiting_event":
    case "awaiting_child":
    case "awaiting_retry":
      return "waiting"
    case "completed":
    case "failed":
    case "cancelled":
      return "completed"
  }
}

const isRunState = (state: string): state is RunState =>
  ["pending", "running", "sleeping", "awaiting_event", "awaiting_child", "awaiting_retry", "completed", "failed", "cancelled"]
    .includes(state)

/** How a journal entry reads: a task by its name, a durable wait by what it waits for. */
export const entryLabel = (task: Task): string => {
  const payload = typeof task.payload === "object" && task.payload !== null && !Array.isArray(task.payload)
    ? task.payload
    : {}
  if (task.name === "aiki.sleep" && "ms" in payload && typeof payload["ms"] === "number") {
    return `sleep ${duration(payload["ms"])}`
  }
  if (task.name === "aiki.event" && "name" in payload && typeof payload["name"] === "string") {
    const timeout = "timeoutMs" in payload && typeof payload["timeoutMs"] === "number" ? ` (at most ${duration(payload["timeoutMs"])})` : ""
    return `wait for event “${payload["name"]}”${timeout}`
  }
  if (task.name === "aiki.patch" && "changeId" in payload && typeof payload["changeId"] === "string") {
    return `patch “${payload["changeId"]}”`
  }
  if (task.name === "aiki.child" && "workflow" in payload && typeof payload["workflow"] === "string") {
    return `start child ${payload["workflow"]}`
  }
  if (task.name === "aiki.child.result" && "runId" in payload && typeof payload["runId"] === "string") {
    return `wait for child ${payload["runId"].slice(-8)}`
  }
  return task.name
}

const isWait = (task: Task) => task.name === "aiki.sleep" || task.name === "aiki.event" || task.name === "aiki.child.result"

/** The bars of a run at `now` (epoch ms): unfinished things extend to now. */
export const bars = (
  run: WorkflowRun,
  tasks: ReadonlyArray<Task>,
  transitions: ReadonlyArray<Transition>,
  now: number
): ReadonlyArray<Bar> => {
  const origin = millis(run.createdAt)
  const at = (instant: Parameters<typeof millis>[0]) => millis(instant) - origin
  const end = (isTerminal(run.state) && run.finishedAt !== undefined ? millis(run.finishedAt) : now) - origin
  const result: Array<Bar> = []

  const runTransitions = transitions.filter((t) => t.taskAddress === undefined)
  runTransitions.forEach((transition, i) => {
    const next = runTransitions[i + 1]
    if (!isRunState(transition.toState) || isTerminal(transition.toState)) return
    result.push({
      row: "Run",
      start: at(transition.at),
      end: next !== undefined ? at(next.at) : end,
      kind: runKind(transition.toState),
      what: transition.toState
    })
  })

  const sorted = [...tasks].sort((a, b) => a.sequence - b.sequence)
  for (const task of sorted) {
    const row = `${task.sequence + 1}. ${entryLabel(task)}`
    for (const attempt of task.attempts) {
      const finished = attempt.finishedAt !== undefined
      result.push({
        row,
        start: at(attempt.startedAt),
        end: finished ? at(attempt.finishedAt!) : Math.max(at(attempt.startedAt), end),
        // A wait's attempt ends abandoned when the run parks (no worker waits for it): that is waiting, not failing.
        kind: isWait(task) && (!finished || attempt.error !== undefined)
          ? "waiting"
          : attempt.error !== undefined
          ? "failed"
          : finished
          ? "completed"
          : "active",
        what: task.attempts.length > 1 ? `attempt ${attempt.attempt}` : finished ? "done" : "in progress",
        ...(attempt.error !== undefined && !isWait(task) ? { error: errorSummary(attempt.error) } : {})
      })
    }
  }
  return result
}

/** Colours with at least 3:1 contrast against both page backgrounds, one per kind. */
export const colours: Record<BarKind, string> = {
  queued: "#8a8f98",
  running: "#2b59c3",
  waiting: "#8e44ad",
  completed: "#1e8449",
  failed: "#c0392b",
  active: "#d68910"
}
