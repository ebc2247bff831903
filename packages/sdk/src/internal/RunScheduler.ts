/**
 * The scheduler a run's workflow code executes on, so the engine can tell when that code is idle.
 *
 * A workflow's code runs in fibers (the Effect API, `Effect.all` with concurrency…) and in promise continuations
 * (the promise API). Every fiber of the run shares this scheduler's one dispatcher, which counts the tasks it has
 * queued; promise continuations are microtasks. So once a macrotask turn has passed (every microtask has run) and
 * no task is queued, nothing of the run's code can run until something from outside wakes it: it is idle. The
 * engine delivers outcomes (task results, events, wake-ups) only then, one at a time, which makes what the code
 * does between two outcomes independent of timing — the basis of deterministic replay.
 *
 * Task bodies do not run here: they are the run's side effects and run on the default scheduler.
 */
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as Scheduler from "effect/Scheduler"

/** Fibers waiting for the next macrotask turn; one `setImmediate` serves every run of the worker. */
let waiting: Array<() => void> = []
const turn = () => {
  const resumed = waiting
  waiting = []
  for (const resume of resumed) resume()
}

/** Waits for the next macrotask turn (every microtask queued before it has run by then). */
const nextTurn: Effect.Effect<void> = Effect.callback<void>((resume) => {
  let resumed = false
  const wake = () => {
    if (!resumed) resume(Effect.void)
  }
  if (waiting.length === 0) setImmediate(turn)
  waiting.push(wake)
  return Effect.sync(() => {
    resumed = true
  })
})

export class RunScheduler implements Scheduler.Scheduler {
  readonly executionMode = "async" as const
  private readonly mixed = new Scheduler.MixedScheduler()
  private readonly inner = this.mixed.makeDispatcher()
  /** Tasks queued and not run yet. */
  private queued = 0
  private readonly dispatcher: Scheduler.SchedulerDispatcher = {
    scheduleTask: (task, priority) => {
      this.queued++
      this.inner.scheduleTask(() => {
        this.queued--
        task()
      }, priority)
    },
    flush: () => this.inner.flush()
  }

  shouldYield(fiber: Fiber.Fiber<unknown, unknown>): boolean {
    return this.mixed.shouldYield(fiber)
  }

  makeDispatcher(): Scheduler.SchedulerDispatcher {
    return this.dispatcher
  }

  /** Completes once the run's code is idle: a macrotask turn passed with nothing of it queued. */
  readonly idle: Effect.Effect<void> = Effect.suspend(() => {
    const check: Effect.Effect<void> = Effect.flatMap(nextTurn, () => this.queued > 0 ? check : Effect.void)
    return check
  })
}
