/** The benchmark's workflow: three no-op tasks, so what is measured is Aiki itself. */
import { task, workflow } from "@aiki/sdk"

const noop = (name: string) => task({ name, run: ({ payload }: { payload: number }) => payload })
const first = noop("first")
const second = noop("second")
const third = noop("third")

export const threeNoops = workflow({ name: "bench-three-noops" }).v("1.0.0", {
  async run(ctx, payload: number) {
    const a = await first.start(ctx, { payload })
    const b = await second.start(ctx, { payload: a + 1 })
    return await third.start(ctx, { payload: b + 1 })
  }
})
