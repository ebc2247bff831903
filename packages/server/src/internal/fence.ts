/**
 * Lease fencing. Every worker write first locks its run's row and checks that the epoch it carries is the run's
 * current one and that the run is still running. A zombie (a worker whose lease lapsed and was granted to another)
 * is rejected here, inside the same transaction as the write, so it can never overwrite a newer owner's progress.
 */
import { LeaseLost, RunNotFound } from "@aiki/contract/Errors"
import type { LeaseEpoch, RunId } from "@aiki/contract/Ids"
import type { RunState } from "@aiki/contract/RunState"
import { Effect } from "effect"
import type { SqlClient } from "effect/sql"

export interface LockedRun {
  readonly state: RunState
  readonly lease_epoch: number
  readonly lease_owner: string | null
  readonly workflow_name: string
  readonly workflow_version: string
}

/** Locks the run for the rest of the transaction; fails unless `leaseEpoch` still holds it. */
export const holdLease = Effect.fnUntraced(function*(sql: SqlClient.SqlClient, runId: RunId, leaseEpoch: LeaseEpoch) {
  const [row] = yield* sql<LockedRun>`
    SELECT state, lease_epoch, lease_owner, workflow_name, workflow_version
    FROM workflow_runs WHERE id = ${runId} FOR UPDATE`
  if (row === undefined) return yield* RunNotFound.of(runId)
  if (row.lease_epoch !== leaseEpoch || row.state !== "running") {
    return yield* new LeaseLost({
      runId,
      leaseEpoch,
      currentEpoch: row.lease_epoch,
      state: row.state,
      message: row.lease_epoch !== leaseEpoch
        ? `Lease ${leaseEpoch} of run ${runId} was superseded by lease ${row.lease_epoch}`
        : `Run ${runId} is ${row.state}; lease ${leaseEpoch} no longer holds it`
    })
  }
  return row
})
