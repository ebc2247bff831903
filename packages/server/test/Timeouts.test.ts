/**
 * The server's side of timeouts and poison runs, through the worker protocol: the sweep fails an open attempt past
 * its deadline (heartbeats push the heartbeat deadline back), tells the owner in the answer to its next heartbeat
 * write, and still takes the owner's failure and retry decision; a run past its deadline fails and its owner is
 * fenced; a run whose lease lapses `poisonAfterLapses` times in a row without progress fails as poisoned, and
 * progress starts the count over. Deadlines are moved into the past with SQL, the sweeps are called directly.
 */
import type { AikiClient } from "@aiki/contract/Client"
import type { LeaseEpoch, RunId, TaskAddress, TaskName, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { Write, WriteResult } from "@aiki/contract/Models"
import { assert, layer } from "@effect/vitest"
import { DateTime, Effect, Fiber, Stream } from "effect"
import { SqlClient } from "effect/sql"
import * as Reaper from "../src/Reaper.ts"
import * as Timeouts from "../src/Timeouts.ts"
import * as TestServer from "./support/TestServer.ts"

const name = "timeouts" as WorkflowName
const version = "1.0.0" as WorkflowVersion
const workerA = "worker-a" as WorkerId
const workerB = "worker-b" as WorkerId
const at = "slow:0000000000000000:0" as TaskAddress
const replayVersion = 2

const startRun = (api: AikiClient, extra: { readonly executionTimeoutMs?: number } = {}) =>
  api.workflows.start({ params: { name, version }, payload: { payload: {}, ...extra } }).pipe(Effect.map((r) => r.id))

const grant = (api: AikiClient, id: RunId, workerId: WorkerId) =>
  api.execution.claim({ params: { id: workerId }, payload: { runIds: [id], replayVersion } }).pipe(
    Effect.map((claims) => claims.leases[0])
  )

const writeOne = (api: AikiClient, write: Write): Effect.Effect<WriteResult, unknown> =>
  api.execution.write({ params: { id: workerA }, payload: { writes: [write] } }).pipe(Effect.map((r) => r.results[0]!))

const startTask = (runId: RunId, leaseEpoch: number, attempt: number, limits: { timeoutMs?: number; heartbeatTimeoutMs?: number }): Write => ({
  _tag: "StartTask",
  runId,
  leaseEpoch: leaseEpoch as LeaseEpoch,
  address: at,
  sequence: 0,
  name: "slow" as TaskName,
  payload: null,
  attempt,
  ...limits
})

const lapse = (id: RunId) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`UPDATE workflow_runs SET lease_expires_at = now() - interval '1 second' WHERE id = ${id}`
  })

