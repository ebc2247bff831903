/**
 * Flow control end to end: a real server process, Redis Streams, real workers. Priorities (a later high-priority
 * run goes before earlier low ones on a busy worker), concurrency keys (never more than the limit running per key,
 * checked from the audit trail, every run completing, keys interleaved), an ordering key (strictly in start order,
 * even when a run fails and waits to retry), a rate limit, and debounce.
 */
import type { RunId } from "@aiki/contract/Ids"
import { assert, layer } from "@effect/vitest"
import { eventually } from "@aiki/testing/eventually"
import { Context, Effect, Latch, Layer, Schema } from "effect"
import { AikiClient } from "../src/AikiClient.ts"
import * as Task from "../src/Task.ts"
import * as Worker from "../src/Worker.ts"
import * as Workflow from "../src/Workflow.ts"
import * as AikiServer from "./support/AikiServer.ts"
import { mostAtOnce, runningSpans } from "./support/AuditTrail.ts"

/** What the tasks did, in the order they did it. */
const executed: Array<string> = []

const Record = Task.make("record", {
  payload: Schema.String,
  success: Schema.String,
  run: (what) => Effect.sync(() => (executed.push(what), what))
})

const gate = Latch.makeUnsafe(false)

/** Holds its worker's only slot until the test opens the gate. */
const Busy = Workflow.make("flow-busy", "1.0.0", {
  payload: Schema.Null,
  success: Schema.Null,
  run: () => Task.make("hold", { payload: Schema.Null, success: Schema.Null, run: () => Latch.await(gate).pipe(Effect.as(null)) }).start(null)
})

/** Low priority unless a start says otherwise. */
const Prioritized = Workflow.make("flow-prioritized", "1.0.0", {
  payload: Schema.String,
  success: Schema.String,
  priority: 2,
  run: (name) => Record.start(`priority:${name}`)
})

const Pause = Task.make("pause", {
  payload: Schema.Number,
  success: Schema.Number,
  run: (n) => Effect.as(Effect.sleep("150 millis"), n)
})

/** At most two runs per customer at once. */
const PerCustomer = Workflow.make("flow-per-customer", "1.0.0", {
  payload: Schema.Struct({ customer: Schema.String, n: Schema.Number }),
  success: Schema.Number,
  concurrency: { key: (p) => p.customer, limit: 2 },
  run: (p) => Pause.start(p.n)
})

let flakyAttempts = 0

/** Fails its first attempt and waits long enough to retry that its run parks on the server. */
const FlakyStep = Task.make("flaky-step", {
  payload: Schema.Number,
  success: Schema.Number,
  retry: { type: "fixed", maxAttempts: 2, delayMs: 1_000 },
  run: (n) => Effect.suspend(() => ++flakyAttempts === 1 ? Effect.die(new Error("not yet")) : Effect.succeed(n))
})

/** The runs of one account, one at a time in the order they were started. */
const PerAccount = Workflow.make("flow-per-account", "1.0.0", {
  payload: Schema.Struct({ account: Schema.String, n: Schema.Number }),
  success: Schema.Number,
  ordering: { key: (p) => p.account },
  run: (p) =>
    Effect.gen(function*() {
      yield* Record.start(`ordered:${p.n}:start`)
      if (p.n === 2) yield* FlakyStep.start(p.n)
      else yield* Pause.start(p.n)
      yield* Record.start(`ordered:${p.n}:end`)
      return p.n
    })
})

/** At most two runs started per second. */
const RateLimited = Workflow.make("flow-rate-limited", "1.0.0", {
  payload: Schema.Number,
  success: Schema.Number,
  rateLimit: { limit: 2, period: "1 second" },
  run: (n) => Record.start(`rated:${n}`).pipe(Effect.as(n))
})

/** Refreshes a profile once things calm down. */
const Refresh = Workflow.make("flow-refresh", "1.0.0", {
  payload: Schema.Struct({ version: Schema.Number }),
  success: Schema.Number,
  run: (p) => Record.start(`refresh:${p.version}`).pipe(Effect.as(p.version))
})

