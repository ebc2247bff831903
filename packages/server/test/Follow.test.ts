/**
 * Following runs and waiting for them without polling: the SSE stream of a run's changes (also when another
 * replica commits them), and the long-poll that workers without Redis use to receive runs as soon as they exist.
 */
import type { RunUpdate, Write } from "@aiki/contract/Models"
import type { TaskAddress, TaskName, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Fiber, Layer, Stream } from "effect"
import * as TestServer from "./support/TestServer.ts"

const name = "follow" as WorkflowName
const version = "1.0.0" as WorkflowVersion
const worker = "follower" as WorkerId

/** A second server replica over the first one's database. */
class Replica extends Context.Service<Replica, TestServer.TestServer["Service"]>()("test/Replica") {}

const TwoReplicas = Layer.unwrap(Effect.gen(function*() {
  const server = yield* TestServer.TestServer
  return Layer.effect(Replica, Effect.gen(function*() { return yield* TestServer.TestServer })).pipe(
    Layer.provide(TestServer.layer({ databaseUrl: server.databaseUrl, redisPrefix: server.redisPrefix }))
  )
})).pipe(Layer.provideMerge(TestServer.layer()))

const describe = (update: RunUpdate) =>
  update._tag === "Run" ? `run:${update.run.state}` : `task:${update.task.name}:${update.task.state}`

