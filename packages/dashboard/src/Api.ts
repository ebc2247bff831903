/**
 * The dashboard's only way to the server: the client derived from the contract (`@aiki/contract/Client`) over the
 * browser's `fetch`, so every request and answer is typed and decoded by the same Schema as the server's. The page
 * sends no key: after the login the browser presents the HttpOnly session cookie itself, also on the streaming
 * (Server-Sent Events) requests, which the client reads through `fetch`.
 *
 * Components call `request` (a promise of the outcome) and `follow` (a stream, reconnecting, until cancelled).
 */
import * as Client from "@aiki/contract/Client"
import { Cause, Effect, Exit, Fiber, ManagedRuntime, Schedule, Stream } from "effect"
import { FetchHttpClient, HttpClientError } from "effect/http"

const runtime = ManagedRuntime.make(FetchHttpClient.layer)

const client = runtime.runPromise(Client.make({ baseUrl: window.location.origin }))

/** A failed request, as a page shows it. */
export interface Failure {
  /** The error's tag (`Unauthorized`, `RunNotFound`, `InvalidRequest`, …), or `Network` when there was no answer. */
  readonly tag: string
  readonly message: string
}

export type Outcome<A> = { readonly ok: true; readonly value: A } | { readonly ok: false; readonly failure: Failure }

const listeners = new Set<() => void>()

/** Calls `listener` whenever the server says the session is gone (401), so the app can ask for a login. */
export const onUnauthorized = (listener: () => void): (() => void) => {
  listeners.add(listener)
  return () => listeners.delete(listener)
}

const describe = (error: unknown): Failure => {
  // No answer from the server (offline, refused, aborted): the page says so rather than naming a transport class.
  if (HttpClientError.isHttpClientError(error)) return { tag: "Network", message: error.message }
  // Every error the contract declares is tagged; its tag is what the page shows (and `Unauthorized` triggers login).
  if (typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string") {
    const message = "message" in error && typeof error.message === "string" ? error.message : error._tag
    return { tag: error._tag, message }
  }
  return { tag: "Network", message: String(error) }
}

const toOutcome = <A>(exit: Exit.Exit<A, unknown>): Outcome<A> => {
  if (Exit.isSuccess(exit)) return { ok: true, value: exit.value }
  const failure = describe(Cause.squash(exit.cause))
  if (failure.tag === "Unauthorized") for (const listener of listeners) listener()
  return { ok: false, failure }
}

/** Runs one request with the typed client. */
export const request = async <A, E>(call: (api: Client.AikiClient) => Effect.Effect<A, E>): Promise<Outcome<A>> =>
  toOutcome(await runtime.runPromiseExit(Effect.flatMap(Effect.promise(() => client), call)))

/**
 * Follows a stream endpoint: `onEvent` for each event, reconnecting after a dropped connection (a server
 * restart, a proxy timeout) until the returned function is called or `until` says the stream is done.
 */
export const follow = <A, E1, E2>(
  open: (api: Client.AikiClient) => Effect.Effect<Stream.Stream<A, E1>, E2>,
  onEvent: (event: A) => void,
  options: { readonly onFailure?: (failure: Failure) => void } = {}
): (() => void) => {
  const once = Effect.flatMap(Effect.promise(() => client), open).pipe(
    Effect.flatMap(Stream.runForEach((event: A) => Effect.sync(() => onEvent(event)))),
    Effect.tapError((error) => Effect.sync(() => options.onFailure?.(describe(error))))
  )
  const fiber = runtime.runFork(
    once.pipe(
      // Only a dropped connection is retried: an answer such as 401 or 404 will not change by asking again.
      Effect.retry({
        while: (error) => describe(error).tag === "Network",
        schedule: Schedule.spaced("2 seconds")
      }),
      Effect.exit,
      Effect.map((exit) => Exit.isFailure(exit) && toOutcome(exit))
    )
  )
  return () => {
    runtime.runFork(Fiber.interrupt(fiber))
  }
}
