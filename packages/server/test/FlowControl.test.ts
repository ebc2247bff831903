/**
 * Flow control through the worker protocol: claims refused for a concurrency key, a workflow's limit, an ordering
 * key, a rate limit or a debounce delay leave the run pending and say what it waits for; it is offered again (a
 * new stream entry, a wake-up for pollers) when a run ends that held its slot or its turn, when its wait runs out,
 * or by the sweep when that offer was lost. Priorities order what a poll takes and which band stream a run goes to.
 */
import type { AikiClient } from "@aiki/contract/Client"
import type { FlowPolicy } from "@aiki/contract/FlowControl"
import type { LeaseEpoch, RunId, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { StartRun } from "@aiki/contract/Models"
import { eventually } from "@aiki/testing/eventually"
import { assert, layer } from "@effect/vitest"
import { DateTime, Effect } from "effect"
import { SqlClient } from "effect/sql"
import { Redis } from "ioredis"
import * as FlowOffers from "../src/FlowOffers.ts"
import * as Reaper from "../src/Reaper.ts"
import * as TestServer from "./support/TestServer.ts"

const version = "1.0.0" as WorkflowVersion
const worker = "flow-worker" as WorkerId
const replayVersion = 2

/** Registers `name` with the limits it declares (a worker would, from its workflow definition). */
const declare = (api: AikiClient, name: string, flowControl: FlowPolicy) =>
  api.execution.register({
    params: { id: worker },
    payload: { workflows: [{ name: name as WorkflowName, version, flowControl }] }
  })

const start = (api: AikiClient, name: string, options: Omit<StartRun, "payload"> & { readonly payload?: unknown } = {}) =>
  api.workflows.start({
    params: { name: name as WorkflowName, version },
    payload: { payload: null, ...options } as StartRun
  })

const claim = (api: AikiClient, ids: ReadonlyArray<RunId>) =>
  api.execution.claim({ params: { id: worker }, payload: { runIds: ids, replayVersion } })

const complete = (api: AikiClient, runId: RunId, leaseEpoch: LeaseEpoch) =>
  api.execution.write({ params: { id: worker }, payload: { writes: [{ _tag: "CompleteRun", runId, leaseEpoch, result: null }] } })

/** Claims `id` until it is granted (it was offered again); fails the test if it never is. */
const grantedEventually = (api: AikiClient, id: RunId) =>
  eventually(claim(api, [id]).pipe(Effect.flatMap((claims) =>
    claims.leases[0] !== undefined ? Effect.succeed(claims.leases[0]) : Effect.fail(claims.refused[0]?.message ?? "refused")
  )))

const waiting = (api: AikiClient, id: RunId) =>
  api.runs.status({ params: { id } }).pipe(Effect.map((run) => run.waitingFor))

for (const database of ["postgres", "embedded"] as const) {
  layer(TestServer.layer({ database, flowSweepIntervalMs: 100 }), { excludeTestServices: true })(
    `flow control (${database})`,
    (it) => {
      it.effect("holds a run back while its concurrency key is at its limit, and offers it when a slot frees", () =>
        Effect.gen(function*() {
          const api = yield* (yield* TestServer.TestServer).client()
          yield* declare(api, "per-customer", { concurrencyLimit: 2 })
          const runs = yield* Effect.forEach([1, 2, 3], () => start(api, "per-customer", { concurrencyKey: "customer-42" }))
          const other = yield* start(api, "per-customer", { concurrencyKey: "customer-7" })
          const claims = yield* claim(api, [...runs.map((r) => r.id), other.id])
          assert.deepStrictEqual(claims.leases.map((l) => l.run.id), [runs[0]!.id, runs[1]!.id, other.id])
          assert.deepStrictEqual(claims.refused.map((r) => [r.runId, r.reason]), [[runs[2]!.id, "concurrency_limit"]])
          const held = yield* api.runs.status({ params: { id: runs[2]!.id } })
          assert.strictEqual(held.state, "pending")
          assert.strictEqual(held.waitingFor?.message, "waiting for concurrency key customer-42 (2/2 running)")
          // Claimed again while the key is still full (a duplicate stream entry): still refused.
          assert.strictEqual((yield* claim(api, [runs[2]!.id])).refused[0]?.reason, "concurrency_limit")

          yield* complete(api, runs[0]!.id, claims.leases[0]!.leaseEpoch)
          // Offered at once by the completion's post-commit hook: no longer waiting, with a new stream message.
          yield* eventually(waiting(api, runs[2]!.id).pipe(Effect.flatMap((w) => w === undefined ? Effect.void : Effect.fail(w))))
          const sql = yield* SqlClient.SqlClient
          const messages = yield* sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM outbox WHERE run_id = ${runs[2]!.id}`
          assert.strictEqual(messages[0]!.n, 2)
          const lease = yield* grantedEventually(api, runs[2]!.id)
          assert.strictEqual(lease.run.concurrencyKey, "customer-42")
          const trail = yield* api.runs.transitions({ params: { id: runs[2]!.id } })
          assert.deepStrictEqual(trail.map((t) => `${t.fromState}->${t.toState}`), ["undefined->pending", "pending->running"])
        }))

      it.effect("grants at most the limit when many claims of one key race, and a start can lower the limit", () =>
        Effect.gen(function*() {
          const server = yield* TestServer.TestServer
          const api = yield* server.client()
          yield* declare(api, "racing", { concurrencyLimit: 3 })
          const runs = yield* Effect.forEach(Array.from({ length: 12 }), () => start(api, "racing", { concurrencyKey: "k" }))
          const fallbacks = TestServer.metric(server, "aiki_optimistic_fallbacks_total", { reason: "flow_control" })
          const before = yield* fallbacks
          // One request per run, all at once: several groups commit side by side.
          const claims = yield* Effect.forEach(runs, (r) => claim(api, [r.id]), { concurrency: "unbounded" })
          assert.strictEqual(claims.flatMap((c) => c.leases).length, 3)
          // Their grants depend on the key's count: every claim was decided under locks, none optimistically.
          assert.isAtLeast((yield* fallbacks) - before, 1)
          const lowered = yield* Effect.forEach([1, 2], () =>
            start(api, "racing", { concurrencyKey: "solo", concurrencyLimit: 1 }))
          const soloClaims = yield* claim(api, lowered.map((r) => r.id))
          assert.strictEqual(soloClaims.leases.length, 1)
          assert.strictEqual(soloClaims.refused[0]?.message, "waiting for concurrency key solo (1/1 running)")
        }))

      it.effect("holds a run back while its workflow is at its limit; the freed slot goes to the least busy key", () =>
        Effect.gen(function*() {
          const api = yield* (yield* TestServer.TestServer).client()
          yield* declare(api, "capped", { workflowLimit: 2 })
          const runs = yield* Effect.forEach(["busy", "busy", "busy", "quiet"], (key) => start(api, "capped", { concurrencyKey: key }))
          const [first, second, third, quiet] = runs.map((r) => r.id) as [RunId, RunId, RunId, RunId]
          const claims = yield* claim(api, [first, second, third, quiet])
          assert.deepStrictEqual(claims.leases.map((l) => l.run.id), [first, second])
          assert.deepStrictEqual(claims.refused.map((r) => r.reason), ["workflow_limit", "workflow_limit"])
          assert.strictEqual(claims.refused[0]?.message, "waiting for a slot of workflow capped (2/2 running)")
          // `busy` still has a run running and `quiet` none: the freed slot is offered to `quiet` although it is newer.
          yield* complete(api, first, claims.leases[0]!.leaseEpoch)
          yield* eventually(waiting(api, quiet).pipe(Effect.flatMap((w) => w === undefined ? Effect.void : Effect.fail(w))))
          assert.strictEqual((yield* waiting(api, third))?.reason, "workflow_limit")
          yield* grantedEventually(api, quiet)
        }))

      it.effect("runs an ordering key's runs one at a time in start order, even while the first waits to retry", () =>
        Effect.gen(function*() {
          const api = yield* (yield* TestServer.TestServer).client()
          const runs = yield* Effect.forEach([1, 2, 3], () => start(api, "ordered", { orderingKey: "order-7" }))
          const [first, second, third] = runs.map((r) => r.id) as [RunId, RunId, RunId]
          // Claimed newest first: only the oldest may run.
          const claims = yield* claim(api, [third, second, first])
          assert.deepStrictEqual(claims.leases.map((l) => l.run.id), [first])
          assert.deepStrictEqual(claims.refused.map((r) => r.reason), ["ordering", "ordering"])
          assert.strictEqual(claims.refused[1]?.message, `waiting for run ${first} (ordering key order-7) to finish`)
          // The first parks to retry a task later: the others still wait for it.
          const parked = yield* api.execution.write({
            params: { id: worker },
            payload: {
              writes: [{
                _tag: "ParkRun",
                runId: first,
                leaseEpoch: claims.leases[0]!.leaseEpoch,
                state: "awaiting_retry",
                wakeAt: DateTime.makeUnsafe(Date.now() - 1_000),
                events: []
              }]
            }
          })
          assert.strictEqual(parked.results[0]?._tag, "Written")
          yield* yield* FlowOffers.makeSweep
          assert.strictEqual((yield* claim(api, [second])).refused[0]?.reason, "ordering")
          assert.strictEqual(yield* Reaper.wakeDueRuns, 1)
          const again = yield* grantedEventually(api, first)
          yield* complete(api, first, again.leaseEpoch)
          const secondLease = yield* grantedEventually(api, second)
          assert.strictEqual((yield* claim(api, [third])).refused[0]?.reason, "ordering")
          yield* complete(api, second, secondLease.leaseEpoch)
          yield* grantedEventually(api, third)
        }))

      it.effect("starts at most the limit per period, and offers the rest when the window moves", () =>
        Effect.gen(function*() {
          const api = yield* (yield* TestServer.TestServer).client()
          yield* declare(api, "rated", { rateLimit: { limit: 2, periodMs: 1_000 } })
          const runs = yield* Effect.forEach([1, 2, 3], () => start(api, "rated"))
          const keyed = yield* start(api, "rated", { rateLimitKey: "tenant-b" })
          const claims = yield* claim(api, [...runs.map((r) => r.id), keyed.id])
          // The third run of the workflow's bucket waits; another bucket has room.
          assert.deepStrictEqual(claims.leases.map((l) => l.run.id), [runs[0]!.id, runs[1]!.id, keyed.id])
          const refused = claims.refused[0]!
          assert.strictEqual(refused.reason, "rate_limit")
          assert.match(refused.message, /^rate limited: 2 runs started per 1s; next start at /)
          const held = yield* api.runs.status({ params: { id: runs[2]!.id } })
          assert.isDefined(held.waitingFor?.until)
          // The sweep offers it once the oldest start left the window.
          const lease = yield* grantedEventually(api, runs[2]!.id)
          assert.isAtLeast(
            Number(lease.run.startedAt!.epochMilliseconds) - Number(claims.leases[0]!.run.startedAt!.epochMilliseconds),
            990
          )
        }))

      it.effect("debounces: later starts replace the unstarted run's payload, which starts once they stop", () =>
        Effect.gen(function*() {
          const server = yield* TestServer.TestServer
          const api = yield* server.client()
          const debounce = { key: "profile-1", delayMs: 400 }
          const first = yield* start(api, "debounced", { payload: { n: 1 }, debounce })
          const second = yield* start(api, "debounced", { payload: { n: 2 }, debounce })
          const third = yield* start(api, "debounced", { payload: { n: 3 }, debounce })
          assert.isTrue(first.created)
          assert.deepStrictEqual([second.id, second.created, second.debounced], [first.id, false, true])
          assert.strictEqual(third.id, first.id)
          const held = yield* api.runs.status({ params: { id: first.id } })
          assert.strictEqual(held.waitingFor?.reason, "debounce")
          assert.strictEqual(held.debounceKey, "profile-1")
          assert.strictEqual((yield* claim(api, [first.id])).refused[0]?.reason, "debounce")
          const lease = yield* grantedEventually(api, first.id)
          assert.deepStrictEqual(lease.run.payload, { n: 3 })
          // It started: the next start under the key is a new run.
          const later = yield* start(api, "debounced", { payload: { n: 4 }, debounce })
          assert.notStrictEqual(later.id, first.id)
          assert.isTrue(later.created)
          // A debounced start takes no idempotency key: the server says which field is wrong.
          const response = yield* Effect.promise(() =>
            fetch(`${server.baseUrl}/workflows/debounced/versions/1.0.0/start`, {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({ payload: null, idempotencyKey: "k", debounce })
            })
          )
          assert.strictEqual(response.status, 400)
          const body = yield* Effect.promise(() => response.json() as Promise<{ _tag: string; issues: Array<{ path: Array<string> }> }>)
          assert.strictEqual(body._tag, "InvalidRequest")
          assert.deepStrictEqual(body.issues.map((i) => i.path), [["body", "debounce"]])
        }))

      it.effect("caps how long a debounced run is pushed back at its max delay", () =>
        Effect.gen(function*() {
          const api = yield* (yield* TestServer.TestServer).client()
          const debounce = { key: "busy", delayMs: 300, maxDelayMs: 700 }
          const first = yield* start(api, "debounced-max", { payload: 0, debounce })
          // Replaced every 100 ms for longer than the max delay: without the cap it would wait for ever.
          for (let i = 1; i <= 10; i++) {
            yield* Effect.sleep("100 millis")
            const next = yield* start(api, "debounced-max", { payload: i, debounce })
            assert.strictEqual(next.id, first.id)
          }
          const lease = yield* grantedEventually(api, first.id)
          assert.strictEqual(lease.run.payload, 10)
        }))

      it.effect("takes the highest priority first when polling, and publishes each band to its stream", () =>
        Effect.gen(function*() {
          const server = yield* TestServer.TestServer
          const api = yield* server.client()
          yield* declare(api, "prioritized", { priority: 3 })
          const low = yield* start(api, "prioritized")
          const normal = yield* start(api, "prioritized", { priority: 5 })
          const high = yield* start(api, "prioritized", { priority: 9 })
          assert.strictEqual((yield* api.runs.status({ params: { id: low.id } })).priority, 3)
          const poll = (max: number) =>
            api.execution.poll({
              params: { id: worker },
              payload: { workflows: [{ name: "prioritized" as WorkflowName, version }], max, replayVersion }
            })
          assert.deepStrictEqual((yield* poll(1)).map((l) => l.run.id), [high.id])
          assert.deepStrictEqual((yield* poll(2)).map((l) => l.run.id), [normal.id, low.id])
          if (database === "postgres") {
            const redis = new Redis(TestServer.sharedRedisUrl)
            const entries = (band: string) =>
              Effect.promise(() => redis.xrange(`{${server.redisPrefix}}:workflow:prioritized:1.0.0${band}`, "-", "+"))
                .pipe(Effect.map((items) => items.map(([, fields]) => fields[1])))
            yield* eventually(Effect.gen(function*() {
              assert.deepStrictEqual(yield* entries(":high"), [high.id])
              assert.deepStrictEqual(yield* entries(""), [normal.id])
              assert.deepStrictEqual(yield* entries(":low"), [low.id])
            }))
            redis.disconnect()
          }
        }))

      it.effect("offers a run a crash left waiting although its key has room (the sweep)", () =>
        Effect.gen(function*() {
          const api = yield* (yield* TestServer.TestServer).client()
          const sql = yield* SqlClient.SqlClient
          yield* declare(api, "swept", { concurrencyLimit: 1 })
          const run = yield* start(api, "swept", { concurrencyKey: "k" })
          // As if refused while the key was full, and the run that freed it ended on a server that died.
          yield* sql`UPDATE workflow_runs SET waiting_reason = 'concurrency_limit', waiting_message = 'test' WHERE id = ${run.id}`
          assert.strictEqual((yield* waiting(api, run.id))?.reason, "concurrency_limit")
          yield* eventually(waiting(api, run.id).pipe(Effect.flatMap((w) => w === undefined ? Effect.void : Effect.fail(w))))
          yield* grantedEventually(api, run.id)
        }))
    }
  )
}
