/**
 * The states of a workflow run and the one state machine that every transition goes through.
 *
 * `pending → running → completed | failed | cancelled`; a run suspended with no worker attached waits in
 * `sleeping`, `awaiting_event`, `awaiting_child` or `awaiting_retry` and goes back to `pending` when it is woken.
 * A running run whose lease lapsed goes back to `pending` too. Any non-terminal state may become `cancelled`.
 */
import { Schema } from "effect"

export const RunState = Schema.Literals([
  "pending",
  "running",
  "sleeping",
  "awaiting_event",
  "awaiting_child",
  "awaiting_retry",
  "completed",
  "failed",
  "cancelled"
])
export type RunState = typeof RunState.Type

export const terminalStates: ReadonlyArray<RunState> = ["completed", "failed", "cancelled"]
export const suspendedStates: ReadonlyArray<RunState> = ["sleeping", "awaiting_event", "awaiting_child", "awaiting_retry"]

/** A run that can never change again. */
export const isTerminal = (state: RunState): boolean => {
  switch (state) {
    case "completed":
    case "failed":
    case "cancelled":
      return true
    case "pending":
    case "running":
    case "sleeping":
    case "awaiting_event":
    case "awaiting_child":
    case "awaiting_retry":
      return false
  }
}

/** A run waiting for a worker with no worker attached to it. */
export const isSuspended = (state: RunState): boolean => suspendedStates.includes(state)

/** The states a transition may go to from each state. */
const next: { readonly [S in RunState]: ReadonlyArray<RunState> } = {
  pending: ["running", "cancelled"],
  running: ["pending", "completed", "failed", "cancelled", "sleeping", "awaiting_event", "awaiting_child", "awaiting_retry"],
  sleeping: ["pending", "cancelled"],
  awaiting_event: ["pending", "cancelled"],
  awaiting_child: ["pending", "cancelled"],
  awaiting_retry: ["pending", "cancelled"],
  completed: [],
  failed: [],
  cancelled: []
}

/** Whether a run may go from one state to another. */
export const canTransition = (from: RunState, to: RunState): boolean => next[from].includes(to)

/** The states from which `to` can be reached (used to guard SQL updates: `WHERE state IN (…)`). */
export const sourcesOf = (to: RunState): ReadonlyArray<RunState> =>
  RunState.literals.filter((from) => canTransition(from, to))
