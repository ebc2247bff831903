/**
 * The states of a journal entry of a run (a task, or a durable wait such as a sleep or an event) and their state
 * machine: `pending → running → completed | failed`, and `failed → retrying → running` while attempts remain.
 * `running → running` opens a new attempt in place of one that a lost lease cut off.
 */
import * as Schema from "effect/Schema"

export const TaskState = Schema.Literals(["pending", "running", "completed", "failed", "retrying"])
export type TaskState = typeof TaskState.Type

const next: { readonly [S in TaskState]: ReadonlyArray<TaskState> } = {
  pending: ["running"],
  running: ["running", "completed", "failed"],
  failed: ["retrying"],
  retrying: ["running"],
  completed: []
}

/** Whether a task may go from one state to another. */
export const canTransition = (from: TaskState, to: TaskState): boolean => next[from].includes(to)

/** The states from which `to` can be reached. */
export const sourcesOf = (to: TaskState): ReadonlyArray<TaskState> =>
  TaskState.literals.filter((from) => canTransition(from, to))

/** An entry whose outcome is final: its result (or its error) is what every replay gets. */
export const isFinal = (state: TaskState): boolean => state === "completed" || state === "failed"
