/**
 * Retention against a real Postgres, with the clock shifted rather than waited for: finished runs older than
 * `RETENTION_DAYS` go, in batches, with their tasks, attempts, transitions, events and outbox rows; unfinished runs
 * and younger ones stay; 0 keeps everything; published outbox rows nothing reads any more go at once.
 */
import type { AikiClient } from "@aiki/contract/Client"
import type { EventName, RunId, TaskAddress, TaskName, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { Write } from "@aiki/contract/Models"
import { eventually } from "@aiki/testing/eventually"
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import * as Retention from "../src/Retention.ts"
import { ServerConfig } from "../src/ServerConfig.ts"
import * as TestServer from "./support/TestServer.ts"

const name = "retention" as WorkflowName
const version = "1.0.0" as WorkflowVersion
const worker = "retention-worker" as WorkerId
const day = 86_400_000

const start = (api: AikiClient) =>
  api.workflows.start({ params: { name, version }, payload: { payload: { n: 1 } } }).pipe(Effect.map((r) => r.id))

/** Runs `effect` with the clock at `days` from now. */
const inDays = (days: number) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    yield* TestClock.setTime(Date.now() + days * day)
    return yield* effect
  }).pipe(Effect.provide(TestClock.layer()))

/** A run that completed after a task and an event: rows in every table that belongs to a run. */
/** Claims `id` for the test's worker; its lease epoch. */
const claim = (api: AikiClient, id: RunId) =>
  api.execution.claim({ params: { id: worker }, payload: { runIds: [id], replayVersion: 2 } }).pipe(
    Effect.map((claims) => claims.leases[0]!.leaseEpoch)
  )

const write = (api: AikiClient, writes: ReadonlyArray<Write>) =>
  api.execution.write({ params: { id: worker }, payload: { writes } })

const completedRun = (api: AikiClient) =>
  Effect.gen(function*() {
    const id = yield* start(api)
    const leaseEpoch = yield* claim(api, id)
    const address = "step:a:0" as TaskAddress
    yield* write(api, [
      { _tag: "StartTask", runId: id, leaseEpoch, address, name: "step" as TaskName, payload: 1, sequence: 0, attempt: 1 },
      { _tag: "FinishTask", runId: id, leaseEpoch, address, attempt: 1, elapsedMs: 1, outcome: { _tag: "Completed", result: 2 }, outcomeOrder: 0 }
    ])
    yield* api.runs.sendEvent({ params: { id, name: "approval" as EventName }, payload: { payload: true } })
    yield* write(api, [{ _tag: "CompleteRun", runId: id, leaseEpoch, result: "done" }])
    return id
  })

const failedRun = (api: AikiClient) =>
  Effect.gen(function*() {
    const id = yield* start(api)
    const leaseEpoch = yield* claim(api, id)
    yield* write(api, [{ _tag: "FailRun", runId: id, leaseEpoch, error: { name: "Error", message: "no" } }])
    return id
  })

const cancelledRun = (api: AikiClient) =>
  Effect.gen(function*() {
    const id = yield* start(api)
    yield* api.runs.cancel({ params: { id } })
    return id
  })

/** How many rows each table holds for `ids`. */
const rowsOf = (ids: ReadonlyArray<RunId>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const count = (table: string) =>
      sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)} WHERE ${sql(table === "workflow_runs" ? "id" : "run_id")} IN ${sql.in(ids)}`
        .pipe(Effect.map((rows) => rows[0]!.n))
    const tables = ["workflow_runs", "tasks", "task_attempts", "transitions", "run_events", "outbox"] as const
    return Object.fromEntries(yield* Effect.forEach(tables, (table) => Effect.map(count(table), (n) => [table, n] as const)))
  }).pipe(Effect.orDie)

layer(TestServer.layer(), { excludeTestServices: true })("retention", (it) => {
  it.effect("deletes runs finished longer ago than RETENTION_DAYS, in batches, with everything that is theirs", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const finished = [yield* completedRun(api), yield* failedRun(api), yield* cancelledRun(api)]
      const unfinished = yield* start(api)
      const before = yield* rowsOf(finished)
      for (const table of ["workflow_runs", "tasks", "task_attempts", "transitions", "run_events", "outbox"]) {
        assert.isAbove(before[table]!, 0, `no ${table} rows to delete`)
      }

      // 29 days on, within the default 30 days: nothing goes.
      assert.strictEqual(yield* Retention.deleteExpiredRuns().pipe(inDays(29)), 0)
      // 31 days on, they go, two at a time.
      assert.deepStrictEqual([
        yield* Retention.deleteExpiredRuns(2).pipe(inDays(31)),
        yield* Retention.deleteExpiredRuns(2).pipe(inDays(31)),
        yield* Retention.deleteExpiredRuns(2).pipe(inDays(31))
      ], [2, 1, 0])
      assert.deepStrictEqual(yield* rowsOf(finished), {
        workflow_runs: 0, tasks: 0, task_attempts: 0, transitions: 0, run_events: 0, outbox: 0
      })
      // A run that never finished stays, however old.
      const kept = yield* rowsOf([unfinished])
      assert.strictEqual(kept["workflow_runs"], 1)
      assert.strictEqual(kept["transitions"], 1)
      assert.strictEqual((yield* api.runs.status({ params: { id: unfinished } })).state, "pending")
    }))

  it.effect("keeps everything when RETENTION_DAYS is 0", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const api = yield* server.client()
      const id = yield* completedRun(api)
      const keepForever = ServerConfig.of({ ...server.config, retentionDays: 0 })
      const deleted = yield* Retention.deleteExpiredRuns().pipe(inDays(10_000), Effect.provideService(ServerConfig, keepForever))
      assert.strictEqual(deleted, 0)
      assert.strictEqual((yield* rowsOf([id]))["workflow_runs"], 1)
    }))

  it.effect("removes published outbox rows nothing reads any more, and keeps the latest of a pending run", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const sql = yield* SqlClient.SqlClient
      const waiting = yield* start(api)
      const running = yield* start(api)
      const requeued = yield* start(api)
      yield* claim(api, running)
      const leaseEpoch = yield* claim(api, requeued)
      yield* write(api, [{ _tag: "ReleaseRun", runId: requeued, leaseEpoch }])
      const outbox = (id: RunId) =>
        sql<{ id: string; published: boolean }>`
          SELECT id::text AS id, published_at IS NOT NULL AS published FROM outbox WHERE run_id = ${id} ORDER BY id`
      yield* eventually(Effect.gen(function*() {
        for (const id of [waiting, running, requeued]) {
          assert.isTrue((yield* outbox(id)).every((row) => row.published), "not published yet")
        }
      }))
      const latestOfRequeued = (yield* outbox(requeued)).at(-1)!.id
      yield* Retention.drain(Retention.deleteSettledOutbox(), Retention.outboxBatchSize)
      assert.strictEqual((yield* outbox(waiting)).length, 1)
      assert.deepStrictEqual(yield* outbox(running), [])
      assert.deepStrictEqual((yield* outbox(requeued)).map((row) => row.id), [latestOfRequeued])
    }))
})
