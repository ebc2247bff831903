/**
 * The states of a workflow run and the one state machine that every transition goes through.
 *
 * `pending → running → completed | failed | cancelled`; a run parked with no worker attached waits in `sleeping`,
 * `awaiting_event`, `awaiting_child` or `awaiting_retry` and goes back to `pending` when it is woken. A running
 * run whose lease lapsed goes back to `pending` (requeued), or straight to `running` under a new lease (taken
 * over). Any non-terminal state may become `cancelled`, and `failed` by the server (a run timeout, a
 * schedule-to-start timeout, a poisoned run: see `Timeouts.ts`).
 * A `failed` or `cancelled` run goes back to `pending` only when it is retried or reset by hand
 * (`POST /workflow-runs/:id/retry|reset`): terminal means no worker or timer ever changes it again.
 *
 * The server derives every guard of its writes from `sourcesOf`, so this table is the only place the machine is
 * written down.
 */
import * as Schema from "effect/Schema"

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

/** The states of a run parked on the server, holding no worker, until something wakes it. */
export const ParkedState = Schema.Literals(["sleeping", "awaiting_event", "awaiting_child", "awaiting_retry"])
export type ParkedState = typeof ParkedState.Type

export const terminalStates: ReadonlyArray<RunState> = ["completed", "failed", "cancelled"]
export const suspendedStates: ReadonlyArray<ParkedState> = ParkedState.literals

/** A run that no worker, timer or event changes again (only a retry or reset by hand reopens it). */
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

/** A run parked on the server with no worker attached to it. */
export const isSuspended = (state: RunState): state is ParkedState => (suspendedStates as ReadonlyArray<RunState>).includes(state)

/** The states a transition may go to from each state. */
const next: { readonly [S in RunState]: ReadonlyArray<RunState> } = {
  pending: ["running", "cancelled", "failed"],
  // `running → running` is a takeover: a new lease granted over one that lapsed.
  running: ["running", "pending", "completed", "failed", "cancelled", "sleeping", "awaiting_event", "awaiting_child", "awaiting_retry"],
  sleeping: ["pending", "cancelled", "failed"],
  awaiting_event: ["pending", "cancelled", "failed"],
  awaiting_child: ["pending", "cancelled", "failed"],
  awaiting_retry: ["pending", "cancelled", "failed"],
  completed: [],
  // Retried or reset by hand: the same run runs again (its idempotency key keeps meaning this run).
  failed: ["pending"],
  cancelled: ["pending"]
}

/** Whether a run may go from one state to another. */
export const canTransition = (from: RunState, to: RunState): boolean => next[from].includes(to)

/** A run that may be retried or reset by hand. */
export const isRetryable = (state: RunState): boolean => state === "failed" || state === "cancelled"

/** The states from which `to` can be reached. */
export const sourcesOf = (to: RunState): ReadonlyArray<RunState> =>
  RunState.literals.filter((from) => canTransition(from, to))
