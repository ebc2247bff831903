/**
 * Events and patches with real worker processes: only the awaited name wakes a parked run; an event id makes
 * sending idempotent; a timed wait ends on the server's clock even with no worker alive; a race of an event and a
 * long sleep ends with the event (promise and Effect API); `patched` answers false for a run that passed the point
 * under the old code, true for one that reaches it after the change and for new runs.
 */
import type { RunId } from "@aiki/contract/Ids"
import { eventually } from "@aiki/testing/eventually"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { AikiClient } from "../src/AikiClient.ts"
import * as Fixtures from "./fixtures/events.ts"
import * as AikiServer from "./support/AikiServer.ts"
import * as WorkerProcess from "./support/WorkerProcess.ts"

class Server extends Context.Service<Server, AikiServer.AikiServer>()("test/Server") {}

const TestLayer = Layer.unwrap(Effect.gen(function*() {
  const server = yield* AikiServer.make()
  return AikiClient.layer({ baseUrl: server.baseUrl }).pipe(Layer.provideMerge(Layer.succeed(Server, server)))
}))

/** A fixture worker process for the current scope (SIGKILLed when it closes). */
const worker = (id: string, env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const server = yield* Server
    return yield* WorkerProcess.start({
      AIKI_URL: server.baseUrl,
      REDIS_URL: AikiServer.redisUrl,
      WORKER_ID: id,
      HEARTBEAT_MS: "400",
      ...env
    })
  })

const state = (id: RunId) => Effect.flatMap(AikiClient, (aiki) => Effect.map(aiki.api.runs.status({ params: { id } }), (r) => r.state))

const trail = (id: RunId) =>
  Effect.flatMap(AikiClient, (aiki) =>
    Effect.map(aiki.api.runs.transitions({ params: { id } }), (ts) =>
      ts.filter((t) => t.taskAddress === undefined).map((t) => `${t.fromState}->${t.toState}:${t.reason}`)))

const parked = (id: RunId) =>
  eventually(Effect.gen(function*() {
    assert.strictEqual(yield* state(id), "awaiting_event")
  }), { timeoutMs: 20_000 })

