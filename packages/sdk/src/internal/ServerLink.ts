/**
 * How a worker talks to the server when the server may be unreachable: requests that fail in transit (the server
 * restarting, the network down) are retried with backoff, and the outage is logged once at warn when it starts and
 * once when it ends, instead of every retry silently (or not at all).
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as HttpClientError from "effect/http/HttpClientError"

/** Retries effects whose failures are transport failures; others are the caller's. */
export interface ServerLink {
  /** Retries transport failures of `effect`, waiting 50 ms, then twice as long each time, up to `maxDelayMs`. */
  readonly retrying: <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    options?: { /** @default 2_000 */ readonly maxDelayMs?: number }
  ) => Effect.Effect<A, E, R>
}

const backoff = (maxDelayMs: number) =>
  Schedule.min([Schedule.exponential("50 millis"), Schedule.spaced(Duration.millis(Math.max(50, maxDelayMs)))])
const defaultBackoff = backoff(2_000)

const reasonOf = (error: HttpClientError.HttpClientError) => error.message

export const make = (baseUrl: string) =>
  Effect.gen(function*() {
    // Since when the server has been unreachable, while it is.
    const outage = yield* Ref.make<number | undefined>(undefined)
    const failed = (error: HttpClientError.HttpClientError) =>
      Effect.gen(function*() {
        if ((yield* Ref.get(outage)) !== undefined) return
        yield* Ref.set(outage, yield* Clock.currentTimeMillis)
        yield* Effect.logWarning(`Cannot reach the Aiki server at ${baseUrl}; retrying until it answers`, reasonOf(error))
      })
    const succeeded = Effect.gen(function*() {
      const since = yield* Ref.getAndSet(outage, undefined)
      if (since === undefined) return
      const seconds = ((yield* Clock.currentTimeMillis) - since) / 1000
      yield* Effect.logWarning(`Reached the Aiki server at ${baseUrl} again after ${seconds.toFixed(1)} s`)
    })
    const retrying = <A, E, R>(
      effect: Effect.Effect<A, E, R>,
      options: { readonly maxDelayMs?: number } = {}
    ): Effect.Effect<A, E, R> =>
      effect.pipe(
        Effect.tapError((error) => HttpClientError.isHttpClientError(error) ? failed(error) : Effect.void),
        Effect.retry({
          while: HttpClientError.isHttpClientError,
          schedule: options.maxDelayMs === undefined ? defaultBackoff : backoff(options.maxDelayMs)
        }),
        Effect.tap(() => succeeded)
      )
    return { retrying } satisfies ServerLink
  })
