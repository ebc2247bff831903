/**
 * Leases: how runs are handed to exactly one worker at a time. A worker claims the runs it received (in one
 * request), or long-polls for pending ones when there is no Redis; it renews its liveness and extends the leases it
 * holds with one heartbeat; cancellations of its runs, attempts the server timed out and runs it ended are pushed
 * to it. Every grant and extension is a transition decided by `RunTransitions`.
 */
import type { RunId, TaskAddress, WorkerId } from "@aiki/contract/Ids"
import type { Claims, HeartbeatReply, HeldRun, Lease, PollRuns, WorkerSignal } from "@aiki/contract/Models"
import { WaitingReason } from "@aiki/contract/FlowControl"
import type { WorkerNotFound } from "@aiki/contract/Errors"
import { Clock, Context, Effect, Layer, PubSub, Result, Schema, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { RunNotifications } from "./RunNotifications.ts"
import { RunTransitions } from "./RunTransitions.ts"
import { ServerConfig } from "./ServerConfig.ts"

const isWaitingReason = Schema.is(WaitingReason)

/** Liveness when a worker asks for none. */
export const defaultLivenessMs = 10_000

export class Leases extends Context.Service<Leases, {
  readonly claim: (
    workerId: WorkerId,
    runIds: ReadonlyArray<RunId>,
    options: { readonly leaseMs?: number | undefined; readonly replayVersion: number }
  ) => Effect.Effect<Claims>
  /**
   * Claims up to `max` pending runs of the given versions, highest priority then oldest first, waiting up to
   * `waitMs` for the first. Runs held back by flow control are not taken until they are offered again.
   */
  readonly poll: (workerId: WorkerId, input: PollRuns) => Effect.Effect<ReadonlyArray<Lease>>
  readonly heartbeat: (
    workerId: WorkerId,
    runs: ReadonlyArray<HeldRun>,
    options: { readonly leaseMs?: number | undefined; readonly livenessMs?: number | undefined }
  ) => Effect.Effect<HeartbeatReply, WorkerNotFound>
  /**
   * Cancellations of the worker's runs, attempts of them the server timed out and runs it ended (timeouts, poison), as
   * they commit on any replica, and a ping now and then.
   */
  readonly signals: (workerId: WorkerId) => Stream.Stream<WorkerSignal>
}>()("@aiki/server/Leases") {
  static readonly layer = Layer.effect(
    Leases,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const config = yield* ServerConfig
      const transitions = yield* RunTransitions
      const notifications = yield* RunNotifications

      const claim = (
        workerId: WorkerId,
        runIds: ReadonlyArray<RunId>,
        options: { readonly leaseMs?: number | undefined; readonly replayVersion: number }
      ) => transitions.claim(workerId, runIds, { leaseMs: options.leaseMs ?? config.defaultLeaseMs, replayVersion: options.replayVersion })

      /**
       * Claims the first pending runs of `input.workflows` (highest priority, then oldest); two pollers may race for
       * one, the claim decides. Runs that flow control holds back are marked waiting by their refused claim, so the
       * next look passes over them.
       */
      const claimPending = (workerId: WorkerId, input: PollRuns) =>
        Effect.gen(function*() {
          while (true) {
            const candidates = yield* sql<{ readonly id: RunId }>`
              SELECT r.id FROM workflow_runs r
              JOIN jsonb_to_recordset(${JSON.stringify(input.workflows)}::jsonb) AS w(name text, version text)
                ON r.workflow_name = w.name AND r.workflow_version = w.version
              WHERE r.state = 'pending' AND r.waiting_reason IS NULL
              ORDER BY r.priority DESC, r.id LIMIT ${input.max}`.pipe(Effect.orDie)
            if (candidates.length === 0) return []
            const claims = yield* claim(workerId, candidates.map((c) => c.id), input)
            const heldBack = claims.refused.some((r) => isWaitingReason(r.reason))
            if (claims.leases.length > 0 || !heldBack) return claims.leases
          }
        })

      const poll = Effect.fn("Leases.poll")(function*(workerId: WorkerId, input: PollRuns) {
        if (input.workflows.length === 0) return []
        const deadline = (yield* Clock.currentTimeMillis) + (input.waitMs ?? 0)
        return yield* Effect.scoped(Effect.gen(function*() {
          // Listen before looking, so a run that becomes pending in between wakes us.
          const subscription = yield* notifications.subscribe
          while (true) {
            const leases = yield* claimPending(workerId, input)
            if (leases.length > 0) return leases
            const remaining = deadline - (yield* Clock.currentTimeMillis)
            if (remaining <= 0) return []
            const woken = yield* Effect.gen(function*() {
              while (true) {
                const change = yield* PubSub.take(subscription)
                if (change.task === null && change.state === "pending") return true
              }
            }).pipe(Effect.timeoutOption(`${remaining} millis`))
            if (woken._tag === "None") return []
          }
        }))
      })

      const heartbeat = (
        workerId: WorkerId,
        runs: ReadonlyArray<HeldRun>,
        options: { readonly leaseMs?: number | undefined; readonly livenessMs?: number | undefined }
      ) =>
        transitions.heartbeat(workerId, runs, {
          leaseMs: options.leaseMs ?? config.defaultLeaseMs,
          livenessMs: options.livenessMs ?? defaultLivenessMs
        })

      const signals = (workerId: WorkerId) =>
        Stream.unwrap(Effect.gen(function*() {
          const subscription = yield* notifications.subscribe
          // One reader of the subscription (two would split its messages between them). Timeout notices name the
          // worker holding the run, so they need no query to be routed; a cancellation asks who holds the run.
          const pushed = Stream.fromSubscription(subscription).pipe(
            Stream.filterMapEffect((change): Effect.Effect<Result.Result<WorkerSignal, void>> => {
              if (change.owner !== undefined) {
                if (change.owner !== workerId) return Effect.succeed(Result.failVoid)
                if (change.timedOut !== undefined && change.task !== null) {
                  return Effect.succeed(Result.succeed({
                    _tag: "TaskTimedOut",
                    runId: change.runId as RunId,
                    address: change.task as TaskAddress,
                    attempt: change.timedOut.attempt,
                    kind: change.timedOut.kind
                  }))
                }
                return Effect.succeed(
                  change.stopped !== undefined
                    ? Result.succeed({ _tag: "RunStopped", runId: change.runId as RunId, reason: change.stopped })
                    : Result.failVoid
                )
              }
              if (change.task !== null || change.state !== "cancelled") return Effect.succeed(Result.failVoid)
              return sql<{ readonly lease_owner: string | null }>`SELECT lease_owner FROM workflow_runs WHERE id = ${change.runId}`
                .pipe(
                  Effect.map((rows) =>
                    rows[0]?.lease_owner === workerId
                      ? Result.succeed<WorkerSignal>({ _tag: "Cancelled", runId: change.runId as RunId })
                      : Result.failVoid
                  ),
                  Effect.orDie
                )
            })
          )
          const pings = Stream.tick("15 seconds").pipe(Stream.drop(1), Stream.map((): WorkerSignal => ({ _tag: "Ping" })))
          return Stream.make({ _tag: "Connected" } as WorkerSignal).pipe(Stream.concat(Stream.merge(pushed, pings)))
        }))

      return Leases.of({ claim: Effect.fn("Leases.claim")(claim), poll, heartbeat: Effect.fn("Leases.heartbeat")(heartbeat), signals })
    })
  )
}
