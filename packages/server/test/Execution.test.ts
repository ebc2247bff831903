/**
 * The worker protocol through the derived client: registration and health, claiming (leases and their journal),
 * recording tasks, heartbeats, finishing and releasing runs, cancellation seen by the owner, and lease fencing:
 * once a lease lapsed and was granted again, the old epoch can change nothing.
 */
import type { AikiClient } from "@aiki/contract/Client"
import type { LeaseEpoch, RunId, TaskAddress, TaskName, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import * as TestServer from "./support/TestServer.ts"

const name = "fencing" as WorkflowName
const version = "1.0.0" as WorkflowVersion
const workerA = "worker-a" as WorkerId
const workerB = "worker-b" as WorkerId
const address = (a: string) => a as TaskAddress
const taskName = (n: string) => n as TaskName
const epoch = (n: number) => n as LeaseEpoch

const startRun = (api: AikiClient, payload: unknown = {}) =>
  api.workflows.start({ params: { name, version }, payload: { payload: payload as never } }).pipe(Effect.map((r) => r.id))

/** Makes the run's lease lapse now, as if its worker had stopped heartbeating long ago. */
const expireLease = (id: RunId) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`UPDATE workflow_runs SET lease_expires_at = now() - interval '1 second' WHERE id = ${id}`
  })

