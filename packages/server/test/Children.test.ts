/**
 * Child workflows in the worker protocol: `StartChild` starts a child once however often it is asked (the key is
 * derived from the parent and the call's place), `AwaitChild` answers the child's end, a parent parks
 * `awaiting_child` and the child's end wakes it (through the post-commit hook, or the reaper when that follow-up was
 * lost); a park on a child that has ended is refused; cancelling a parent cancels its `cancel` children, not its
 * `abandon` ones. On Postgres and on PGlite.
 */
import type { AikiClient } from "@aiki/contract/Client"
import type { LeaseEpoch, RunId, TaskAddress, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { Write, WriteResult } from "@aiki/contract/Models"
import { eventually } from "@aiki/testing/eventually"
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import * as Reaper from "../src/Reaper.ts"
import * as TestServer from "./support/TestServer.ts"

const parentName = "parent" as WorkflowName
const childName = "child" as WorkflowName
const version = "1.0.0" as WorkflowVersion
const worker = "children-worker" as WorkerId
const replayVersion = 2

const startParent = (api: AikiClient) =>
  api.workflows.start({ params: { name: parentName, version }, payload: { payload: {} } }).pipe(Effect.map((r) => r.id))

const lease = (api: AikiClient, id: RunId) =>
  api.execution.claim({ params: { id: worker }, payload: { runIds: [id], replayVersion } }).pipe(
    Effect.map((claims) => {
      assert.isDefined(claims.leases[0], `run ${id} was not granted: ${claims.refused[0]?.message}`)
      return { runId: id, leaseEpoch: claims.leases[0]!.leaseEpoch as LeaseEpoch }
    })
  )

const writeOne = (api: AikiClient, write: Write) =>
  api.execution.write({ params: { id: worker }, payload: { writes: [write] } }).pipe(Effect.map((r) => r.results[0]!))

const startChild = (
  held: { readonly runId: RunId; readonly leaseEpoch: LeaseEpoch },
  sequence: number,
  options: { readonly payload?: number; readonly idempotencyKey?: string; readonly policy?: "cancel" | "abandon" } = {}
): Write => ({
  _tag: "StartChild",
  ...held,
  address: `aiki.child:${sequence}:0` as TaskAddress,
  sequence,
  entryPayload: { workflow: childName, version, payload: options.payload ?? sequence },
  workflowName: childName,
  workflowVersion: version,
  payload: options.payload ?? sequence,
  ...(options.idempotencyKey !== undefined ? { idempotencyKey: options.idempotencyKey as never } : {}),
  parentClosePolicy: options.policy ?? "cancel"
})

const awaitChild = (held: { readonly runId: RunId; readonly leaseEpoch: LeaseEpoch }, sequence: number, childRunId: RunId): Write => ({
  _tag: "AwaitChild",
  ...held,
  address: `aiki.child.result:${sequence}:0` as TaskAddress,
  sequence,
  entryPayload: { runId: childRunId },
  childRunId
})

const childId = (result: WriteResult) => {
  assert.strictEqual(result._tag, "ChildStarted")
  return (result as { readonly childRunId: RunId }).childRunId
}

const stateOf = (api: AikiClient, id: RunId) => api.runs.status({ params: { id } }).pipe(Effect.map((run) => run.state))

for (const database of ["postgres", "embedded"] as const) {
layer(TestServer.layer({ database }), { excludeTestServices: true })(`child workflows (${database})`, (it) => {
  it.effect("starts a child once however often asked; the parent parks awaiting it and its end wakes the parent", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      yield* api.execution.register({ params: { id: worker }, payload: { workflows: [{ name: parentName, version }, { name: childName, version }] } })
      const parent = yield* startParent(api)
      const held = yield* lease(api, parent)
      const child = childId(yield* writeOne(api, startChild(held, 0, { payload: 7 })))
      // Asked again (a retried request, a replay before the entry's result was written): the same child.
      assert.strictEqual(childId(yield* writeOne(api, startChild(held, 0, { payload: 7 }))), child)
      const [listed, ...more] = yield* api.runs.children({ params: { id: parent } })
      assert.lengthOf(more, 0)
      assert.strictEqual(listed!.id, child)
      assert.strictEqual(listed!.parentRunId, parent)
      assert.strictEqual(listed!.parentClosePolicy, "cancel")
      assert.strictEqual(listed!.idempotencyKey, `aiki:child:${parent}:0`)
      assert.deepStrictEqual(listed!.payload, 7)
      // The child's execution continues the parent's trace.
      const parentTrace = (yield* api.runs.status({ params: { id: parent } })).traceParent
      assert.isDefined(parentTrace)
      assert.strictEqual(listed!.traceParent, parentTrace)

      assert.deepStrictEqual(yield* writeOne(api, awaitChild(held, 1, child)), { _tag: "ChildRunning" })
      const parked = yield* writeOne(api, { _tag: "ParkRun", ...held, state: "awaiting_child", events: [], children: [child] })
      assert.strictEqual(parked._tag, "Written")
      const waiting = yield* api.runs.status({ params: { id: parent } })
      assert.strictEqual(waiting.state, "awaiting_child")
      assert.deepStrictEqual(waiting.awaitingChildren, [child])

      const childLease = yield* lease(api, child)
      yield* writeOne(api, { _tag: "CompleteRun", ...childLease, result: { doubled: 14 } })
      yield* eventually(Effect.gen(function*() {
        assert.strictEqual(yield* stateOf(api, parent), "pending")
      }))
      const trail = yield* api.runs.transitions({ params: { id: parent } })
      assert.isTrue(trail.some((t) => t.fromState === "awaiting_child" && t.toState === "pending" && t.reason === "child_ended"))
      const again = yield* lease(api, parent)
      assert.deepStrictEqual(yield* writeOne(api, awaitChild(again, 1, child)), {
        _tag: "ChildEnded",
        state: "completed",
        result: { doubled: 14 }
      })
    }))

  it.effect("refuses to park on a child that has ended, answers its failure, and refuses a conflicting key", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      yield* api.execution.register({ params: { id: worker }, payload: { workflows: [{ name: parentName, version }, { name: childName, version }] } })
      const held = yield* lease(api, yield* startParent(api))
      const child = childId(yield* writeOne(api, startChild(held, 0)))
      const childLease = yield* lease(api, child)
      yield* writeOne(api, { _tag: "FailRun", ...childLease, error: { name: "Rejected", message: "no", data: { _tag: "Rejected" } } })
      const refused = yield* writeOne(api, { _tag: "ParkRun", ...held, state: "awaiting_child", events: [], children: [child] })
      assert.deepStrictEqual(refused, { _tag: "ChildrenEnded", runIds: [child] })
      assert.strictEqual(yield* stateOf(api, held.runId), "running")
      assert.deepStrictEqual(yield* writeOne(api, awaitChild(held, 1, child)), {
        _tag: "ChildEnded",
        state: "failed",
        error: { name: "Rejected", message: "no", data: { _tag: "Rejected" } }
      })
      // A key of the caller's that names a run with another payload: the child's start is refused, saying so.
      const key = `shared-${held.runId}`
      childId(yield* writeOne(api, startChild(held, 2, { idempotencyKey: key, payload: 1 })))
      const conflict = yield* writeOne(api, startChild(held, 3, { idempotencyKey: key, payload: 2 }))
      assert.strictEqual(conflict._tag, "IdempotencyConflict")
    }))

  it.effect("the reaper wakes a parent, or cancels a child, when the follow-up of a commit was lost (a process died)", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const sql = yield* SqlClient.SqlClient
      yield* api.execution.register({ params: { id: worker }, payload: { workflows: [{ name: parentName, version }, { name: childName, version }] } })
      const held = yield* lease(api, yield* startParent(api))
      const child = childId(yield* writeOne(api, startChild(held, 0)))
      yield* writeOne(api, { _tag: "ParkRun", ...held, state: "awaiting_child", events: [], children: [child] })
      // The child's end as a commit whose post-commit hook never ran.
      yield* sql`UPDATE workflow_runs SET state = 'completed', result = '1'::json, finished_at = now() WHERE id = ${child}`
      assert.strictEqual(yield* stateOf(api, held.runId), "awaiting_child")
      assert.strictEqual(yield* Reaper.wakeParents, 1)
      assert.strictEqual(yield* stateOf(api, held.runId), "pending")
      // A parent's cancellation whose follow-up was lost: the reaper cancels its `cancel` child.
      const orphan = childId(yield* writeOne(api, startChild(yield* lease(api, held.runId), 1)))
      yield* sql`UPDATE workflow_runs SET state = 'cancelled', finished_at = now() WHERE id = ${held.runId}`
      assert.strictEqual(yield* Reaper.cascadeCancels, 1)
      assert.strictEqual(yield* stateOf(api, orphan), "cancelled")
    }))

  it.effect("cancelling a parent cancels its unfinished `cancel` children, not its `abandon` ones", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      yield* api.execution.register({ params: { id: worker }, payload: { workflows: [{ name: parentName, version }, { name: childName, version }] } })
      const held = yield* lease(api, yield* startParent(api))
      const cancelled = childId(yield* writeOne(api, startChild(held, 0)))
      const abandoned = childId(yield* writeOne(api, startChild(held, 1, { idempotencyKey: `abandoned-${held.runId}`, policy: "abandon" })))
      yield* api.runs.cancel({ params: { id: held.runId } })
      yield* eventually(Effect.gen(function*() {
        assert.strictEqual(yield* stateOf(api, cancelled), "cancelled")
      }))
      const trail = yield* api.runs.transitions({ params: { id: cancelled } })
      assert.strictEqual(trail.find((t) => t.toState === "cancelled")?.reason, "parent_cancelled")
      assert.strictEqual(yield* stateOf(api, abandoned), "pending")
      // Nothing is left for the reaper to cancel.
      assert.strictEqual(yield* Reaper.cascadeCancels, 0)
    }))
})
}