class Server extends Context.Service<Server, AikiServer.AikiServer>()("test/Server") {}

const workerOptions = {
  subscriber: { type: "redis_streams" as const, blockTimeMs: 200 },
  workflowRun: { heartbeatIntervalMs: 1_000, suspendAfterMs: 500 }
}

const TestLayer = Layer.unwrap(Effect.gen(function*() {
  const server = yield* AikiServer.make({ FLOW_SWEEP_INTERVAL_MS: "200" })
  const client = AikiClient.layer({ baseUrl: server.baseUrl, redis: { url: AikiServer.redisUrl } })
  const workers = Layer.mergeAll(
    Worker.layer({ ...workerOptions, id: "busy-worker", workflows: [Busy, Prioritized], maxConcurrentWorkflowRuns: 1 }),
    ...[1, 2, 3].map((i) => Worker.layer({ ...workerOptions, id: `keyed-worker-${i}`, workflows: [PerCustomer], maxConcurrentWorkflowRuns: 4 })),
    ...[1, 2].map((i) => Worker.layer({ ...workerOptions, id: `ordered-worker-${i}`, workflows: [PerAccount], maxConcurrentWorkflowRuns: 4 })),
    Worker.layer({ ...workerOptions, id: "misc-worker", workflows: [RateLimited, Refresh], maxConcurrentWorkflowRuns: 8 })
  )
  return workers.pipe(Layer.provideMerge(client), Layer.provideMerge(Layer.succeed(Server, server)))
}))