// The same behaviour on Postgres and on PGlite (the embedded mode runs the same migrations and SQL).
for (const database of ["postgres", "embedded"] as const) {
layer(TestServer.layer({ database }), { excludeTestServices: true })(`execution (${database})`, (it) => {
  it.effect("registers a worker with its workflow versions and reports its health", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const registered = yield* api.execution.register({
        params: { id: workerA },
        payload: {
          workflows: [{ name, version }, { name: "other" as WorkflowName, version, payloadSchema: { type: "object" } }],
          maxConcurrentRuns: 5
        }
      })
      assert.strictEqual(registered.worker.status, "healthy")
      assert.deepStrictEqual(registered.worker.workflows.map((w) => w.name), ["fencing", "other"])
      const server = yield* TestServer.TestServer
      assert.deepStrictEqual(registered.streams?.map((s) => s.stream), [
        `{${server.redisPrefix}}:workflow:fencing:1.0.0`,
        `{${server.redisPrefix}}:workflow:other:1.0.0`
      ])
      const id = yield* startRun(api)
      yield* api.execution.claim({ params: { id }, payload: { workerId: workerA } })
      const health = yield* api.workers.health({ params: { id: workerA } })
      assert.strictEqual(health.runsInFlight, 1)
      assert.isAtLeast(health.heartbeatAgeMs, 0)
      const missing = yield* api.workers.health({ params: { id: "nobody" as WorkerId } }).pipe(Effect.flip)
      assert.strictEqual(missing._tag, "WorkerNotFound")
      const badId = yield* api.execution.heartbeat({ params: { id: "ghost" as WorkerId }, payload: { runs: [] } })
        .pipe(Effect.flip)
      assert.strictEqual(badId._tag, "WorkerNotFound")
    }))

  it.effect("grants a lease once, records tasks in the journal and completes the run", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const id = yield* startRun(api, { order: 1 })
      const lease = yield* api.execution.claim({ params: { id }, payload: { workerId: workerA, leaseMs: 30_000 } })
      assert.strictEqual(lease.leaseEpoch, 1)
      assert.strictEqual(lease.run.state, "running")
      assert.strictEqual(lease.run.leaseOwner, workerA)
      assert.deepStrictEqual(lease.journal, [])
      const again = yield* api.execution.claim({ params: { id }, payload: { workerId: workerB } }).pipe(Effect.flip)
      assert.strictEqual(again._tag, "RunNotClaimable")

      const leaseEpoch = lease.leaseEpoch
      const started = yield* api.execution.startTask({
        params: { id },
        payload: { leaseEpoch, address: address("validate:abc:0"), name: taskName("validate"), payload: { order: 1 }, sequence: 0 }
      })
      assert.strictEqual(started.state, "running")
      assert.strictEqual(started.attempts.length, 1)
      // Repeating the request (a retried HTTP call) does not count a new attempt.
      const repeated = yield* api.execution.startTask({
        params: { id },
        payload: { leaseEpoch, address: address("validate:abc:0"), name: taskName("validate"), payload: { order: 1 }, sequence: 0 }
      })
      assert.strictEqual(repeated.attempts.length, 1)
      const done = yield* api.execution.completeTask({
        params: { id },
        payload: { leaseEpoch, address: address("validate:abc:0"), attempt: 1, result: { valid: true } }
      })
      assert.strictEqual(done.state, "completed")
      assert.deepStrictEqual(done.result, { valid: true })
      // Starting a completed task answers with its stored result rather than running it again.
      const replay = yield* api.execution.startTask({
        params: { id },
        payload: { leaseEpoch, address: address("validate:abc:0"), name: taskName("validate"), payload: { order: 1 }, sequence: 0 }
      })
      assert.strictEqual(replay.state, "completed")
      assert.deepStrictEqual(replay.result, { valid: true })

      const completed = yield* api.execution.complete({ params: { id }, payload: { leaseEpoch, result: { ok: true } } })
      assert.strictEqual(completed.state, "completed")
      assert.deepStrictEqual(completed.result, { ok: true })
      assert.isDefined(completed.finishedAt)
      const tasks = yield* api.runs.tasks({ params: { id } })
      assert.deepStrictEqual(tasks.map((t) => [t.name, t.state]), [["validate", "completed"]])
      const trail = yield* api.runs.transitions({ params: { id } })
      assert.deepStrictEqual(trail.map((t) => `${t.taskAddress ?? "run"}:${t.fromState}->${t.toState}`), [
        "run:undefined->pending",
        "run:pending->running",
        "validate:abc:0:pending->running",
        "validate:abc:0:running->completed",
        "run:running->completed"
      ])
      const late = yield* api.execution.claim({ params: { id }, payload: { workerId: workerB } }).pipe(Effect.flip)
      assert.strictEqual(late._tag, "RunNotClaimable")
    }))

  it.effect("records failed attempts, retries, and a run that fails with the last error", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const id = yield* startRun(api)
      const { leaseEpoch } = yield* api.execution.claim({ params: { id }, payload: { workerId: workerA } })
      const task = { leaseEpoch, address: address("charge:1:0"), name: taskName("charge"), payload: 1, sequence: 0 }
      for (const attempt of [1, 2]) {
        const started = yield* api.execution.startTask({ params: { id }, payload: task })
        assert.strictEqual(started.attempts.length, attempt)
        const failed = yield* api.execution.failTask({
          params: { id },
          payload: { leaseEpoch, address: task.address, attempt, error: { name: "Error", message: `boom ${attempt}` }, willRetry: attempt < 2 }
        })
        assert.strictEqual(failed.state, attempt < 2 ? "retrying" : "failed")
      }
      const tooLate = yield* api.execution.startTask({ params: { id }, payload: task }).pipe(Effect.flip)
      assert.strictEqual(tooLate._tag, "InvalidTransition")
      const noTask = yield* api.execution.completeTask({
        params: { id },
        payload: { leaseEpoch, address: address("never-started"), attempt: 1, result: null }
      }).pipe(Effect.flip)
      assert.strictEqual(noTask._tag, "TaskNotFound")
      const failed = yield* api.execution.fail({ params: { id }, payload: { leaseEpoch, error: { name: "Error", message: "boom 2" } } })
      assert.strictEqual(failed.state, "failed")
      const [charge] = yield* api.runs.tasks({ params: { id } })
      assert.strictEqual(charge!.state, "failed")
      assert.deepStrictEqual(charge!.attempts.map((a) => a.error?.message), ["boom 1", "boom 2"])
      assert.strictEqual(charge!.error?.message, "boom 2")
    }))

  it.effect("fences a zombie: after its lease lapsed and was granted again, its writes change nothing", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const id = yield* startRun(api)
      const first = yield* api.execution.claim({ params: { id }, payload: { workerId: workerA } })
      yield* api.execution.startTask({
        params: { id },
        payload: { leaseEpoch: first.leaseEpoch, address: address("step:0"), name: taskName("step"), payload: null, sequence: 0 }
      })
      const early = yield* api.execution.claim({ params: { id }, payload: { workerId: workerB } }).pipe(Effect.flip)
      assert.strictEqual(early._tag, "RunNotClaimable")

      yield* expireLease(id)
      const second = yield* api.execution.claim({ params: { id }, payload: { workerId: workerB } })
      assert.strictEqual(second.leaseEpoch, 2)
      assert.strictEqual(second.journal[0]?.state, "running")
      const before = yield* api.runs.status({ params: { id } })

      const zombie = { leaseEpoch: first.leaseEpoch }
      const errors = [
        yield* Effect.flip(api.execution.completeTask({
          params: { id },
          payload: { ...zombie, address: address("step:0"), attempt: 1, result: "zombie" }
        })),
        yield* Effect.flip(api.execution.startTask({
          params: { id },
          payload: { ...zombie, address: address("other:0"), name: taskName("other"), payload: null, sequence: 1 }
        })),
        yield* Effect.flip(api.execution.complete({ params: { id }, payload: { ...zombie, result: "zombie" } })),
        yield* Effect.flip(api.execution.fail({ params: { id }, payload: { ...zombie, error: { name: "Error", message: "zombie" } } })),
        yield* Effect.flip(api.execution.release({ params: { id }, payload: zombie }))
      ]
      for (const error of errors) {
        assert.strictEqual(error._tag, "LeaseLost")
        if (error._tag === "LeaseLost") assert.strictEqual(error.currentEpoch, 2)
      }
      const after = yield* api.runs.status({ params: { id } })
      assert.strictEqual(after.state, "running")
      assert.strictEqual(after.leaseOwner, workerB)
      assert.deepStrictEqual(after.updatedAt, before.updatedAt)
      const tasks = yield* api.runs.tasks({ params: { id } })
      assert.deepStrictEqual(tasks.map((t) => [t.address, t.state]), [["step:0", "running"]])

      // The new owner re-runs the task that was cut off: attempt 1 is closed, attempt 2 belongs to lease 2.
      const rerun = yield* api.execution.startTask({
        params: { id },
        payload: { leaseEpoch: second.leaseEpoch, address: address("step:0"), name: taskName("step"), payload: null, sequence: 0 }
      })
      assert.deepStrictEqual(rerun.attempts.map((a) => [a.attempt, a.leaseEpoch, a.error?.name]), [
        [1, 1, "LeaseLost"],
        [2, 2, undefined]
      ])
      const hb = yield* api.execution.heartbeat({
        params: { id: workerA },
        payload: { runs: [{ runId: id, leaseEpoch: first.leaseEpoch }] }
      })
      assert.deepStrictEqual([hb.extended, hb.cancelled, hb.lost], [[], [], [id]])
    }))

  it.effect("extends leases on heartbeat and tells the owner its run was cancelled", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      yield* api.execution.register({ params: { id: workerB }, payload: { workflows: [{ name, version }] } })
      const kept = yield* startRun(api)
      const cancelled = yield* startRun(api)
      const keptLease = yield* api.execution.claim({ params: { id: kept }, payload: { workerId: workerB, leaseMs: 2_000 } })
      const cancelledLease = yield* api.execution.claim({ params: { id: cancelled }, payload: { workerId: workerB } })
      yield* api.runs.cancel({ params: { id: cancelled } })
      const reply = yield* api.execution.heartbeat({
        params: { id: workerB },
        payload: {
          runs: [{ runId: kept, leaseEpoch: keptLease.leaseEpoch }, { runId: cancelled, leaseEpoch: cancelledLease.leaseEpoch }],
          leaseMs: 600_000
        }
      })
      assert.deepStrictEqual([reply.extended, reply.cancelled, reply.lost], [[kept], [cancelled], []])
      const run = yield* api.runs.status({ params: { id: kept } })
      const remainingMs = Number(run.leaseExpiresAt!.epochMilliseconds) - Date.now()
      assert.isAbove(remainingMs, 60_000)
      const write = yield* api.execution.complete({
        params: { id: cancelled },
        payload: { leaseEpoch: cancelledLease.leaseEpoch, result: 1 }
      }).pipe(Effect.flip)
      assert.strictEqual(write._tag, "LeaseLost")
      if (write._tag === "LeaseLost") assert.strictEqual(write.state, "cancelled")
    }))

  it.effect("releases a run back to pending for another worker, with a new stream message", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const id = yield* startRun(api)
      const lease = yield* api.execution.claim({ params: { id }, payload: { workerId: workerA } })
      const released = yield* api.execution.release({ params: { id }, payload: { leaseEpoch: lease.leaseEpoch } })
      assert.strictEqual(released.state, "pending")
      assert.isUndefined(released.leaseOwner)
      const next = yield* api.execution.claim({ params: { id }, payload: { workerId: workerB } })
      assert.strictEqual(next.leaseEpoch, 2)
      const sql = yield* SqlClient.SqlClient
      const outbox = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE run_id = ${id}`
      assert.strictEqual(outbox[0]!.n, 2)
    }))

  it.effect("cancels any unfinished run, idempotently, and refuses to cancel a finished one", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const id = yield* startRun(api)
      const cancelled = yield* api.runs.cancel({ params: { id } })
      assert.strictEqual(cancelled.state, "cancelled")
      const twice = yield* api.runs.cancel({ params: { id } })
      assert.strictEqual(twice.state, "cancelled")
      const claim = yield* api.execution.claim({ params: { id }, payload: { workerId: workerA } }).pipe(Effect.flip)
      assert.strictEqual(claim._tag, "RunNotClaimable")

      const done = yield* startRun(api)
      const lease = yield* api.execution.claim({ params: { id: done }, payload: { workerId: workerA } })
      yield* api.execution.complete({ params: { id: done }, payload: { leaseEpoch: lease.leaseEpoch, result: null } })
      const refused = yield* api.runs.cancel({ params: { id: done } }).pipe(Effect.flip)
      assert.strictEqual(refused._tag, "InvalidTransition")

      const unknown = "01900000-0000-7000-8000-000000000000" as RunId
      const notFound = [
        yield* Effect.flip(api.runs.status({ params: { id: unknown } })),
        yield* Effect.flip(api.runs.cancel({ params: { id: unknown } })),
        yield* Effect.flip(api.runs.tasks({ params: { id: unknown } })),
        yield* Effect.flip(api.runs.transitions({ params: { id: unknown } })),
        yield* Effect.flip(api.execution.claim({ params: { id: unknown }, payload: { workerId: workerA } })),
        yield* Effect.flip(api.execution.complete({ params: { id: unknown }, payload: { leaseEpoch: epoch(1), result: null } }))
      ]
      assert.deepStrictEqual(notFound.map((e) => e._tag), Array(6).fill("RunNotFound"))
    }))
})
}
