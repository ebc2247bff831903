/**
 * A run's journal as an execution walks it. Each durable call the workflow's code makes (a task, a sleep, an event
 * wait) takes the next place in the run — its sequence — and has an address: its name, a hash of its payload and
 * an occurrence counter. A recorded entry at that sequence with another address means the code changed: a
 * `NonDeterminismError`, never a silent wrong result.
 *
 * Recorded outcomes are delivered again in the order the code first received them (`outcomeOrder`); with replay
 * semantics version 1 (journals recorded before outcome orders existed) in call order.
 */
import type { ErrorDetails, Json, Task } from "@aiki/contract/Models"
import type { TaskState } from "@aiki/contract/TaskState"
import { NonDeterminismError } from "../Errors.ts"
import * as JsonCodec from "./json.ts"

/** The replay semantics this SDK implements (see `ReplayVersion` in the contract). */
export const replayVersion = 2

/**
 * The name of a patch marker: the entry `patched(changeId)` records where a run first takes a change's code path.
 * A marker holds its place in the sequence but has no outcome to deliver: it is found, never waited for.
 */
export const patchMarker = "aiki.patch"

/** What an entry ended with: the value every replay gets. */
export type Outcome =
  | { readonly _tag: "Completed"; readonly result: Json }
  | { readonly _tag: "Failed"; readonly error: ErrorDetails }

/** An entry as this execution knows it: recorded, or written since. */
export interface Entry {
  readonly sequence: number
  readonly address: string
  readonly name: string
  state: TaskState
  /** Attempts made so far (the next one is `attempts + 1`). */
  attempts: number
  outcome: Outcome | undefined
  outcomeOrder: number | undefined
  /** Epoch milliseconds (server clock): when a waiting entry is due. */
  notBefore: number | undefined
}

/** Where a call sits: its place, its address, and its entry when the journal has one. */
export interface Placed {
  readonly sequence: number
  readonly address: string
  readonly entry: Entry | undefined
}

const fromTask = (task: Task): Entry => ({
  sequence: task.sequence,
  address: task.address,
  name: task.name,
  state: task.state,
  attempts: task.attempts.reduce((max, a) => Math.max(max, a.attempt), 0),
  outcome: task.state === "completed"
    ? { _tag: "Completed", result: task.result ?? null }
    : task.state === "failed"
    ? { _tag: "Failed", error: task.error ?? { name: "Error", message: `task ${task.name} failed` } }
    : undefined,
  outcomeOrder: task.outcomeOrder,
  notBefore: task.notBefore === undefined ? undefined : Number(task.notBefore.epochMilliseconds)
})

export class Journal {
  private readonly entries: Map<number, Entry>
  private nextSequence = 0
  private readonly occurrences = new Map<string, number>()
  /** The order the next outcome delivered gets (after every recorded one). */
  private nextOrder: number

  readonly runId: string
  readonly version: number

  constructor(tasks: ReadonlyArray<Task>, runId: string, version: number) {
    this.runId = runId
    this.version = version
    this.entries = new Map(tasks.map((task) => [task.sequence, fromTask(task)]))
    this.nextOrder = tasks.reduce((max, t) => Math.max(max, (t.outcomeOrder ?? -1) + 1), 0)
  }

  /** The address the next call of `name` with `payload` would have. */
  private addressOf(name: string, payload: Json) {
    const key = `${name}:${JsonCodec.hash(payload)}`
    return { key, address: `${key}:${this.occurrences.get(key) ?? 0}` }
  }

  /**
   * What the run recorded from the next call's place on: whether it holds a call there or after (it went past this
   * point), and whether the entry there is exactly the call `name(payload)`.
   */
  ahead(name: string, payload: Json): { readonly passed: boolean; readonly matches: boolean } {
    const entry = this.entries.get(this.nextSequence)
    const passed = entry !== undefined || [...this.entries.keys()].some((s) => s > this.nextSequence)
    return { passed, matches: entry !== undefined && entry.address === this.addressOf(name, payload).address }
  }

  /** Takes the next call's place, or says how the code departs from what the run recorded. */
  place(name: string, payload: Json): Placed | NonDeterminismError {
    const sequence = this.nextSequence++
    const key = `${name}:${JsonCodec.hash(payload)}`
    const occurrence = this.occurrences.get(key) ?? 0
    this.occurrences.set(key, occurrence + 1)
    const address = `${key}:${occurrence}`
    const entry = this.entries.get(sequence)
    if (entry !== undefined && entry.address !== address) {
      return new NonDeterminismError({
        runId: this.runId,
        sequence,
        expected: entry.address,
        actual: address,
        message: `Run ${this.runId} is not deterministic: its call #${sequence} was "${entry.name}" (${entry.address}) ` +
          `when it was recorded, but the workflow now calls "${name}" (${address}) there. ` +
          `Deploy changed workflow code as a new version.`
      })
    }
    return { sequence, address, entry }
  }

  /** The entry recorded or written at `sequence`. */
  entryAt(sequence: number): Entry | undefined {
    return this.entries.get(sequence)
  }

  /** Adds or updates what this execution wrote about an entry. */
  record(entry: Entry) {
    this.entries.set(entry.sequence, entry)
  }

  /** The order to give the next outcome delivered. */
  takeOrder(): number {
    return this.nextOrder++
  }

  /**
   * The recorded outcomes to deliver again, in the order the code first received them. With `rerunFailed` (the
   * workflow runs again after failing) entries that failed for good are left out: they run again.
   */
  recordedOutcomes(rerunFailed: boolean): Array<Entry> {
    const final = [...this.entries.values()].filter((e) =>
      e.outcome !== undefined && e.name !== patchMarker && !(rerunFailed && e.outcome._tag === "Failed")
    )
    const key = (e: Entry) => this.version >= 2 && e.outcomeOrder !== undefined ? e.outcomeOrder : e.sequence
    return final.sort((a, b) => key(a) - key(b) || a.sequence - b.sequence)
  }

  /** Recorded entries the code has not reached (it finished before calling them). */
  unreached(): Array<Entry> {
    return [...this.entries.values()].filter((e) => e.sequence >= this.nextSequence).sort((a, b) => a.sequence - b.sequence)
  }

  /** The code runs again from the top (a workflow-level retry). */
  restart() {
    this.nextSequence = 0
    this.occurrences.clear()
  }
}
