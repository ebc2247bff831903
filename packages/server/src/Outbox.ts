/**
 * The transactional outbox: a run's stream message is written in the same transaction as the change that makes it
 * runnable (see `RunTransitions`), so a crash between the commit and the `XADD` loses nothing. After the commit the
 * new rows are handed straight to `OutboxPublisher` (`publishNow`), which sends them at once; rows that could not
 * be sent then (Redis down, this server crashed) are found by its periodic sweep.
 */
import { Context, Effect, Layer, Queue } from "effect"
import { SqlClient } from "effect/sql"
import type { OutboxRow } from "./internal/Ledger.ts"
import { RunStreams } from "./RunStreams.ts"

export type { OutboxRow }

export interface RunnableRun {
  readonly id: string
  readonly workflowName: string
  readonly workflowVersion: string
  readonly priority: number
}

export class Outbox extends Context.Service<Outbox, {
  /** The stream a run of this version and priority is published to, or null when streams are off (no outbox row then). */
  readonly streamOf: (workflowName: string, workflowVersion: string, priority: number) => string | null
  /** After a commit: rows to publish now. */
  readonly publishNow: (rows: ReadonlyArray<OutboxRow>) => Effect.Effect<void>
  /** The publisher's side: the rows handed over since it last looked (waits until there are some). */
  readonly fresh: Effect.Effect<ReadonlyArray<OutboxRow>>
  /** Queues stream messages for runs that are pending but lost theirs (Redis lost its data). */
  readonly republish: (runs: ReadonlyArray<RunnableRun>) => Effect.Effect<void>
}>()("@aiki/server/Outbox") {
  static readonly layer = Layer.effect(
    Outbox,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const streams = yield* RunStreams
      const handed = yield* Effect.acquireRelease(Queue.unbounded<OutboxRow>(), Queue.shutdown)
      const streamOf = (name: string, version: string, priority: number) =>
        streams.enabled ? streams.streamOf(name, version, priority) : null

      const republish = (runs: ReadonlyArray<RunnableRun>) =>
        !streams.enabled || runs.length === 0 ? Effect.void : sql<{ readonly id: string; readonly run_id: string; readonly stream: string }>`
          INSERT INTO outbox (run_id, stream)
          SELECT id, stream FROM jsonb_to_recordset(${
          JSON.stringify(runs.map((r) => ({ id: r.id, stream: streams.streamOf(r.workflowName, r.workflowVersion, r.priority) })))
        }::jsonb) AS t(id uuid, stream text)
          RETURNING id::text AS id, run_id, stream`.pipe(
          Effect.flatMap((rows) => Queue.offerAll(handed, rows.map((r) => ({ id: r.id, runId: r.run_id, stream: r.stream })))),
          Effect.asVoid,
          Effect.orDie
        )

      return Outbox.of({
        streamOf,
        publishNow: (rows) => streams.enabled ? Queue.offerAll(handed, rows).pipe(Effect.asVoid) : Effect.void,
        fresh: Queue.takeBetween(handed, 1, 1_000).pipe(Effect.orDie),
        republish
      })
    })
  )
}
