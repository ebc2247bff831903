/**
 * The transactional outbox: a run's stream message is written in the same transaction as the change that makes
 * it runnable, so a crash between the commit and the `XADD` loses nothing. `OutboxPublisher` drains it.
 */
import { Context, Effect, Layer, Queue } from "effect"
import { SqlClient } from "effect/sql"
import { RunStreams } from "./RunStreams.ts"

export interface RunnableRun {
  readonly id: string
  readonly workflowName: string
  readonly workflowVersion: string
}

export class Outbox extends Context.Service<Outbox, {
  /** The stream a run of this version is published to, when streams are enabled (for single-statement writes). */
  readonly streamOf: (workflowName: string, workflowVersion: string) => string | null
  /** Queues stream messages for these runs; call inside the transaction that made them runnable. */
  readonly enqueue: (runs: ReadonlyArray<RunnableRun>) => Effect.Effect<void>
  /** Tells the publisher there is something to drain (after the transaction committed). */
  readonly notify: Effect.Effect<void>
  /** Completes when a notification is waiting (the publisher's wake-up). */
  readonly notified: Effect.Effect<void>
}>()("@aiki/server/Outbox") {
  static readonly layer = Layer.effect(
    Outbox,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const streams = yield* RunStreams
      // One pending wake-up is enough: the publisher drains everything it finds.
      const signal = yield* Queue.dropping<void>(1)

      const enqueue = (runs: ReadonlyArray<RunnableRun>) =>
        !streams.enabled || runs.length === 0 ? Effect.void : sql`
          INSERT INTO outbox (run_id, stream)
          SELECT id, stream FROM jsonb_to_recordset(${
          JSON.stringify(runs.map((r) => ({ id: r.id, stream: streams.streamOf(r.workflowName, r.workflowVersion) })))
        }::jsonb) AS t(id uuid, stream text)
        `.pipe(Effect.asVoid, Effect.orDie)

      return Outbox.of({
        streamOf: (name, version) => (streams.enabled ? streams.streamOf(name, version) : null),
        enqueue,
        notify: streams.enabled ? Queue.offer(signal, undefined).pipe(Effect.asVoid) : Effect.void,
        notified: Queue.take(signal).pipe(Effect.asVoid, Effect.orDie)
      })
    })
  )
}
