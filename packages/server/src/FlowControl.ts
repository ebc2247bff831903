/**
 * Flow control's shared state in a server: the limits each workflow version declares (read from
 * `workflow_versions.flow_control`, kept for a few seconds so claims need no extra read), and the slots committed
 * changes gave back, handed from the engine's post-commit hook to `FlowOffers`, which offers the next waiting runs.
 *
 * Limits are per workflow version and apply wherever its runs are claimed; a version's workers declare them when
 * they register, and every replica sees a change within `policyTtl`.
 */
import type { FlowPolicy } from "@aiki/contract/FlowControl"
import { Clock, Context, Effect, Layer, Queue } from "effect"
import { SqlClient } from "effect/sql"
import { type Freed, versionKey } from "./internal/flowControl.ts"

export type { Freed }

/** How long a version's declared limits are kept before they are read again. */
const policyTtlMs = 5_000

export interface VersionRef {
  readonly name: string
  readonly version: string
}

export class FlowControl extends Context.Service<FlowControl, {
  /** The declared limits of `versions`, by `name@version` (absent: the version declares none). */
  readonly policies: (versions: ReadonlyArray<VersionRef>) => Effect.Effect<ReadonlyMap<string, FlowPolicy>>
  /** Forgets what is kept of a version's limits (its workers registered it again). */
  readonly forget: (version: VersionRef) => Effect.Effect<void>
  /** After a commit: slots and turns given back. */
  readonly freed: (items: ReadonlyArray<Freed>) => Effect.Effect<void>
  /** `FlowOffers`' side: what was given back since it last looked (waits until there is something). */
  readonly taken: Effect.Effect<ReadonlyArray<Freed>>
}>()("@aiki/server/FlowControl") {
  static readonly layer = Layer.effect(
    FlowControl,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const kept = new Map<string, { readonly policy: FlowPolicy | undefined; readonly atMs: number }>()
      const freedQueue = yield* Effect.acquireRelease(Queue.unbounded<Freed>(), Queue.shutdown)

      const policies = Effect.fnUntraced(function*(versions: ReadonlyArray<VersionRef>) {
        const now = yield* Clock.currentTimeMillis
        const missing = new Map<string, VersionRef>()
        for (const v of versions) {
          const k = versionKey(v.name, v.version)
          const entry = kept.get(k)
          if (entry === undefined || now - entry.atMs > policyTtlMs) missing.set(k, v)
        }
        if (missing.size > 0) {
          const rows = yield* sql<{ readonly name: string; readonly version: string; readonly flow_control: FlowPolicy | null }>`
            SELECT v.workflow_name AS name, v.version, v.flow_control FROM workflow_versions v
            JOIN jsonb_to_recordset(${JSON.stringify([...missing.values()])}::jsonb) AS k(name text, version text)
              ON v.workflow_name = k.name AND v.version = k.version`.pipe(Effect.orDie)
          for (const k of missing.keys()) kept.set(k, { policy: undefined, atMs: now })
          for (const row of rows) kept.set(versionKey(row.name, row.version), { policy: row.flow_control ?? undefined, atMs: now })
        }
        const found = new Map<string, FlowPolicy>()
        for (const v of versions) {
          const policy = kept.get(versionKey(v.name, v.version))?.policy
          if (policy !== undefined) found.set(versionKey(v.name, v.version), policy)
        }
        return found
      })

      return FlowControl.of({
        policies,
        forget: (v) => Effect.sync(() => kept.delete(versionKey(v.name, v.version))),
        freed: (items) => items.length === 0 ? Effect.void : Queue.offerAll(freedQueue, items).pipe(Effect.asVoid),
        taken: Queue.takeBetween(freedQueue, 1, 1_000).pipe(Effect.orDie)
      })
    })
  )
}
