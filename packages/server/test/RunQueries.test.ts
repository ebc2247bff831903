/**
 * The read-only queries behind the dashboard, through the derived client: runs across workflows (filters, search by
 * id or idempotency key, time ranges, cursor pagination), counts by state overall and per workflow version, the
 * fleet of workers with the runs they hold, and the feed of runs that change.
 */
import type { AikiClient } from "@aiki/contract/Client"
import type { IdempotencyKey, RunId, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { assert, layer } from "@effect/vitest"
import { DateTime, Deferred, Effect, Fiber, Stream } from "effect"
import * as TestServer from "./support/TestServer.ts"

const orders = "orders" as WorkflowName
const emails = "emails" as WorkflowName
const idle = "idle" as WorkflowName
const v1 = "1.0.0" as WorkflowVersion
const v2 = "2.0.0" as WorkflowVersion
const worker = "fleet-worker" as WorkerId

const start = (api: AikiClient, name: WorkflowName, version: WorkflowVersion, idempotencyKey?: string) =>
  api.workflows.start({
    params: { name, version },
    payload: { payload: { name }, ...(idempotencyKey !== undefined ? { idempotencyKey: idempotencyKey as IdempotencyKey } : {}) }
  }).pipe(Effect.map((started) => started.id))

/** Every page of `list` for `query`, following the cursors. */
const allPages = (api: AikiClient, query: Parameters<AikiClient["runs"]["list"]>[0]["query"]) =>
  Effect.gen(function*() {
    const ids: Array<RunId> = []
    let cursor: RunId | undefined
    do {
      const page = yield* api.runs.list({ query: { ...query, ...(cursor !== undefined ? { cursor } : {}) } })
      ids.push(...page.runs.map((run) => run.id))
      cursor = page.nextCursor as RunId | undefined
    } while (cursor !== undefined)
    return ids
  })

// The same queries on Postgres and on PGlite (the embedded mode runs the same migrations and SQL).
for (const database of ["postgres", "embedded"] as const) {
layer(TestServer.layer({ database }), { excludeTestServices: true })(`run queries (${database})`, (it) => {
  it.effect("lists runs of every workflow newest first, filtered, searched and paginated", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const o1 = yield* start(api, orders, v1, "order-1")
      const e1 = yield* start(api, emails, v1)
      const o2 = yield* start(api, orders, v2, "order-2")
      const e2 = yield* start(api, emails, v1, "order-1") // same key, another workflow: a separate run
      yield* api.runs.cancel({ params: { id: e1 } })

      assert.deepStrictEqual(yield* allPages(api, { limit: 1 }), [e2, o2, e1, o1])
      const firstPage = yield* api.runs.list({ query: { limit: 3 } })
      assert.deepStrictEqual(firstPage.runs.map((run) => run.id), [e2, o2, e1])
      assert.strictEqual(firstPage.nextCursor, e1)
      assert.deepStrictEqual(yield* allPages(api, { workflow: orders }), [o2, o1])
      assert.deepStrictEqual(yield* allPages(api, { workflow: orders, version: v1 }), [o1])
      assert.deepStrictEqual(yield* allPages(api, { state: "cancelled" }), [e1])
      assert.deepStrictEqual(yield* allPages(api, { state: "pending", workflow: emails }), [e2])

      // Search: a run id (any case), or an idempotency key across workflows.
      assert.deepStrictEqual(yield* allPages(api, { q: o2 }), [o2])
      assert.deepStrictEqual(yield* allPages(api, { q: o2.toUpperCase() }), [o2])
      assert.deepStrictEqual(yield* allPages(api, { q: "order-1" }), [e2, o1])
      assert.deepStrictEqual(yield* allPages(api, { q: "order-1", workflow: orders }), [o1])
      assert.deepStrictEqual(yield* allPages(api, { q: "nothing-like-this" }), [])

      // Time ranges bound the start time: [from, to).
      const now = yield* DateTime.now
      const hourAgo = DateTime.subtract(now, { hours: 1 })
      const inAnHour = DateTime.add(now, { hours: 1 })
      assert.deepStrictEqual(yield* allPages(api, { from: hourAgo, to: inAnHour }), [e2, o2, e1, o1])
      assert.deepStrictEqual(yield* allPages(api, { from: inAnHour }), [])
      assert.deepStrictEqual(yield* allPages(api, { to: hourAgo }), [])
    }))

  it.effect("counts runs by state, overall, filtered and per workflow version", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const before = yield* api.runs.counts({ query: {} })
      const a = yield* start(api, orders, v1)
      yield* start(api, orders, v1)
      yield* start(api, orders, v2)
      yield* api.runs.cancel({ params: { id: a } })
      // A registered version nobody started yet still shows, with zeros.
      yield* api.execution.register({ params: { id: worker }, payload: { workflows: [{ name: idle, version: v1 }] } })

      const after = yield* api.runs.counts({ query: {} })
      assert.strictEqual(after.total - before.total, 3)
      assert.strictEqual(after.byState.cancelled - before.byState.cancelled, 1)
      assert.strictEqual(after.byState.pending - before.byState.pending, 2)
      assert.strictEqual(after.byState.completed, before.byState.completed)
      const v2Only = yield* api.runs.counts({ query: { workflow: orders, version: v2 } })
      const none = yield* api.runs.counts({ query: { from: DateTime.add(yield* DateTime.now, { hours: 1 }) } })
      assert.strictEqual(none.total, 0)
      assert.strictEqual(none.byState.pending, 0)

      const perVersion = yield* api.workflows.counts()
      const find = (name: WorkflowName, version: WorkflowVersion) =>
        perVersion.find((entry) => entry.name === name && entry.version === version)
      assert.deepStrictEqual(find(orders, v2)?.byState, v2Only.byState)
      assert.strictEqual(find(orders, v2)?.total, v2Only.total)
      assert.strictEqual(find(idle, v1)?.total, 0)
      assert.strictEqual(find(idle, v1)?.byState.pending, 0)
      const names = perVersion.map((entry) => `${entry.name}@${entry.version}`)
      assert.deepStrictEqual(names, [...names].sort())
    }))

  it.effect("lists the fleet: health, versions served, capacity and the runs each worker holds", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      yield* api.execution.register({
        params: { id: worker },
        payload: { workflows: [{ name: orders, version: v1 }], maxConcurrentRuns: 7 }
      })
      const held = yield* start(api, orders, v1)
      yield* api.execution.claim({ params: { id: worker }, payload: { runIds: [held], replayVersion: 2 } })
      const fleet = yield* api.fleet.workers()
      const summary = fleet.find((w) => w.id === worker)
      assert.isDefined(summary)
      assert.strictEqual(summary?.status, "healthy")
      assert.strictEqual(summary?.maxConcurrentRuns, 7)
      assert.deepStrictEqual(summary?.heldRuns, [held])
      assert.strictEqual(summary?.runsInFlight, 1)
      assert.deepStrictEqual(summary?.workflows, [{ name: orders, version: v1 }])
    }))

  it.effect("tells a follower which runs change, as they change", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const feed = yield* api.runs.activity()
      const changedIds = new Set<string>()
      const connected = yield* Deferred.make<void>()
      const target = yield* start(api, orders, v1)
      const seen = yield* feed.pipe(
        Stream.tap((event) => {
          if (event._tag === "Connected") return Deferred.succeed(connected, undefined)
          if (event._tag === "Changed") for (const id of event.runIds) changedIds.add(id)
          return Effect.void
        }),
        Stream.takeUntil(() => changedIds.has(target)),
        Stream.runCollect,
        Effect.forkChild
      )
      // The server subscribes before it says `Connected`: a change from then on is reported.
      yield* Deferred.await(connected)
      yield* api.runs.cancel({ params: { id: target } })
      const events = yield* Fiber.join(seen).pipe(Effect.timeout("10 seconds"))
      assert.strictEqual(events[0]?._tag, "Connected")
      assert.isTrue(changedIds.has(target))
    }))

  it.effect("rejects bad filters with a 400 naming the field", () =>
    Effect.gen(function*() {
      const { baseUrl } = yield* TestServer.TestServer
      const status = (path: string) =>
        Effect.promise(() => fetch(`${baseUrl}${path}`).then(async (r) => ({
          status: r.status,
          body: await r.json() as { readonly issues: ReadonlyArray<{ readonly path: ReadonlyArray<unknown> }> }
        })))
      const badLimit = yield* status("/workflow-runs?limit=0")
      assert.strictEqual(badLimit.status, 400)
      assert.deepStrictEqual(badLimit.body.issues[0]?.path, ["query", "limit"])
      const badState = yield* status("/workflow-runs?state=asleep")
      assert.deepStrictEqual(badState.body.issues[0]?.path, ["query", "state"])
      const badFrom = yield* status("/workflow-runs/counts?from=yesterday")
      assert.strictEqual(badFrom.status, 400)
      assert.deepStrictEqual(badFrom.body.issues[0]?.path, ["query", "from"])
    }))
})
}
