/**
 * Whether lapsed leases may be taken over now. Not until `LEASE_GRACE_MS` after this server started or regained
 * its database: while the server or Postgres was unreachable, workers could not renew their leases, which lapsed by
 * the database's clock although the workers were alive and busy. Requeueing those runs at once would run their
 * tasks twice; waiting a grace period gives every live worker time to renew (its writes and heartbeats are
 * retried). A worker that really died is taken over once the grace period ends.
 */
import { Clock, Context, Effect, Layer, Ref, Schedule } from "effect"
import { SqlClient } from "effect/sql"
import { ServerConfig } from "./ServerConfig.ts"

export class LeaseGrace extends Context.Service<LeaseGrace, {
  /** True once the database has been reachable for the grace period without interruption. */
  readonly leasesMayLapse: Effect.Effect<boolean>
}>()("@aiki/server/LeaseGrace") {
  /** Probes the database every second for as long as the layer is alive. */
  static readonly layer = Layer.effect(
    LeaseGrace,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const config = yield* ServerConfig
      // Null while the database does not answer; else since when it has answered without interruption.
      const reachableSince = yield* Ref.make<number | null>(yield* Clock.currentTimeMillis)
      const probe = sql`SELECT 1`.pipe(
        Effect.timeout("2 seconds"),
        Effect.matchEffect({
          onFailure: () => Ref.set(reachableSince, null),
          onSuccess: () =>
            Effect.flatMap(Clock.currentTimeMillis, (now) => Ref.update(reachableSince, (since) => since ?? now))
        })
      )
      yield* probe.pipe(Effect.repeat(Schedule.spaced("1 second")), Effect.forkScoped)
      return LeaseGrace.of({
        leasesMayLapse: Effect.gen(function*() {
          const since = yield* Ref.get(reachableSince)
          return since !== null && (yield* Clock.currentTimeMillis) - since >= config.leaseGraceMs
        })
      })
    })
  )

  /** Leases lapse as soon as they expire (tests of everything else). */
  static readonly layerNone = Layer.succeed(LeaseGrace, LeaseGrace.of({ leasesMayLapse: Effect.succeed(true) }))
}
