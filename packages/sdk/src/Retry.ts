/**
 * How a task is retried. The policy is data, so it survives a crash: the worker that takes a run over knows which
 * attempt comes next and how long to wait for it. An Effect `Schedule` is accepted as well (its state lives in
 * the worker, so after a takeover it starts over; the attempt count shown is still the durable one).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"

export type RetryPolicy =
  | {
    readonly type: "fixed"
    /** Attempts in all, the first included. */
    readonly maxAttempts: number
    readonly delayMs: number
  }
  | {
    readonly type: "exponential"
    /** Attempts in all, the first included. */
    readonly maxAttempts: number
    /** Delay before the second attempt; doubled for each one after. */
    readonly baseDelayMs: number
    /** @default unbounded */
    readonly maxDelayMs?: number
  }

export type Retry = RetryPolicy | Schedule.Schedule<unknown, unknown>

/** Decides, after a failed attempt, whether to try again and after how long. */
export interface Retrier {
  readonly next: (failedAttempt: number, error: unknown) => Effect.Effect<Option.Option<Duration.Duration>>
  /**
   * Whether the decision depends only on the attempt number (a policy), so the run may be suspended during a long
   * delay and resumed by any worker. A `Schedule` keeps state in the worker: its delays are always waited there.
   */
  readonly durable: boolean
}

export const noRetry: Retrier = { next: () => Effect.succeedNone, durable: true }

const fromPolicy = (policy: RetryPolicy): Retrier => ({
  durable: true,
  next: (failedAttempt) => {
    if (failedAttempt >= policy.maxAttempts) return Effect.succeedNone
    switch (policy.type) {
      case "fixed":
        return Effect.succeedSome(Duration.millis(policy.delayMs))
      case "exponential": {
        const delay = policy.baseDelayMs * 2 ** (failedAttempt - 1)
        return Effect.succeedSome(Duration.millis(Math.min(delay, policy.maxDelayMs ?? Number.POSITIVE_INFINITY)))
      }
    }
  }
})

const fromSchedule = (schedule: Schedule.Schedule<unknown, unknown>) =>
  Effect.map(Schedule.toStep(schedule), (step): Retrier => ({
    durable: false,
    next: (_attempt, error) =>
      Effect.clockWith((clock) => step(clock.currentTimeMillisUnsafe(), error)).pipe(
        Effect.map(([, delay]) => Option.some(delay)),
        Effect.catchCause(() => Effect.succeedNone)
      )
  }))

/** The retrier for one execution of a task. */
export const make = (retry: Retry | undefined): Effect.Effect<Retrier> =>
  retry === undefined
    ? Effect.succeed(noRetry)
    : Schedule.isSchedule(retry)
    ? fromSchedule(retry)
    : Effect.succeed(fromPolicy(retry))
