/**
 * The workflow the chaos runs: three tasks in a row whose result is a pure function of the payload, so every run
 * has exactly one right answer however often it was interrupted. Each execution of a task appends one line to the
 * side-effect log (`SIDE_EFFECTS_FILE`) before it does its work, so the harness can count what really ran,
 * across processes that were killed mid-way.
 */
import { task, workflow } from "@aiki/sdk"
import { appendFileSync, readFileSync } from "node:fs"
import { setTimeout as sleep } from "node:timers/promises"

export const workflowName = "chaos-three-steps"

export interface Payload {
  readonly n: number
}

export interface Result {
  readonly n: number
  readonly value: number
}

/** What run `n` must return, by definition of the three tasks below. */
export const expectedResult = (n: number): Result => ({ n, value: (n + 1) * 2 + 3 })

/** One execution of a task, as its worker recorded it when it began. */
export interface Execution {
  /** Milliseconds since the epoch, the worker's clock (the machine's). */
  readonly at: number
  readonly runId: string
  readonly task: string
  /** The attempt number the server gave this execution. */
  readonly attempt: number
  readonly workerId: string
}

/** Every execution in the log, in the order they were written. */
export const readExecutions = (file: string): ReadonlyArray<Execution> => {
  let text = ""
  try {
    text = readFileSync(file, "utf8")
  } catch {
    return []
  }
  return text.split("\n").filter((line) => line.length > 0).map((line) => {
    const [at, runId, task, attempt, workerId] = line.split(" ")
    return { at: Number(at), runId: runId!, task: task!, attempt: Number(attempt), workerId: workerId! }
  })
}

/**
 * One step: records the execution (one `write` of one short line with `O_APPEND`, so lines of concurrent
 * processes never interleave), takes `TASK_MS` (so kills find tasks in flight), then computes.
 */
const step = (name: string, compute: (x: number) => number) =>
  task({
    name,
    run: async ({ attempt, payload, signal, workflowRun }: {
      readonly payload: number
      readonly attempt: number
      readonly signal: AbortSignal
      readonly workflowRun: { readonly id: string }
    }) => {
      const file = process.env["SIDE_EFFECTS_FILE"]
      if (file !== undefined) {
        appendFileSync(file, `${Date.now()} ${workflowRun.id} ${name} ${attempt} ${process.env["WORKER_ID"]}\n`)
      }
      await sleep(Number(process.env["TASK_MS"] ?? 0), undefined, { signal })
      return compute(payload)
    }
  })

const addOne = step("add-one", (x) => x + 1)
const double = step("double", (x) => x * 2)
const addThree = step("add-three", (x) => x + 3)

export const taskNames = [addOne.name, double.name, addThree.name]

export const chaosThreeSteps = workflow({ name: workflowName }).v("1.0.0", {
  async run(ctx, { n }: Payload): Promise<Result> {
    const a = await addOne.start(ctx, { payload: n })
    const b = await double.start(ctx, { payload: a })
    return { n, value: await addThree.start(ctx, { payload: b }) }
  }
})
