/**
 * Run changes as every server replica sees them. Each transition is announced with `pg_notify` in the transaction
 * that makes it (so it is delivered on commit, never for a rolled-back change), and each server listens on one
 * connection and fans the announcements out in-process. Followers of a run (SSE) and workers long-polling for
 * runs wake up from it, whichever replica committed the change.
 */
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer, PubSub, Queue, Schema, type Scope } from "effect"
import { FailureReason, TaskTimeoutKind } from "@aiki/contract/Timeouts"
import { background } from "./DatabaseReady.ts"

/** The channel every transition is announced on. */
export const channel = "aiki_runs"

export const RunChange = Schema.Struct({
  runId: Schema.String,
  task: Schema.NullOr(Schema.String),
  state: Schema.String,
  /** A notice for the worker holding the run (see `Ledger.Notice`): an attempt timed out, or the run was ended. */
  owner: Schema.optionalKey(Schema.String),
  timedOut: Schema.optionalKey(Schema.Struct({ attempt: Schema.Int, kind: TaskTimeoutKind })),
  stopped: Schema.optionalKey(FailureReason)
})
export type RunChange = typeof RunChange.Type

const decode = Schema.decodeUnknownOption(Schema.fromJsonString(RunChange))

export class RunNotifications extends Context.Service<RunNotifications, {
  /** Changes from now on, until the scope closes. Subscribe before reading state, so no change slips between. */
  readonly subscribe: Effect.Effect<PubSub.Subscription<RunChange>, never, Scope.Scope>
}>()("@aiki/server/RunNotifications") {
  static readonly layer = Layer.effect(
    RunNotifications,
    Effect.gen(function*() {
      const pg = yield* PgClient.PgClient
      const pubsub = yield* Effect.acquireRelease(PubSub.sliding<RunChange>(16_384), PubSub.shutdown)
      const forward = Effect.scoped(Effect.gen(function*() {
        const notifications = yield* pg.listen(channel)
        while (true) {
          const notification = yield* Queue.take(notifications)
          const change = decode(notification.payload)
          if (change._tag === "Some") yield* PubSub.publish(pubsub, change.value)
        }
      }))
      // A lost listening connection is reopened; followers also re-read state, so a gap only delays them.
      yield* background("RunNotifications", forward, {
        every: "1 second",
        failure: "Lost the run notification listener; reconnecting",
        level: "warning"
      })
      return RunNotifications.of({ subscribe: PubSub.subscribe(pubsub) })
    })
  )
}
