/** The benchmark's workflows: no-op tasks, so what is measured is Aiki itself. */
import { task, workflow } from "@aiki/sdk"
import { setTimeout as sleep } from "node:timers/promises"

const noop = (name: string) => task({ name, run: ({ payload }: { payload: number }) => payload })
const first = noop("first")
const second = noop("second")
const third = noop("third")

/** The burst's and the one-at-a-time workflow: three no-op tasks in a row. */
export const threeNoops = workflow({ name: "bench-three-noops" }).v("1.0.0", {
  async run(ctx, payload: number) {
    const a = await first.start(ctx, { payload })
    const b = await second.start(ctx, { payload: a + 1 })
    return await third.start(ctx, { payload: b + 1 })
  }
})

const step = noop("step")

/** A long journal: does a task cost the same at #1,000 as at #1? */
export const thousandTasks = workflow({ name: "bench-thousand-tasks" }).v("1.0.0", {
  async run(ctx, count: number) {
    let sum = 0
    for (let i = 0; i < count; i++) sum += await step.start(ctx, { payload: i })
    return sum
  }
})

export const holdMs = 2_000

/** Takeover: the worker running `hold` is SIGKILLed; how long until another worker runs it again? */
export const takeover = workflow({ name: "bench-takeover" }).v("1.0.0", {
  async run(ctx, payload: number) {
    return await task({
      name: "hold",
      run: async ({ signal }) => {
        await sleep(holdMs, undefined, { signal })
        return payload
      }
    }).start(ctx, { payload })
  }
})
