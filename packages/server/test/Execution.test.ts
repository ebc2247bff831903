/**
 * The worker protocol through the derived client: registration and health, claiming (leases and their journal),
 * batched writes (task attempts and outcomes, completion, release), heartbeats, cancellation seen by the owner,
 * and lease fencing: once a lease lapsed and was granted again, the old epoch can change nothing. A batch is
 * answered write by write: one run's lost lease does not fail its neighbours.
 */
import type { AikiClient } from "@aiki/contract/Client"
import type { LeaseEpoch, RunId, TaskAddress, TaskName, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { Write, WriteResult } from "@aiki/contract/Models"
import { assert, layer } from "@effect/vitest"
import { PgClient } from "@effect/sql-pg"
import { DateTime, Deferred, Effect, Fiber, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import * as TestServer from "./support/TestServer.ts"

const name = "fencing" as WorkflowName
const version = "1.0.0" as WorkflowVersion
const workerA = "worker-a" as WorkerId
const workerB = "worker-b" as WorkerId
const address = (a: string) => a as TaskAddress
const taskName = (n: string) => n as TaskName
const epoch = (n: number) => n as LeaseEpoch
const replayVersion = 2

const startRun = (api: AikiClient, payload: unknown = {}) =>
  api.workflows.start({ params: { name, version }, payload: { payload: payload as never } }).pipe(Effect.map((r) => r.id))

/** Claims one run: its lease, or why it was refused. */
const claim = (api: AikiClient, id: RunId, workerId: WorkerId, leaseMs?: number) =>
  api.execution.claim({
    params: { id: workerId },
    payload: { runIds: [id], replayVersion, ...(leaseMs !== undefined ? { leaseMs } : {}) }
  }).pipe(Effect.map((claims) => ({ lease: claims.leases[0], refused: claims.refused[0] })))

const granted = (api: AikiClient, id: RunId, workerId: WorkerId, leaseMs?: number) =>
  claim(api, id, workerId, leaseMs).pipe(Effect.map(({ lease }) => {
    assert.isDefined(lease, `run ${id} was not granted`)
    return lease!
  }))

/** Sends `writes` as one batch; their results, in order. */
const writeAll = (api: AikiClient, writes: ReadonlyArray<Write>) =>
  api.execution.write({ params: { id: workerA }, payload: { writes } }).pipe(Effect.map((r) => r.results))

const writeOne = (api: AikiClient, write: Write) => writeAll(api, [write]).pipe(Effect.map((results) => results[0]!))

const tag = (result: WriteResult) => result._tag

const startTask = (runId: RunId, leaseEpoch: LeaseEpoch, at: string, attempt = 1, sequence = 0): Write => ({
  _tag: "StartTask",
  runId,
  leaseEpoch,
  address: address(at),
  sequence,
  name: taskName(at.split(":")[0]!),
  payload: { at },
  attempt
})

const completeTask = (runId: RunId, leaseEpoch: LeaseEpoch, at: string, result: unknown, attempt = 1, outcomeOrder = 0): Write => ({
  _tag: "FinishTask",
  runId,
  leaseEpoch,
  address: address(at),
  attempt,
  elapsedMs: 5,
  outcome: { _tag: "Completed", result: result as never },
  outcomeOrder
})

const revisionOf = (id: RunId) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const [row] = yield* sql<{ readonly revision: string }>`SELECT revision::text AS revision FROM workflow_runs WHERE id = ${id}`
    return Number(row!.revision)
  })

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
      assert.strictEqual(registered.maxPayloadBytes, server.config.maxPayloadBytes)
      // A stream per version and priority band, the highest band first.
      assert.deepStrictEqual(registered.streams?.map((s) => `${s.band} ${s.stream}`), [
        `high {${server.redisPrefix}}:workflow:fencing:1.0.0:high`,
        `high {${server.redisPrefix}}:workflow:other:1.0.0:high`,
        `normal {${server.redisPrefix}}:workflow:fencing:1.0.0`,
        `normal {${server.redisPrefix}}:workflow:other:1.0.0`,
        `low {${server.redisPrefix}}:workflow:fencing:1.0.0:low`,
        `low {${server.redisPrefix}}:workflow:other:1.0.0:low`
      ])
      const id = yield* startRun(api)
      yield* granted(api, id, workerA)
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
      const lease = yield* granted(api, id, workerA, 30_000)
      assert.strictEqual(lease.leaseEpoch, 1)
      assert.strictEqual(lease.run.state, "running")
      assert.strictEqual(lease.run.leaseOwner, workerA)
      assert.strictEqual(lease.run.replayVersion, replayVersion)
      assert.deepStrictEqual(lease.journal, [])
      // The server's clock at the grant, against which the worker places the due times it sends.
      assert.isBelow(Math.abs(Number(lease.serverTime.epochMilliseconds) - Date.now()), 5_000)
      // The lease as granted: its expiry is the grant's (the row the claim's own statement wrote).
      const leaseLeftMs = Number(lease.leaseExpiresAt.epochMilliseconds) - Number(lease.serverTime.epochMilliseconds)
      assert.isTrue(leaseLeftMs > 25_000 && leaseLeftMs <= 30_000, `lease left ${leaseLeftMs} ms`)
      assert.isDefined(lease.run.startedAt)
      const again = yield* claim(api, id, workerB)
      assert.strictEqual(again.refused?.reason, "held")

      const leaseEpoch = lease.leaseEpoch
      assert.strictEqual(tag(yield* writeOne(api, startTask(id, leaseEpoch, "validate:abc:0"))), "Written")
      // Repeating the request (a retried HTTP call) does not count a new attempt.
      assert.strictEqual(tag(yield* writeOne(api, startTask(id, leaseEpoch, "validate:abc:0"))), "Written")
      const [started] = yield* api.runs.tasks({ params: { id } })
      assert.strictEqual(started!.state, "running")
      assert.strictEqual(started!.attempts.length, 1)
      assert.strictEqual(tag(yield* writeOne(api, completeTask(id, leaseEpoch, "validate:abc:0", { valid: true }))), "Written")
      // Reporting the same outcome again is answered as done; starting the completed task again is refused.
      assert.strictEqual(tag(yield* writeOne(api, completeTask(id, leaseEpoch, "validate:abc:0", { valid: true }))), "Written")
      assert.strictEqual(tag(yield* writeOne(api, startTask(id, leaseEpoch, "validate:abc:0", 2))), "InvalidTransition")

      assert.strictEqual(tag(yield* writeOne(api, { _tag: "CompleteRun", runId: id, leaseEpoch, result: { ok: true } })), "Written")
      const completed = yield* api.runs.status({ params: { id } })
      assert.strictEqual(completed.state, "completed")
      assert.deepStrictEqual(completed.result, { ok: true })
      assert.isDefined(completed.finishedAt)
      const tasks = yield* api.runs.tasks({ params: { id } })
      assert.deepStrictEqual(tasks.map((t): Array<unknown> => [t.name, t.state, t.outcomeOrder]), [["validate", "completed", 0]])
      assert.deepStrictEqual(tasks[0]!.result, { valid: true })
      const trail = yield* api.runs.transitions({ params: { id } })
      assert.deepStrictEqual(trail.map((t) => `${t.taskAddress ?? "run"}:${t.fromState}->${t.toState}:${t.reason}`), [
        "run:undefined->pending:started",
        "run:pending->running:claimed",
        "validate:abc:0:pending->running:task_started",
        "validate:abc:0:running->completed:task_completed",
        "run:running->completed:completed"
      ])
      const late = yield* claim(api, id, workerB)
      assert.strictEqual(late.refused?.reason, "finished")
    }))

  it.effect("applies a batch's writes of one run in order: a start and its outcome travel together", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const id = yield* startRun(api)
      const { leaseEpoch } = yield* granted(api, id, workerA)
      const results = yield* writeAll(api, [
        startTask(id, leaseEpoch, "a:0", 1, 0),
        completeTask(id, leaseEpoch, "a:0", "A", 1, 0),
        startTask(id, leaseEpoch, "b:0", 1, 1),
        completeTask(id, leaseEpoch, "b:0", "B", 1, 1),
        { _tag: "CompleteRun", runId: id, leaseEpoch, result: "AB" }
      ])
      assert.deepStrictEqual(results.map(tag), ["Written", "Written", "Written", "Written", "Written"])
      const tasks = yield* api.runs.tasks({ params: { id } })
      assert.deepStrictEqual(tasks.map((t): Array<unknown> => [t.address, t.state, t.result, t.outcomeOrder]), [
        ["a:0", "completed", "A", 0],
        ["b:0", "completed", "B", 1]
      ])
      // The attempt's start is placed where the worker measured it, before its end.
      const attempt = tasks[0]!.attempts[0]!
      assert.isBelow(Number(attempt.startedAt.epochMilliseconds), Number(attempt.finishedAt!.epochMilliseconds))
      assert.strictEqual((yield* api.runs.status({ params: { id } })).state, "completed")
      // The same batch again (the worker retried a request whose answer it lost) changes nothing.
      const repeated = yield* writeAll(api, [
        completeTask(id, leaseEpoch, "b:0", "B", 1, 1),
        { _tag: "CompleteRun", runId: id, leaseEpoch, result: "AB" }
      ])
      assert.deepStrictEqual(repeated.map(tag), ["Written", "Written"])
    }))

  it.effect("answers each write of a batch on its own: one run's lost lease does not fail its neighbours", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const kept = yield* startRun(api, 1)
      const lost = yield* startRun(api, 2)
      const keptLease = yield* granted(api, kept, workerA)
      const lostLease = yield* granted(api, lost, workerA)
      yield* api.runs.cancel({ params: { id: lost } })
      const results = yield* writeAll(api, [
        startTask(lost, lostLease.leaseEpoch, "x:0"),
        startTask(kept, keptLease.leaseEpoch, "x:0"),
        completeTask(kept, keptLease.leaseEpoch, "x:0", "done"),
        { _tag: "CompleteRun", runId: lost, leaseEpoch: lostLease.leaseEpoch, result: null },
        { _tag: "CompleteRun", runId: kept, leaseEpoch: keptLease.leaseEpoch, result: "kept" }
      ])
      assert.deepStrictEqual(results.map(tag), ["LeaseLost", "Written", "Written", "LeaseLost", "Written"])
      assert.strictEqual((yield* api.runs.status({ params: { id: kept } })).state, "completed")
      assert.strictEqual((yield* api.runs.status({ params: { id: lost } })).state, "cancelled")
      assert.deepStrictEqual(yield* api.runs.tasks({ params: { id: lost } }), [])
    }))

  it.effect("records failed attempts, retries, and a run that fails with the last error", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const id = yield* startRun(api)
      const { leaseEpoch } = yield* granted(api, id, workerA)
      for (const attempt of [1, 2]) {
        const results = yield* writeAll(api, [startTask(id, leaseEpoch, "charge:1:0", attempt), {
          _tag: "FinishTask",
          runId: id,
          leaseEpoch,
          address: address("charge:1:0"),
          attempt,
          elapsedMs: 1,
          outcome: {
            _tag: "Failed",
            error: { name: "Error", message: `boom ${attempt}` },
            ...(attempt < 2 ? { retryAt: DateTime.nowUnsafe() } : {})
          },
          ...(attempt < 2 ? {} : { outcomeOrder: 0 })
        }])
        assert.deepStrictEqual(results.map(tag), ["Written", "Written"])
        const [task] = yield* api.runs.tasks({ params: { id } })
        assert.strictEqual(task!.state, attempt < 2 ? "retrying" : "failed")
        assert.strictEqual(task!.attempts.length, attempt)
        if (attempt < 2) assert.isDefined(task!.notBefore)
      }
      assert.strictEqual(tag(yield* writeOne(api, startTask(id, leaseEpoch, "charge:1:0", 5))), "InvalidTransition")
      assert.strictEqual(
        tag(yield* writeOne(api, completeTask(id, leaseEpoch, "never-started", null))),
        "TaskNotFound"
      )
      const failed = yield* writeOne(api, { _tag: "FailRun", runId: id, leaseEpoch, error: { name: "Error", message: "boom 2" } })
      assert.strictEqual(tag(failed), "Written")
      assert.strictEqual((yield* api.runs.status({ params: { id } })).state, "failed")
      const [charge] = yield* api.runs.tasks({ params: { id } })
      assert.strictEqual(charge!.state, "failed")
      assert.deepStrictEqual(charge!.attempts.map((a) => a.error?.message), ["boom 1", "boom 2"])
      assert.strictEqual(charge!.error?.message, "boom 2")
    }))

  it.effect("refuses a result too large to store, naming it, and writes nothing", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const api = yield* server.client()
      const id = yield* startRun(api)
      const { leaseEpoch } = yield* granted(api, id, workerA)
      // Within the request limit, above what is stored: the write is refused, its neighbours are not.
      const big = "x".repeat(server.config.maxPayloadBytes - 1_000)
      const results = yield* writeAll(api, [
        startTask(id, leaseEpoch, "big:0"),
        completeTask(id, leaseEpoch, "big:0", [big, big])
      ])
      assert.deepStrictEqual(results.map(tag), ["Written", "PayloadTooLarge"])
      const refused = results[1]!
      if (refused._tag === "PayloadTooLarge") assert.include(refused.message, "The result of task big:0")
      const [task] = yield* api.runs.tasks({ params: { id } })
      assert.strictEqual(task!.state, "running")
    }))

  it.effect("fences a zombie: after its lease lapsed and was granted again, its writes change nothing", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const id = yield* startRun(api)
      const first = yield* granted(api, id, workerA)
      yield* writeOne(api, startTask(id, first.leaseEpoch, "step:0"))
      assert.strictEqual((yield* claim(api, id, workerB)).refused?.reason, "held")

      yield* expireLease(id)
      const second = yield* granted(api, id, workerB)
      assert.strictEqual(second.leaseEpoch, 2)
      assert.strictEqual(second.journal[0]?.state, "running")
      const before = yield* api.runs.status({ params: { id } })

      const zombie = first.leaseEpoch
      const results = yield* writeAll(api, [
        completeTask(id, zombie, "step:0", "zombie"),
        startTask(id, zombie, "other:0", 1, 1),
        { _tag: "CompleteRun", runId: id, leaseEpoch: zombie, result: "zombie" },
        { _tag: "FailRun", runId: id, leaseEpoch: zombie, error: { name: "Error", message: "zombie" } },
        { _tag: "ReleaseRun", runId: id, leaseEpoch: zombie }
      ])
      for (const result of results) {
        assert.strictEqual(result._tag, "LeaseLost")
        if (result._tag === "LeaseLost") assert.strictEqual(result.currentEpoch, 2)
      }
      const after = yield* api.runs.status({ params: { id } })
      assert.strictEqual(after.state, "running")
      assert.strictEqual(after.leaseOwner, workerB)
      assert.deepStrictEqual(after.updatedAt, before.updatedAt)
      const tasks = yield* api.runs.tasks({ params: { id } })
      assert.deepStrictEqual(tasks.map((t) => [t.address, t.state]), [["step:0", "running"]])

      // The new owner re-runs the task that was cut off: attempt 1 is closed, attempt 2 belongs to lease 2.
      assert.strictEqual(tag(yield* writeOne(api, startTask(id, second.leaseEpoch, "step:0", 2))), "Written")
      const [rerun] = yield* api.runs.tasks({ params: { id } })
      assert.deepStrictEqual(rerun!.attempts.map((a) => [a.attempt, a.leaseEpoch, a.error?.name]), [
        [1, 1, "LeaseLost"],
        [2, 2, undefined]
      ])
      yield* api.execution.register({ params: { id: workerA }, payload: { workflows: [{ name, version }] } })
      const hb = yield* api.execution.heartbeat({
        params: { id: workerA },
        payload: { runs: [{ runId: id, leaseEpoch: first.leaseEpoch }] }
      })
      assert.deepStrictEqual([hb.extended, hb.cancelled, hb.lost], [[], [], [id]])
    }))

  it.effect("takes a run over at once when its worker stops renewing its liveness, before its lease lapses", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const dead = "worker-dead" as WorkerId
      yield* api.execution.register({ params: { id: dead }, payload: { workflows: [{ name, version }] } })
      const id = yield* startRun(api)
      yield* granted(api, id, dead, 600_000)
      assert.strictEqual((yield* claim(api, id, workerB)).refused?.reason, "held")
      const sql = yield* SqlClient.SqlClient
      yield* sql`UPDATE workers SET alive_until = now() - interval '1 second' WHERE id = ${dead}`
      const taken = yield* granted(api, id, workerB)
      assert.strictEqual(taken.leaseEpoch, 2)
      const trail = yield* api.runs.transitions({ params: { id } })
      assert.strictEqual(trail[trail.length - 1]!.reason, "lease_taken_over")
    }))

  it.effect("extends leases on heartbeat and tells the owner its run was cancelled", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      yield* api.execution.register({ params: { id: workerB }, payload: { workflows: [{ name, version }] } })
      const kept = yield* startRun(api)
      const cancelled = yield* startRun(api)
      const keptLease = yield* granted(api, kept, workerB, 2_000)
      const cancelledLease = yield* granted(api, cancelled, workerB)
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
      const write = yield* writeOne(api, { _tag: "CompleteRun", runId: cancelled, leaseEpoch: cancelledLease.leaseEpoch, result: 1 })
      assert.strictEqual(write._tag, "LeaseLost")
      if (write._tag === "LeaseLost") assert.strictEqual(write.state, "cancelled")
    }))

  it.effect("releases a run back to pending for another worker, with a new stream message", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const id = yield* startRun(api)
      const lease = yield* granted(api, id, workerA)
      assert.strictEqual(tag(yield* writeOne(api, { _tag: "ReleaseRun", runId: id, leaseEpoch: lease.leaseEpoch })), "Written")
      const released = yield* api.runs.status({ params: { id } })
      assert.strictEqual(released.state, "pending")
      assert.isUndefined(released.leaseOwner)
      const next = yield* granted(api, id, workerB)
      assert.strictEqual(next.leaseEpoch, 2)
      const sql = yield* SqlClient.SqlClient
      const outbox = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE run_id = ${id}`
      assert.strictEqual(outbox[0]!.n, 2)
    }))

  it.effect("raises a run's revision with every change to it or its journal, and with nothing else", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const id = yield* startRun(api)
      const lease = yield* granted(api, id, workerA)
      const claimed = yield* revisionOf(id)
      const leaseEpoch = lease.leaseEpoch
      // A task's start changes only the journal (an entry and its attempt), not the run's row.
      yield* writeOne(api, startTask(id, leaseEpoch, "a:1:0"))
      assert.strictEqual(yield* revisionOf(id), claimed + 1)
      yield* writeOne(api, {
        _tag: "HeartbeatTask",
        runId: id,
        leaseEpoch,
        address: address("a:1:0"),
        attempt: 1
      })
      assert.strictEqual(yield* revisionOf(id), claimed + 2)
      yield* writeOne(api, completeTask(id, leaseEpoch, "a:1:0", 1))
      assert.strictEqual(yield* revisionOf(id), claimed + 3)
      // Answered from what is there: a repeated outcome, a zombie's write, a probe.
      yield* writeOne(api, completeTask(id, leaseEpoch, "a:1:0", 1))
      yield* writeOne(api, completeTask(id, epoch(leaseEpoch + 1), "a:1:0", 1))
      assert.strictEqual(yield* revisionOf(id), claimed + 3)
      yield* writeOne(api, { _tag: "CompleteRun", runId: id, leaseEpoch, result: null })
      assert.strictEqual(yield* revisionOf(id), claimed + 4)
    }))

  it.effect("cancels any unfinished run, idempotently, and refuses to cancel a finished one", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const id = yield* startRun(api)
      const cancelled = yield* api.runs.cancel({ params: { id } })
      assert.strictEqual(cancelled.state, "cancelled")
      const twice = yield* api.runs.cancel({ params: { id } })
      assert.strictEqual(twice.state, "cancelled")
      assert.strictEqual((yield* claim(api, id, workerA)).refused?.reason, "finished")

      const done = yield* startRun(api)
      const lease = yield* granted(api, done, workerA)
      yield* writeOne(api, { _tag: "CompleteRun", runId: done, leaseEpoch: lease.leaseEpoch, result: null })
      const refused = yield* api.runs.cancel({ params: { id: done } }).pipe(Effect.flip)
      assert.strictEqual(refused._tag, "InvalidTransition")

      const unknown = "01900000-0000-7000-8000-000000000000" as RunId
      const notFound = [
        yield* Effect.flip(api.runs.status({ params: { id: unknown } })),
        yield* Effect.flip(api.runs.cancel({ params: { id: unknown } })),
        yield* Effect.flip(api.runs.tasks({ params: { id: unknown } })),
        yield* Effect.flip(api.runs.transitions({ params: { id: unknown } }))
      ]
      assert.deepStrictEqual(notFound.map((e) => e._tag), Array(4).fill("RunNotFound"))
      assert.strictEqual((yield* claim(api, unknown, workerA)).refused?.reason, "not_found")
      assert.strictEqual(
        tag(yield* writeOne(api, { _tag: "CompleteRun", runId: unknown, leaseEpoch: epoch(1), result: null })),
        "RunNotFound"
      )
    }))
})
}

// Two transactions at once: Postgres only (PGlite is one session).
/**
 * Sends `request` while `change` (standing in for another group's) is committed on a connection of the test's own
 * after the request's group read the run (that read does not wait for the row lock) and before its statement could
 * write: the change's transaction holds the lock until the request's statement is seen waiting for it.
 */
const racing = <A, E, R>(server: TestServer.TestServer["Service"], change: string, request: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const holding = yield* Deferred.make<void>()
    const release = yield* Deferred.make<void>()
    const other = yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql.unsafe(change)
      yield* Deferred.succeed(holding, undefined)
      yield* Deferred.await(release)
    })).pipe(Effect.forkChild)
    yield* Deferred.await(holding)
    const sent = yield* request.pipe(Effect.forkChild)
    const waiting = sql<{ readonly n: number }>`
      SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`
    while ((yield* waiting)[0]!.n === 0) yield* Effect.sleep("10 millis")
    yield* Deferred.succeed(release, undefined)
    yield* Fiber.join(other)
    return yield* Fiber.join(sent)
  }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(server.databaseUrl), maxConnections: 2 })))

/** How many groups this server decided again under locks because a run had moved. */
const movedFallbacks = (server: TestServer.TestServer["Service"]) =>
  TestServer.metric(server, "aiki_optimistic_fallbacks_total", { reason: "moved" })

layer(TestServer.layer({ database: "postgres" }), { excludeTestServices: true })("optimistic writes", (it) => {
  it.effect("a write decided on a run read before another change committed is decided again under the lock", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const api = yield* server.client()
      const id = yield* startRun(api)
      const lease = yield* granted(api, id, workerA)
      yield* writeOne(api, startTask(id, lease.leaseEpoch, "a:1:0"))
      const before = yield* movedFallbacks(server)
      const result = yield* racing(
        server,
        `UPDATE workflow_runs SET state = 'cancelled', finished_at = now(), lease_expires_at = NULL,
          revision = revision + 1 WHERE id = '${id}'`,
        writeOne(api, completeTask(id, lease.leaseEpoch, "a:1:0", 1))
      )
      assert.strictEqual(result._tag, "LeaseLost")
      assert.strictEqual((result as { readonly state?: string }).state, "cancelled")
      const [task] = yield* api.runs.tasks({ params: { id } })
      assert.strictEqual(task!.state, "running")
      assert.strictEqual((yield* api.runs.status({ params: { id } })).state, "cancelled")
      assert.strictEqual(yield* movedFallbacks(server), before + 1)
    }))

  it.effect("a claim decided on a run read before another worker's claim committed is refused under the lock", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const api = yield* server.client()
      const id = yield* startRun(api)
      const before = yield* movedFallbacks(server)
      // Worker B's claim, as its group would write it.
      const result = yield* racing(
        server,
        `UPDATE workflow_runs SET state = 'running', lease_owner = '${workerB}', lease_epoch = lease_epoch + 1,
          lease_expires_at = now() + interval '1 minute', started_at = now(), revision = revision + 1 WHERE id = '${id}'`,
        claim(api, id, workerA)
      )
      assert.isUndefined(result.lease)
      assert.strictEqual(result.refused?.reason, "held")
      const sql = yield* SqlClient.SqlClient
      const [row] = yield* sql<{ readonly lease_owner: string; readonly lease_epoch: number }>`
        SELECT lease_owner, lease_epoch FROM workflow_runs WHERE id = ${id}`
      assert.deepStrictEqual(row, { lease_owner: workerB, lease_epoch: 1 })
      assert.strictEqual(yield* movedFallbacks(server), before + 1)
    }))
})

// Postgres only: the test holds a snapshot open on a connection of its own while the server writes.
layer(TestServer.layer({ database: "postgres" }), { excludeTestServices: true })("run rows", (it) => {
  it.effect("updates a running run's row on its own page when its worker writes, while older snapshots are open", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const api = yield* server.client()
      const id = yield* startRun(api)
      const { leaseEpoch } = yield* granted(api, id, workerA)
      // Runs started after the claim fill the page the claimed run's row now lives on, as a burst does.
      yield* api.workflows.startMany({
        payload: { runs: Array.from({ length: 200 }, (_, i) => ({ workflowName: name, workflowVersion: version, payload: { i } })) }
      })
      const written = Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const pageOf = sql<{ readonly page: number }>`
          SELECT (ctid::text::point)[0]::int AS page FROM workflow_runs WHERE id = ${id}`.pipe(Effect.map(([row]) => row!.page))
        const page = yield* pageOf
        // A snapshot older than the writes (in a burst, other runs' statements in flight) keeps each replaced
        // version of the row on its page: only the room left free there lets the new one stay beside it.
        const opened = yield* Deferred.make<void>()
        const release = yield* Deferred.make<void>()
        const snapshot = yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql`SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`
          yield* sql`SELECT count(*) FROM workflow_runs`
          yield* Deferred.succeed(opened, undefined)
          yield* Deferred.await(release)
        })).pipe(Effect.forkChild)
        yield* Deferred.await(opened)
        for (let i = 1; i <= 3; i++) {
          yield* writeOne(api, startTask(id, leaseEpoch, `a:${i}:0`, 1, i - 1))
          yield* writeOne(api, completeTask(id, leaseEpoch, `a:${i}:0`, i, 1, i - 1))
        }
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(snapshot)
        return { page, after: yield* pageOf }
      }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(server.databaseUrl), maxConnections: 2 })))
      const { page, after } = yield* written
      assert.strictEqual(after, page, "the run's row moved to another page: its page had no room for its next versions")
    }))
})