layer(TestLayer, { excludeTestServices: true, timeout: 90_000 })("events", (it) => {
  it.effect("only the awaited name wakes a parked run; an event id makes sending idempotent", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      yield* worker("events-a")
      const run = yield* aiki.start(Fixtures.twoApprovals.effect, null)
      yield* parked(run.id)
      const before = yield* trail(run.id)

      // Another name: kept, but nothing happens to the run: no wake-up, no claim, no transition.
      const other = yield* run.sendEvent("shipment", { carrier: "ups" })
      assert.strictEqual(other.runState, "awaiting_event")
      yield* Effect.sleep("1500 millis") // three reaper rounds
      assert.strictEqual(yield* state(run.id), "awaiting_event")
      assert.deepStrictEqual(yield* trail(run.id), before)

      // The awaited name, with an id; sent again (a retried webhook): one event.
      const sent = yield* run.sendEvent("approval", { by: "ann" }, { eventId: "delivery-1" })
      assert.deepStrictEqual([sent.eventId, sent.duplicate], ["delivery-1", undefined])
      const again = yield* run.sendEvent("approval", { by: "ann" }, { eventId: "delivery-1" })
      assert.deepStrictEqual([again.eventId, again.duplicate], ["delivery-1", true])
      // The same id for another payload is refused, naming the id.
      const conflict = yield* run.sendEvent("approval", { by: "bob" }, { eventId: "delivery-1" }).pipe(Effect.flip)
      assert.strictEqual(conflict._tag, "EventConflict")
      // The run received the first and waits for a second approval: the duplicate was not kept for it.
      yield* eventually(Effect.gen(function*() {
        const tasks = yield* aiki.api.runs.tasks({ params: { id: run.id } })
        assert.deepStrictEqual(tasks.map((t) => [t.name, t.state]), [["aiki.event", "completed"], ["aiki.event", "running"]])
        assert.strictEqual(yield* state(run.id), "awaiting_event")
      }), { timeoutMs: 20_000 })
      // A duplicate of an event already received is still recognised.
      const late = yield* run.sendEvent("approval", { by: "ann" }, { eventId: "delivery-1" })
      assert.strictEqual(late.duplicate, true)
      assert.strictEqual(late.runState, "awaiting_event")
      yield* run.sendEvent("approval", { by: "cy" }, { eventId: "delivery-2" })
      assert.deepStrictEqual(yield* run.result({ timeoutMs: 20_000 }), [{ by: "ann" }, { by: "cy" }])
      const woken = (yield* trail(run.id)).filter((t) => t === "awaiting_event->pending:event_received")
      assert.strictEqual(woken.length, 2)
      // Sent again after the run finished (a webhook retried late): still a duplicate, not an error.
      const afterEnd = yield* run.sendEvent("approval", { by: "cy" }, { eventId: "delivery-2" })
      assert.deepStrictEqual([afterEnd.duplicate, afterEnd.runState], [true, "completed"])
    }).pipe(Effect.scoped), 60_000)

  it.effect("a timed wait ends on the server's clock with no worker alive; a later event is kept for the next wait", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const run = yield* Effect.scoped(Effect.gen(function*() {
        const first = yield* worker("events-timeout-a")
        const run = yield* aiki.start(Fixtures.approvalWithin.effect, { timeoutMs: 2_500 })
        yield* parked(run.id)
        yield* WorkerProcess.signal(first, "SIGKILL")
        return run
      }))
      // No worker: the server wakes the run at its deadline (wake_at, the database's clock).
      yield* eventually(Effect.gen(function*() {
        assert.include(yield* trail(run.id), "awaiting_event->pending:woken")
      }), { timeoutMs: 20_000 })
      assert.strictEqual(yield* state(run.id), "pending")
      // Sent after the deadline: not received by the timed-out wait, kept for the next one.
      yield* run.sendEvent("approval", { by: "late" })
      yield* worker("events-timeout-b")
      assert.deepStrictEqual(yield* run.result({ timeoutMs: 30_000 }), {
        first: { timedOut: true },
        second: { timedOut: false, payload: { by: "late" } }
      })

      // Effect API: a typed Option; an event in time is Some.
      const effectRun = yield* aiki.start(Fixtures.effectGoWithin, 30_000)
      yield* parked(effectRun.id)
      yield* effectRun.sendEvent(Fixtures.Go, { n: 7 })
      assert.deepStrictEqual(yield* effectRun.result({ timeoutMs: 20_000 }), { via: "event", n: 7 })
    }).pipe(Effect.scoped), 60_000)

  it.effect("a race of an event and a 20 s sleep ends with the event (promise and Effect API)", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      yield* worker("events-race")
      const promiseRun = yield* aiki.start(Fixtures.eventOrSleep.effect, null)
      const effectRun = yield* aiki.start(Fixtures.effectEventOrSleep, null)
      yield* parked(promiseRun.id)
      yield* parked(effectRun.id)
      const sentAt = Date.now()
      yield* promiseRun.sendEvent("go", { n: 1 })
      yield* effectRun.sendEvent(Fixtures.Go, { n: 2 })
      assert.deepStrictEqual(yield* promiseRun.result({ timeoutMs: 15_000 }), { via: "event", n: 1 })
      assert.deepStrictEqual(yield* effectRun.result({ timeoutMs: 15_000 }), { via: "event", n: 2 })
      // Long before the sleep would have ended, and the run completed rather than parking again for it.
      assert.isBelow(Date.now() - sentAt, 10_000)
      for (const id of [promiseRun.id, effectRun.id]) {
        const steps = yield* trail(id)
        assert.strictEqual(steps.at(-1), "running->completed:completed")
        assert.strictEqual(steps.filter((s) => s.endsWith(":suspended")).length, 1)
      }
    }).pipe(Effect.scoped), 60_000)

  it.effect("patched(): false for a run that passed the point under the old code, true after the change", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const journalOf = (id: RunId) => Effect.map(aiki.api.runs.tasks({ params: { id } }), (ts) => ts.map((t) => t.name))
      const [passed, before] = yield* Effect.scoped(Effect.gen(function*() {
        yield* worker("patch-old", { PATCH_DEPLOYED: "0" })
        const passed = yield* aiki.start(Fixtures.patchable.effect, "passed")
        const before = yield* aiki.start(Fixtures.patchable.effect, "before")
        yield* parked(passed.id)
        yield* parked(before.id)
        // `passed` goes past the patch point under the old code and waits at its second event.
        yield* passed.sendEvent("go", null)
        yield* eventually(Effect.gen(function*() {
          assert.deepStrictEqual(yield* journalOf(passed.id), ["aiki.event", "aiki.event"])
          assert.strictEqual(yield* state(passed.id), "awaiting_event")
        }), { timeoutMs: 20_000 })
        return [passed, before] as const
      }))
      // The change is deployed.
      yield* worker("patch-new", { PATCH_DEPLOYED: "1" })
      const fresh = yield* aiki.start(Fixtures.patchable.effect, "fresh")
      for (const run of [passed, before, fresh]) {
        if (run !== passed) yield* run.sendEvent("go", null)
        yield* run.sendEvent("finish", null)
      }
      assert.deepStrictEqual(yield* passed.result({ timeoutMs: 20_000 }), { greeting: null })
      assert.deepStrictEqual(yield* before.result({ timeoutMs: 20_000 }), { greeting: "hello before" })
      assert.deepStrictEqual(yield* fresh.result({ timeoutMs: 20_000 }), { greeting: "hello fresh" })
      assert.deepStrictEqual(yield* journalOf(passed.id), ["aiki.event", "aiki.event"])
      for (const run of [before, fresh]) {
        assert.deepStrictEqual(yield* journalOf(run.id), ["aiki.event", "aiki.patch", "greet", "aiki.event"])
      }
    }).pipe(Effect.scoped), 60_000)
})
