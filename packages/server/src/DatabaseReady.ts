/**
 * Whether the database has been reached and migrated since this server started. A server started while Postgres
 * is down does not exit: it serves, answering 503 (its health included) until the database answers, migrates it
 * as soon as it does, and only then starts its background work.
 */
import { Context, type Duration, Effect, Latch, Layer, Schedule, type Scope } from "effect"

export class DatabaseReady extends Context.Service<DatabaseReady, {
  readonly isReady: Effect.Effect<boolean>
  /** Completes once the database is migrated (at once from then on). */
  readonly await: Effect.Effect<void>
}>()("@aiki/server/DatabaseReady") {
  /** Runs `migrate` until it succeeds (Postgres may not be up yet), retrying with backoff and saying so. */
  static readonly layer = <E, R>(migrate: Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, E, R>) =>
    Layer.effect(
      DatabaseReady,
      Effect.gen(function*() {
        const latch = yield* Latch.make(false)
        yield* migrate.pipe(
          Effect.tapError((error) =>
            Effect.logWarning("Cannot reach or migrate the database yet; retrying", error instanceof Error ? error.message : String(error))
          ),
          Effect.retry(Schedule.min([Schedule.exponential("200 millis"), Schedule.spaced("5 seconds")])),
          Effect.tap((applied) =>
            applied.length === 0
              ? Effect.logDebug("Database is up to date")
              : Effect.logInfo(`Applied migrations ${applied.map(([id, name]) => `${id}_${name}`).join(", ")}`)
          ),
          Effect.andThen(latch.open),
          Effect.forkScoped
        )
        return DatabaseReady.of({ isReady: Effect.sync(() => latch.isOpen()), await: latch.await })
      })
    )

  /** Ready from the start (tests that provide their own database). */
  static readonly layerReady = Layer.succeed(DatabaseReady, DatabaseReady.of({ isReady: Effect.succeed(true), await: Effect.void }))
}

/**
 * The server's background work, in one shape: it starts once the database is ready and runs for the life of the
 * scope, and nothing it meets ends it — a failure (a defect included: the database gone) is logged with its cause
 * and the work starts again `every` later. `work` is one pass, repeated `every` after the last one ended, or a loop
 * of its own, restarted after a failure. Its logs carry `service`.
 */
export const background = <E, R>(
  service: string,
  work: Effect.Effect<unknown, E, R>,
  options: {
    readonly every: Duration.Input
    /** Logged with the cause of a failure. */
    readonly failure: string
    /** @default "error" */
    readonly level?: "error" | "warning"
    /** Wait `every` before the first pass too (work that must not run as the server starts). @default false */
    readonly delayFirst?: boolean
  }
): Effect.Effect<void, never, DatabaseReady | Scope.Scope | R> =>
  Effect.gen(function*() {
    const ready = yield* DatabaseReady
    const log = options.level === "warning" ? Effect.logWarning : Effect.logError
    const passes = work.pipe(
      Effect.catchCause((cause) => log(options.failure, cause)),
      Effect.repeat(Schedule.spaced(options.every))
    )
    yield* ready.await.pipe(
      Effect.andThen(options.delayFirst === true ? Effect.delay(passes, options.every) : passes),
      Effect.annotateLogs({ service }),
      Effect.forkScoped
    )
  })
