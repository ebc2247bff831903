/**
 * The states of a task inside a run and their state machine:
 * `pending → running → completed | failed`, and `failed → retrying → running` while attempts remain.
 */
import { Schema } from "effect"

export const TaskState = Schema.Literals(["pending", "running", "completed", "failed", "retrying"])
export type TaskState = typeof TaskState.Type

const next: { readonly [S in TaskState]: ReadonlyArray<TaskState> } = {
  pending: ["running"],
  running: ["completed", "failed"],
  failed: ["retrying"],
  retrying: ["running"],
  completed: []
}

/** Whether a task may go from one state to another. */
export const canTransition = (from: TaskState, to: TaskState): boolean => next[from].includes(to)

/** The states from which `to` can be reached. */
export const sourcesOf = (to: TaskState): ReadonlyArray<TaskState> =>
  TaskState.literals.filter((from) => canTransition(from, to))
