/**
 * Lease fencing. Every worker write first locks its run's row and checks that the epoch it carries is the run's
 * current one and that the run is still running. A zombie (a worker whose lease lapsed and was granted to another)
 * is rejected here, inside the same transaction as the write, so it can never overwrite a newer owner's progress.
 */
import { LeaseLost, RunNotFound } from "@aiki/contract/Errors"
import type { LeaseEpoch, RunId, TaskAddress } from "@aiki/contract/Ids"
import type { Task } from "@aiki/contract/Models"
import type { RunState } from "@aiki/contract/RunState"
import { Effect } from "effect"
import type { SqlClient } from "effect/sql"
import { type TaskRow, toTask } from "./rows.ts"
import { attemptsJson } from "./sql.ts"

export interface LockedRun {
  readonly state: RunState
  readonly lease_epoch: number
  readonly lease_owner: string | null
  readonly workflow_name: string
  readonly workflow_version: string
}

/** The answer to a write whose lease no longer holds the run (the run is now `state` under `currentEpoch`). */
export const leaseLost = (runId: RunId, leaseEpoch: LeaseEpoch, current: { readonly state: RunState; readonly epoch: number }) =>
  new LeaseLost({
    runId,
    leaseEpoch,
    currentEpoch: current.epoch,
    state: current.state,
    message: current.epoch !== leaseEpoch
      ? `Lease ${leaseEpoch} of run ${runId} was superseded by lease ${current.epoch}`
      : `Run ${runId} is ${current.state}; lease ${leaseEpoch} no longer holds it`
  })

/** Fails unless `leaseEpoch` still holds the run (`row` as just locked). */
const check = (runId: RunId, leaseEpoch: LeaseEpoch, row: LockedRun | undefined) => {
  if (row === undefined) return Effect.fail(RunNotFound.of(runId))
  if (row.lease_epoch !== leaseEpoch || row.state !== "running") {
    return Effect.fail(leaseLost(runId, leaseEpoch, { state: row.state, epoch: row.lease_epoch }))
  }
  return Effect.succeed(row)
}

/** Locks the run for the rest of the transaction; fails unless `leaseEpoch` still holds it. */
export const holdLease = Effect.fnUntraced(function*(sql: SqlClient.SqlClient, runId: RunId, leaseEpoch: LeaseEpoch) {
  const [row] = yield* sql<LockedRun>`
    SELECT state, lease_epoch, lease_owner, workflow_name, workflow_version
    FROM workflow_runs WHERE id = ${runId} FOR UPDATE`
  return yield* check(runId, leaseEpoch, row)
})

interface LockedTaskRow extends Omit<TaskRow, "address" | "state"> {
  readonly run_state: RunState
  readonly lease_epoch: number
  readonly lease_owner: string | null
  readonly workflow_name: string
  readonly workflow_version: string
  /** Null when the run has no task at the address yet. */
  readonly address: string | null
  readonly task_state: TaskRow["state"]
}

/**
 * `holdLease`, and the run's task at `address` with its attempts, in one round trip (journal writes are the
 * hottest path: a statement fewer per write matters).
 */
export const holdLeaseForTask = Effect.fnUntraced(
  function*(sql: SqlClient.SqlClient, runId: RunId, leaseEpoch: LeaseEpoch, address: TaskAddress) {
    const [row] = yield* sql<LockedTaskRow>`
      SELECT r.state AS run_state, r.lease_epoch, r.lease_owner, r.workflow_name, r.workflow_version,
        t.address, t.sequence, t.name, t.state AS task_state, t.payload, t.result, t.error, t.created_at, t.updated_at,
        ${attemptsJson(sql, sql`r.id`, address)} AS attempts
      FROM workflow_runs r LEFT JOIN tasks t ON t.run_id = r.id AND t.address = ${address}
      WHERE r.id = ${runId}
      FOR UPDATE OF r`
    const run = yield* check(runId, leaseEpoch, row === undefined ? undefined : { ...row, state: row.run_state })
    const task: Task | undefined = row === undefined || row.address === null
      ? undefined
      : toTask({ ...row, address: row.address, state: row.task_state })
    return { run, task }
  }
)
