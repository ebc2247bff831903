/**
 * Waits for something the server does in the background (publish, requeue) by checking again until it holds or a
 * generous bound passes. It never asserts on how fast: only that it happens. Failed assertions (defects) count as
 * "not yet"; the last check after the bound reports the real failure.
 */
import { Effect, Schedule } from "effect"

export const eventually = <A, E, R>(check: Effect.Effect<A, E, R>, options: { readonly timeoutMs?: number } = {}) =>
  check.pipe(
    Effect.catchDefect((defect) => Effect.fail(defect)),
    Effect.retry(Schedule.spaced("50 millis")),
    Effect.timeoutOrElse({ duration: `${options.timeoutMs ?? 20_000} millis`, orElse: () => check }),
    Effect.catch(() => check)
  )