layer(TwoReplicas, { excludeTestServices: true })("follow", (it) => {
  it.effect("streams a run's changes, committed on another replica, until it completes", () =>
    Effect.gen(function*() {
      const primary = yield* (yield* TestServer.TestServer).client()
      const replica = yield* (yield* Replica).client()
      const { id } = yield* primary.workflows.start({ params: { name, version }, payload: { payload: 1 } })
      const events = yield* replica.runs.events({ params: { id }, query: {} })
      const collected = yield* events.pipe(Stream.map(describe), Stream.runCollect, Effect.forkChild)
      // What waiting for the result follows: the run's own changes, no task.
      const runOnly = yield* (yield* replica.runs.events({ params: { id }, query: { tasks: false } })).pipe(
        Stream.map(describe),
        Stream.runCollect,
        Effect.forkChild
      )
      yield* Effect.sleep("200 millis")
      const claims = yield* primary.execution.claim({ params: { id: worker }, payload: { runIds: [id], replayVersion: 2 } })
      const leaseEpoch = claims.leases[0]!.leaseEpoch
      const address = "step:0" as TaskAddress
      const write = (writes: ReadonlyArray<Write>) => primary.execution.write({ params: { id: worker }, payload: { writes } })
      yield* write([{ _tag: "StartTask", runId: id, leaseEpoch, address, name: "step" as TaskName, payload: null, sequence: 0, attempt: 1 }])
      yield* write([{
        _tag: "FinishTask",
        runId: id,
        leaseEpoch,
        address,
        attempt: 1,
        elapsedMs: 1,
        outcome: { _tag: "Completed", result: 2 },
        outcomeOrder: 0
      }])
      yield* write([{ _tag: "CompleteRun", runId: id, leaseEpoch, result: 3 }])
      const seen = yield* Fiber.join(collected).pipe(Effect.timeout("10 seconds"))
      // Updates are snapshots read when a change is announced: two changes in quick succession may both show the
      // later state. So: every change appears in order, possibly as a later snapshot, and nothing goes backwards.
      const distinct = [...seen].filter((update, i, all) => i === 0 || all[i - 1] !== update)
      const order = ["run:pending", "run:running", "task:step:running", "task:step:completed", "run:completed"]
      assert.strictEqual(distinct[0], "run:pending")
      assert.strictEqual(distinct[distinct.length - 1], "run:completed")
      assert.include(distinct, "task:step:completed")
      assert.deepStrictEqual(distinct, [...distinct].sort((a, b) => order.indexOf(a) - order.indexOf(b)))
      const runChanges = [...yield* Fiber.join(runOnly).pipe(Effect.timeout("10 seconds"))]
      assert.deepStrictEqual(runChanges.filter((update, i, all) => i === 0 || all[i - 1] !== update), [
        "run:pending",
        "run:running",
        "run:completed"
      ])
    }))

  it.effect("ends at once for a finished run, and 404s for an unknown one", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const { id } = yield* api.workflows.start({ params: { name, version }, payload: { payload: 2 } })
      yield* api.runs.cancel({ params: { id } })
      const seen = yield* (yield* api.runs.events({ params: { id }, query: {} })).pipe(Stream.map(describe), Stream.runCollect)
      assert.deepStrictEqual([...seen], ["run:cancelled"])
      const missing = yield* api.runs.events({ params: { id: "01900000-0000-7000-8000-000000000000" as never }, query: {} })
        .pipe(Effect.flip)
      assert.strictEqual(missing._tag, "RunNotFound")
    }))

  it.effect("hands a run to a long-polling worker as soon as it starts, to exactly one of two", () =>
    Effect.gen(function*() {
      const primary = yield* (yield* TestServer.TestServer).client()
      const replica = yield* (yield* Replica).client()
      const polled = "polled" as WorkflowName
      const request = { workflows: [{ name: polled, version }], max: 5, waitMs: 10_000, replayVersion: 2 }
      const pollers = yield* Effect.all([
        primary.execution.poll({ params: { id: "poller-1" as WorkerId }, payload: request }),
        replica.execution.poll({ params: { id: "poller-2" as WorkerId }, payload: request })
      ], { concurrency: 2 }).pipe(Effect.forkChild)
      yield* Effect.sleep("300 millis")
      const { id } = yield* primary.workflows.start({ params: { name: polled, version }, payload: { payload: "go" } })
      yield* primary.workflows.start({ params: { name: "someone-else" as WorkflowName, version }, payload: { payload: 0 } })
      // One poller gets the run at once; the other keeps waiting until a second run comes.
      yield* Effect.sleep("500 millis")
      const { id: second } = yield* primary.workflows.start({ params: { name: polled, version }, payload: { payload: "again" } })
      const [a, b] = yield* Fiber.join(pollers).pipe(Effect.timeout("10 seconds"))
      const granted = [...a, ...b].map((lease) => lease.run.id).sort()
      assert.deepStrictEqual(granted, [id, second].sort())
      assert.strictEqual(a.length, 1)
      assert.strictEqual(b.length, 1)
      const empty = yield* primary.execution.poll({
        params: { id: "poller-3" as WorkerId },
        payload: { ...request, waitMs: 200 }
      })
      assert.deepStrictEqual(empty, [])
    }))

  it.effect("pushes the cancellation of a run to the worker holding it, and only to it", () =>
    Effect.gen(function*() {
      const primary = yield* (yield* TestServer.TestServer).client()
      const replica = yield* (yield* Replica).client()
      const { id } = yield* primary.workflows.start({ params: { name, version }, payload: { payload: "cancel me" } })
      const { id: other } = yield* primary.workflows.start({ params: { name, version }, payload: { payload: "not mine" } })
      yield* primary.execution.claim({ params: { id: worker }, payload: { runIds: [id], replayVersion: 2 } })
      yield* primary.execution.claim({ params: { id: "someone-else" as WorkerId }, payload: { runIds: [other], replayVersion: 2 } })
      const signals = yield* replica.execution.signals({ params: { id: worker } })
      const first = yield* signals.pipe(
        Stream.filter((signal) => signal._tag === "Cancelled"),
        Stream.take(1),
        Stream.runCollect,
        Effect.forkChild
      )
      yield* Effect.sleep("300 millis")
      yield* primary.runs.cancel({ params: { id: other } })
      yield* primary.runs.cancel({ params: { id } })
      const received = yield* Fiber.join(first).pipe(Effect.timeout("10 seconds"))
      assert.deepStrictEqual([...received], [{ _tag: "Cancelled", runId: id }])
    }))
})
