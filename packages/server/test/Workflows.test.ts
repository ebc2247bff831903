/**
 * Starting runs and listing them, through the client derived from the API: idempotency (also under concurrency),
 * filters and cursor pagination, and the typed 4xx answers to bad input.
 */
import type { IdempotencyKey, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { StartedRun } from "@aiki/contract/Models"
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import * as TestServer from "./support/TestServer.ts"

const name = "order-processing" as WorkflowName
const v1 = "1.0.0" as WorkflowVersion
const v2 = "2.0.0" as WorkflowVersion
const key = (k: string) => k as IdempotencyKey

// The same behaviour on Postgres and on PGlite (the embedded mode runs the same migrations and SQL).
for (const database of ["postgres", "embedded"] as const) {
layer(TestServer.layer({ database }), { excludeTestServices: true })(`workflows (${database})`, (it) => {
  it.effect("starts a run that waits, pending, for a worker of its version", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const started = yield* api.workflows.start({ params: { name, version: v1 }, payload: { payload: { orderId: 1 } } })
      assert.strictEqual(started.state, "pending")
      assert.isTrue(started.created)
      const run = yield* api.runs.status({ params: { id: started.id } })
      assert.strictEqual(run.workflowName, name)
      assert.strictEqual(run.workflowVersion, v1)
      assert.deepStrictEqual(run.payload, { orderId: 1 })
      assert.strictEqual(run.leaseEpoch, 0)
      const trail = yield* api.runs.transitions({ params: { id: started.id } })
      assert.deepStrictEqual(trail.map((t) => [t.fromState, t.toState, t.reason]), [[undefined, "pending", "started"]])
    }))

  it.effect("returns the existing run for the same key and payload, 409 for another payload", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const request = { params: { name, version: v1 }, payload: { payload: { a: 1, b: [1, 2] }, idempotencyKey: key("same") } }
      const first = yield* api.workflows.start(request)
      const second = yield* api.workflows.start({
        ...request,
        payload: { payload: { b: [1, 2], a: 1 }, idempotencyKey: key("same") }
      })
      assert.strictEqual(second.id, first.id)
      assert.isFalse(second.created)
      const conflict = yield* api.workflows.start({ ...request, payload: { payload: { a: 2 }, idempotencyKey: key("same") } })
        .pipe(Effect.flip)
      assert.strictEqual(conflict._tag, "IdempotencyConflict")
      if (conflict._tag === "IdempotencyConflict") {
        assert.strictEqual(conflict.existingRunId, first.id)
        assert.include(conflict.message, first.id)
      }
      const otherVersion = yield* api.workflows.start({ ...request, params: { name, version: v2 } }).pipe(Effect.flip)
      assert.strictEqual(otherVersion._tag, "IdempotencyConflict")
    }))

  it.effect("starts several runs in one request, each answered on its own and in order", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const api = yield* server.client()
      const taken = yield* api.workflows.start({ params: { name, version: v1 }, payload: { payload: 1, idempotencyKey: key("taken") } })
      const { results } = yield* api.workflows.startMany({
        payload: {
          runs: [
            { workflowName: name, workflowVersion: v1, payload: "first" },
            { workflowName: name, workflowVersion: v1, payload: 2, idempotencyKey: key("taken") },
            { workflowName: name, workflowVersion: v1, payload: "x".repeat(server.config.maxPayloadBytes + 1) },
            { workflowName: name, workflowVersion: v2, payload: 1, idempotencyKey: key("taken") },
            { workflowName: name, workflowVersion: v1, payload: 1, idempotencyKey: key("taken") },
            { workflowName: name, workflowVersion: v1, payload: "twice", idempotencyKey: key("batch") },
            { workflowName: name, workflowVersion: v1, payload: "twice", idempotencyKey: key("batch") }
          ]
        }
      })
      assert.deepStrictEqual(results.map((r) => r instanceof StartedRun ? "StartedRun" : r._tag), [
        "StartedRun",
        "IdempotencyConflict",
        "PayloadTooLarge",
        "IdempotencyConflict",
        "StartedRun",
        "StartedRun",
        "StartedRun"
      ])
      const [first, , , , same, batchA, batchB] = results.map((r) => r instanceof StartedRun ? r : undefined)
      assert.isTrue(first!.created)
      assert.deepStrictEqual([same!.id, same!.created], [taken.id, false])
      // Two starts with one key in the same request: one run, created once.
      assert.strictEqual(batchA!.id, batchB!.id)
      assert.deepStrictEqual([batchA!.created, batchB!.created].sort(), [false, true])
    }))

  it.effect("creates exactly one run for 20 concurrent starts with one key", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const api = yield* server.client()
      const results = yield* Effect.forEach(
        Array.from({ length: 20 }, () => undefined),
        () => api.workflows.start({ params: { name, version: v1 }, payload: { payload: { n: 7 }, idempotencyKey: key("race") } }),
        { concurrency: "unbounded" }
      )
      assert.strictEqual(new Set(results.map((r) => r.id)).size, 1)
      assert.strictEqual(results.filter((r) => r.created).length, 1)
      const sql = yield* SqlClient.SqlClient
      const rows = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM workflow_runs WHERE idempotency_key = 'race'`
      assert.strictEqual(rows[0]!.n, 1)
      const outbox = yield* sql<{ n: number }>`
        SELECT count(*)::int AS n FROM outbox o JOIN workflow_runs r ON r.id = o.run_id WHERE r.idempotency_key = 'race'`
      assert.strictEqual(outbox[0]!.n, 1)
    }))

  it.effect("lists runs newest first, filtered by state and version, page by page", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const listed = "listed-workflow" as WorkflowName
      const ids: Array<string> = []
      for (let i = 0; i < 5; i++) {
        const version = i % 2 === 0 ? v1 : v2
        ids.push((yield* api.workflows.start({ params: { name: listed, version }, payload: { payload: i } })).id)
      }
      yield* api.runs.cancel({ params: { id: ids[4]! as never } })

      const first = yield* api.workflows.runs({ params: { name: listed }, query: { limit: 2 } })
      assert.deepStrictEqual(first.runs.map((r) => r.id), [ids[4], ids[3]])
      assert.isDefined(first.nextCursor)
      const second = yield* api.workflows.runs({ params: { name: listed }, query: { limit: 2, cursor: first.nextCursor as never } })
      assert.deepStrictEqual(second.runs.map((r) => r.id), [ids[2], ids[1]])
      const third = yield* api.workflows.runs({ params: { name: listed }, query: { limit: 2, cursor: second.nextCursor as never } })
      assert.deepStrictEqual(third.runs.map((r) => r.id), [ids[0]])
      assert.isUndefined(third.nextCursor)

      const pending = yield* api.workflows.runs({ params: { name: listed }, query: { state: "pending" } })
      assert.deepStrictEqual(pending.runs.map((r) => r.id), [ids[3], ids[2], ids[1], ids[0]])
      const ofV2 = yield* api.workflows.runs({ params: { name: listed }, query: { version: v2 } })
      assert.deepStrictEqual(ofV2.runs.map((r) => r.id), [ids[3], ids[1]])
    }))
})
}
