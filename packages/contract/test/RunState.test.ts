/**
 * The run and task state machines: which transitions exist, which states are final.
 */
import { describe, expect, it } from "@effect/vitest"
import * as RunState from "../src/RunState.ts"
import * as TaskState from "../src/TaskState.ts"

describe("RunState", () => {
  it("lets every unfinished state be cancelled or failed, and a final state only be retried by hand", () => {
    for (const state of RunState.RunState.literals) {
      expect(RunState.canTransition(state, "cancelled")).toBe(!RunState.isTerminal(state))
      // The server fails an unfinished run itself: a run timeout, a schedule-to-start timeout, a poisoned run.
      expect(RunState.canTransition(state, "failed")).toBe(!RunState.isTerminal(state))
      if (RunState.isTerminal(state)) {
        // Only a retry or a reset by hand reopens a failed or cancelled run; a completed run stays completed.
        const reopenable = RunState.isRetryable(state)
        for (const to of RunState.RunState.literals) expect(RunState.canTransition(state, to)).toBe(reopenable && to === "pending")
      }
    }
    expect(RunState.terminalStates).toEqual(["completed", "failed", "cancelled"])
    expect(RunState.RunState.literals.filter(RunState.isRetryable)).toEqual(["failed", "cancelled"])
  })

  it("only runs a pending run (or takes a running one over), and only a running run finishes or suspends", () => {
    expect(RunState.sourcesOf("running")).toEqual(["pending", "running"])
    expect(RunState.sourcesOf("completed")).toEqual(["running"])
    expect(RunState.sourcesOf("failed")).toEqual(RunState.RunState.literals.filter((s) => !RunState.isTerminal(s)))
    for (const suspended of RunState.suspendedStates) {
      expect(RunState.isSuspended(suspended)).toBe(true)
      expect(RunState.sourcesOf(suspended)).toEqual(["running"])
      expect(RunState.canTransition(suspended, "pending")).toBe(true)
      expect(RunState.canTransition(suspended, "running")).toBe(false)
    }
  })
})

describe("TaskState", () => {
  it("retries a failed task through retrying, never from completed", () => {
    expect(TaskState.canTransition("running", "completed")).toBe(true)
    expect(TaskState.canTransition("failed", "retrying")).toBe(true)
    expect(TaskState.canTransition("retrying", "running")).toBe(true)
    expect(TaskState.canTransition("failed", "running")).toBe(false)
    expect(TaskState.canTransition("completed", "running")).toBe(false)
    // running → running: a new attempt replaces one a lost lease cut off.
    expect(TaskState.sourcesOf("running")).toEqual(["pending", "running", "retrying"])
    expect(TaskState.isFinal("completed") && TaskState.isFinal("failed")).toBe(true)
    expect(TaskState.isFinal("retrying")).toBe(false)
  })
})