for (const database of ["postgres", "embedded"] as const) {
layer(TestServer.layer({ database, timeoutSweepIntervalMs: 3_600_000, poisonAfterLapses: 3 }), { excludeTestServices: true })(
  `timeouts (${database})`,
  (it) => {
    it.effect("fails an attempt past its heartbeat deadline, tells its owner, and takes the owner's retry decision", () =>
      Effect.gen(function*() {
        const api = yield* (yield* TestServer.TestServer).client()
        const sql = yield* SqlClient.SqlClient
        yield* api.execution.register({ params: { id: workerA }, payload: { workflows: [{ name, version }] } })
        const id = yield* startRun(api)
        const lease = (yield* grant(api, id, workerA))!
        assert.strictEqual((yield* writeOne(api, startTask(id, lease.leaseEpoch, 1, { heartbeatTimeoutMs: 60_000 })))._tag, "Written")
        const beat: Write = { _tag: "HeartbeatTask", runId: id, leaseEpoch: lease.leaseEpoch, address: at, attempt: 1, details: { done: 3 } }
        assert.strictEqual((yield* writeOne(api, beat))._tag, "Written")
        // Not overdue yet: the sweep leaves it alone.
        assert.strictEqual(yield* Timeouts.timeOutAttempts, 0)
        // Its last heartbeat a minute ago: overdue. The owner's signals stream says so at once.
        const signals = yield* api.execution.signals({ params: { id: workerA } })
        const pushed = yield* signals.pipe(
          Stream.filter((signal) => signal._tag !== "Connected" && signal._tag !== "Ping"),
          Stream.take(1),
          Stream.runCollect,
          Effect.forkChild
        )
        yield* Effect.sleep("300 millis")
        yield* sql`UPDATE task_attempts SET heartbeat_at = now() - interval '61 seconds' WHERE run_id = ${id}`
        assert.strictEqual(yield* Timeouts.timeOutAttempts, 1)
        assert.deepStrictEqual([...yield* Fiber.join(pushed).pipe(Effect.timeout("10 seconds"))], [
          { _tag: "TaskTimedOut", runId: id, address: at, attempt: 1, kind: "heartbeat" }
        ])
        assert.strictEqual(yield* Timeouts.timeOutAttempts, 0)
        const [task] = yield* api.runs.tasks({ params: { id } })
        assert.strictEqual(task!.state, "running")
        assert.strictEqual(task!.attempts[0]!.error?.name, "TaskTimedOut")
        assert.deepStrictEqual(task!.attempts[0]!.error?.data, { kind: "heartbeat" })
        assert.deepStrictEqual(task!.attempts[0]!.heartbeatDetails, { done: 3 })
        // The owner's next heartbeat learns it; its failure with a retry moves the entry, the attempt keeps the
        // server's error; the next attempt starts.
        assert.deepStrictEqual(yield* writeOne(api, beat), { _tag: "AttemptTimedOut", kind: "heartbeat" })
        const failed = yield* writeOne(api, {
          _tag: "FinishTask",
          runId: id,
          leaseEpoch: lease.leaseEpoch,
          address: at,
          attempt: 1,
          elapsedMs: 10,
          outcome: {
            _tag: "Failed",
            error: { name: "TaskTimedOut", message: "timed out" },
            retryAt: DateTime.makeUnsafe(Date.now() + 100)
          }
        })
        assert.strictEqual(failed._tag, "Written")
        assert.strictEqual((yield* api.runs.tasks({ params: { id } }))[0]!.state, "retrying")
        assert.strictEqual((yield* writeOne(api, startTask(id, lease.leaseEpoch, 2, { timeoutMs: 60_000 })))._tag, "Written")
        yield* sql`UPDATE task_attempts SET timeout_at = now() - interval '1 second' WHERE run_id = ${id} AND attempt = 2`
        assert.strictEqual(yield* Timeouts.timeOutAttempts, 1)
        const [again] = yield* api.runs.tasks({ params: { id } })
        assert.deepStrictEqual(again!.attempts[1]!.error?.data, { kind: "start_to_close" })
        // A worker that missed the signal learns it from a probe (which renews nothing).
        const probe: Write = { _tag: "HeartbeatTask", runId: id, leaseEpoch: lease.leaseEpoch, address: at, attempt: 2, probe: true }
        assert.deepStrictEqual(yield* writeOne(api, probe), { _tag: "AttemptTimedOut", kind: "start_to_close" })
        const trail = yield* api.runs.transitions({ params: { id } })
        assert.strictEqual(trail.filter((t) => t.reason === "task_timed_out").length, 2)
      }))

    it.effect("fails a run past its execution deadline and fences its owner", () =>
      Effect.gen(function*() {
        const api = yield* (yield* TestServer.TestServer).client()
        const sql = yield* SqlClient.SqlClient
        yield* api.execution.register({ params: { id: workerA }, payload: { workflows: [{ name, version }] } })
        const id = yield* startRun(api, { executionTimeoutMs: 60_000 })
        const lease = (yield* grant(api, id, workerA))!
        assert.isDefined(lease.run.deadlineAt)
        assert.strictEqual(yield* Timeouts.timeOutRuns, 0)
        yield* sql`UPDATE workflow_runs SET deadline_at = now() - interval '1 second' WHERE id = ${id}`
        assert.strictEqual(yield* Timeouts.timeOutRuns, 1)
        const run = yield* api.runs.status({ params: { id } })
        assert.strictEqual(run.state, "failed")
        assert.strictEqual(run.failureReason, "timed_out")
        const reply = yield* api.execution.heartbeat({
          params: { id: workerA },
          payload: { runs: [{ runId: id, leaseEpoch: lease.leaseEpoch }] }
        })
        assert.deepStrictEqual(reply.lost, [id])
        const late = yield* writeOne(api, { _tag: "CompleteRun", runId: id, leaseEpoch: lease.leaseEpoch, result: 1 })
        assert.strictEqual(late._tag, "LeaseLost")
      }))

    it.effect("fails a run whose lease lapsed three times in a row without progress; progress starts the count over", () =>
      Effect.gen(function*() {
        const api = yield* (yield* TestServer.TestServer).client()
        for (const worker of [workerA, workerB]) {
          yield* api.execution.register({ params: { id: worker }, payload: { workflows: [{ name, version }] } })
        }
        const id = yield* startRun(api)
        // Two lapses: requeued by the reaper, then taken over by another worker.
        const first = (yield* grant(api, id, workerA))!
        yield* lapse(id)
        assert.strictEqual(yield* Reaper.requeueLapsed, 1)
        yield* grant(api, id, workerA)
        yield* lapse(id)
        const taken = (yield* grant(api, id, workerB))!
        assert.strictEqual(taken.run.lapses, 2)
        assert.isAbove(taken.leaseEpoch, first.leaseEpoch)
        // Progress: a task finished. The count starts over.
        yield* writeOne(api, startTask(id, taken.leaseEpoch, 1, {}))
        assert.strictEqual((yield* writeOne(api, {
          _tag: "FinishTask",
          runId: id,
          leaseEpoch: taken.leaseEpoch,
          address: at,
          attempt: 1,
          elapsedMs: 1,
          outcome: { _tag: "Completed", result: null },
          outcomeOrder: 0
        }))._tag, "Written")
        assert.isUndefined((yield* api.runs.status({ params: { id } })).lapses)
        // Three lapses in a row now: poisoned, and no worker is granted it again.
        for (let lapses = 1; lapses <= 3; lapses++) {
          yield* lapse(id)
          assert.strictEqual(yield* Reaper.requeueLapsed, 1)
          if (lapses < 3) assert.isDefined(yield* grant(api, id, workerA))
        }
        const run = yield* api.runs.status({ params: { id } })
        assert.strictEqual(run.state, "failed")
        assert.strictEqual(run.failureReason, "poisoned")
        assert.strictEqual(run.error?.name, "RunPoisoned")
        assert.isUndefined(yield* grant(api, id, workerB))
      }))
  }
)
}
