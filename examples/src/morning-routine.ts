/**
 * The morning routine from Aiki's core concepts: ring the alarm (retried: alarms are flaky), stretch, make coffee.
 */
import { task, workflow } from "@aiki/sdk"
import { setTimeout as sleep } from "node:timers/promises"

const ringAlarm = task({
  name: "ring-alarm",
  retry: { type: "fixed", maxAttempts: 3, delayMs: 100 },
  run: async ({ attempt, payload }: { attempt: number; payload: { song: string } }) => {
    // The first ring is always snoozed: the retry policy rings again.
    if (attempt === 1) throw new Error("snoozed")
    return `Playing "${payload.song}" (ring ${attempt})`
  }
})

const stretch = task({
  name: "stretch",
  run: async ({ payload, signal }: { payload: { duration: number }; signal: AbortSignal }) => {
    await sleep(Math.min(payload.duration, 200), undefined, { signal })
    return `Stretched for ${payload.duration} seconds`
  }
})

const makeCoffee = task({
  name: "make-coffee",
  run: async ({ payload }: { payload: { cups: number } }) => `${payload.cups} cup(s) of coffee ready`
})

export const morningRoutine = workflow({ name: "morning-routine" })

export const morningRoutineV1 = morningRoutine.v("1.0.0", {
  async run(ctx, payload: { song: string; cups: number }) {
    const alarmResult = await ringAlarm.start(ctx, { payload: { song: payload.song } })
    const stretchResult = await stretch.start(ctx, { payload: { duration: 300 } })
    const coffeeResult = await makeCoffee.start(ctx, { payload: { cups: payload.cups } })
    return { alarmResult, stretchResult, coffeeResult }
  }
})

export const sampleMorning = { song: "Wake up!", cups: 2 }