layer(TestLayer, { excludeTestServices: true, timeout: 90_000 })("flow control", (it) => {
  it.effect("hands a busy worker's next slot to a later high-priority run before earlier low ones", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const busy = yield* aiki.start(Busy, null)
      yield* eventually(busy.status.pipe(Effect.flatMap((run) => run.state === "running" ? Effect.void : Effect.fail(run.state))))
      const low = yield* Effect.forEach(["low-1", "low-2", "low-3"], (name) => aiki.start(Prioritized, name))
      const high = yield* aiki.start(Prioritized, "high", { priority: 9 })
      assert.strictEqual((yield* low[0]!.status).priority, 2)
      yield* gate.open
      yield* Effect.forEach([busy, ...low, high], (run) => run.result({ timeoutMs: 20_000 }), { discard: true })
      assert.deepStrictEqual(executed.filter((e) => e.startsWith("priority:")), [
        "priority:high",
        "priority:low-1",
        "priority:low-2",
        "priority:low-3"
      ])
    }))

  it.effect("never runs more than the limit per concurrency key, completes every run, and interleaves keys", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      // One key's runs all started before the next key's: a busy key must not starve the others.
      const keys = [...Array(7).fill("c-1"), ...Array(7).fill("c-2"), ...Array(6).fill("c-3")] as Array<string>
      const runs = yield* Effect.forEach(keys, (customer, n) => aiki.start(PerCustomer, { customer, n }))
      const results = yield* Effect.forEach(runs, (run) => run.result({ timeoutMs: 40_000 }), { concurrency: "unbounded" })
      assert.deepStrictEqual(results, keys.map((_, n) => n))
      const spans = yield* runningSpans(runs.map((r) => r.id))
      for (const customer of ["c-1", "c-2", "c-3"]) {
        const ofKey = spans.filter((s) => keys[runs.findIndex((r) => r.id === s.id)] === customer)
        assert.strictEqual(mostAtOnce(ofKey), 2, `runs of ${customer} running at once`)
      }
      // Up to six ran at once across the three keys, and the last keys started long before the first one's end.
      assert.isAbove(mostAtOnce(spans), 2)
      const startOf = (customer: string) =>
        Math.min(...spans.filter((s) => keys[runs.findIndex((r) => r.id === s.id)] === customer).map((s) => s.from))
      const lastOfFirstKey = Math.max(...spans.filter((s) => keys[runs.findIndex((r) => r.id === s.id)] === "c-1").map((s) => s.from))
      assert.isBelow(startOf("c-2"), lastOfFirstKey)
      assert.isBelow(startOf("c-3"), lastOfFirstKey)
      // While they waited, runs said why.
      const trails = yield* Effect.forEach(runs, (run) => aiki.api.runs.transitions({ params: { id: run.id } }))
      for (const trail of trails) {
        assert.strictEqual(
          trail[trail.length - 1]!.toState,
          "completed",
          `a completed run's trail ends in its completion: ${JSON.stringify(trail.map((t) => [t.taskAddress ?? "run", t.fromState, t.toState, t.reason]))}`
        )
      }
    }))

  it.effect("runs an ordering key's runs strictly in start order, even while one fails and waits to retry", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const runs = yield* Effect.forEach([1, 2, 3, 4], (n) => aiki.start(PerAccount, { account: "acct-9", n }))
      const other = yield* aiki.start(PerAccount, { account: "acct-other", n: 10 })
      yield* Effect.forEach([...runs, other], (run) => run.result({ timeoutMs: 40_000 }), { discard: true })
      const ofAccount = executed.filter((e) => e.startsWith("ordered:") && !e.startsWith("ordered:10:"))
      assert.deepStrictEqual(ofAccount, [1, 2, 3, 4].flatMap((n) => [`ordered:${n}:start`, `ordered:${n}:end`]))
      // The second run parked to retry its step; the third waited for it.
      const trail = yield* aiki.api.runs.transitions({ params: { id: runs[1]!.id } })
      assert.include(trail.map((t) => t.toState), "awaiting_retry")
      const spans = yield* runningSpans(runs.map((r) => r.id))
      const finished = (id: RunId) => Math.max(...spans.filter((s) => s.id === id).map((s) => s.to))
      const started = (id: RunId) => Math.min(...spans.filter((s) => s.id === id).map((s) => s.from))
      for (let i = 1; i < runs.length; i++) assert.isAtLeast(started(runs[i]!.id), finished(runs[i - 1]!.id))
    }))

  it.effect("starts at most the rate limit per period; the others wait and start later", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const runs = yield* Effect.forEach([1, 2, 3, 4, 5], (n) => aiki.start(RateLimited, n))
      yield* Effect.forEach(runs, (run) => run.result({ timeoutMs: 20_000 }), { discard: true })
      const starts = (yield* Effect.forEach(runs, (run) => run.status)).map((r) => Number(r.startedAt!.epochMilliseconds))
        .sort((a, b) => a - b)
      // Any three starts span at least the period.
      for (let i = 2; i < starts.length; i++) assert.isAtLeast(starts[i]! - starts[i - 2]!, 990)
    }))

  it.effect("debounces starts: the run starts once, with the newest payload, after the starts calm down", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const debounce = { key: "profile-7", delay: "400 millis" } as const
      const runs = yield* Effect.forEach([1, 2, 3, 4], (version) =>
        aiki.start(Refresh, { version }, { debounce }).pipe(Effect.tap(() => Effect.sleep("100 millis"))))
      assert.deepStrictEqual(new Set(runs.map((r) => r.id)).size, 1)
      assert.strictEqual(yield* runs[0]!.result({ timeoutMs: 20_000 }), 4)
      assert.deepStrictEqual(executed.filter((e) => e.startsWith("refresh:")), ["refresh:4"])
      const status = yield* runs[0]!.status
      const waited = Number(status.startedAt!.epochMilliseconds) - Number(status.createdAt.epochMilliseconds)
      assert.isAtLeast(waited, 700)
      // Once it started, the key starts a new run.
      const next = yield* aiki.start(Refresh, { version: 5 }, { debounce })
      assert.notStrictEqual(next.id, runs[0]!.id)
      assert.strictEqual(yield* next.result({ timeoutMs: 20_000 }), 5)
    }))
})
