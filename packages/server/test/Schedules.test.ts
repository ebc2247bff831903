/**
 * Schedules against a real database, with time driven by `TestClock`: the fire times that come start one run each
 * (the same fire time twice starts nothing more), the overlap policies while the previous run is going, a bounded
 * catch-up after the servers were down (older fire times skipped and counted), backfill, pause and resume, a
 * manual trigger, jitter, cron expressions in a time zone, the schedule a workflow version declares, and the API's
 * typed errors.
 */
import type { AikiClient } from "@aiki/contract/Client"
import type { LeaseEpoch, RunId, ScheduleId, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { CreateSchedule } from "@aiki/contract/Schedules"
import { assert, layer } from "@effect/vitest"
import { Clock, Context, DateTime, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { TestClock } from "effect/testing"
import { jitterOf } from "../src/internal/fireTimes.ts"
import { Schedules } from "../src/Schedules.ts"
import * as TestServer from "./support/TestServer.ts"

const name = "report" as WorkflowName
const version = "1.0.0" as WorkflowVersion
const worker = "schedule-worker" as WorkerId
/** A minute boundary, so that intervals of seconds fire at round times. */
const t0 = Math.floor(Date.now() / 60_000) * 60_000
const seconds = (n: number) => t0 + n * 1_000
const iso = (ms: number) => new Date(ms).toISOString()

/** A clock the test moves; the schedule operations read it (the engine and the database keep their own). */
const withClock = Effect.gen(function*() {
  const clock = yield* TestClock.make()
  yield* clock.setTime(t0)
  const at = <A, E, R>(ms: number, effect: Effect.Effect<A, E, R>) =>
    Effect.flatMap(clock.setTime(ms), () => Effect.provideService(effect, Clock.Clock, clock))
  return { at }
})

/** Uses the server's schedules directly (under the test's clock). */
const schedules = <A, E, R>(f: (service: Schedules["Service"]) => Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    return yield* f(yield* Schedules)
  })

const create = (input: Omit<Partial<CreateSchedule>, "id"> & { readonly id: string }) =>
  schedules((s) =>
    s.create({
      workflowName: name,
      workflowVersion: version,
      spec: { everyMs: 10_000 },
      ...input,
      id: input.id as ScheduleId
    })
  )

const show = (id: string) => schedules((s) => s.get(id as ScheduleId)).pipe(Effect.orDie)

/** The fire times (ISO) of the schedule's runs, oldest first. */
const firedFor = (id: string) =>
  show(id).pipe(Effect.map((s) => s.lastRuns.map((r) => DateTime.formatIso(r.scheduledFor)).reverse()))

const fireDue = schedules((s) => s.fireDue)

/** Runs a run to completion through the worker protocol, as a worker would. */
const finish = (api: AikiClient, runId: RunId) =>
  Effect.gen(function*() {
    const claims = yield* api.execution.claim({ params: { id: worker }, payload: { runIds: [runId], replayVersion: 2 } })
    const leaseEpoch = claims.leases[0]!.leaseEpoch as LeaseEpoch
    yield* api.execution.write({
      params: { id: worker },
      payload: { writes: [{ _tag: "CompleteRun", runId, leaseEpoch, result: null }] }
    })
  })

const lastRun = (id: string) => show(id).pipe(Effect.map((s) => s.lastRuns[0]!.runId))

layer(TestServer.layer({ schedulerIntervalMs: 3_600_000 }), { excludeTestServices: true })("schedules", (it) => {
  it.effect("starts one run per fire time that came, and none again for the same fire time", () =>
    Effect.gen(function*() {
      const { at } = yield* withClock
      const created = yield* at(seconds(0), create({ id: "every-10s", overlap: "allow_all", payload: { report: "daily" } }))
      assert.deepStrictEqual(created.nextFireTimes.slice(0, 2).map(DateTime.formatIso), [iso(seconds(10)), iso(seconds(20))])
      yield* at(seconds(9), fireDue)
      assert.deepStrictEqual(yield* firedFor("every-10s"), [])
      yield* at(seconds(10), fireDue)
      yield* at(seconds(10), fireDue)
      assert.deepStrictEqual(yield* firedFor("every-10s"), [iso(seconds(10))])
      yield* at(seconds(25), fireDue)
      assert.deepStrictEqual(yield* firedFor("every-10s"), [iso(seconds(10)), iso(seconds(20))])
      const api = yield* (yield* TestServer.TestServer).client()
      const run = yield* api.runs.status({ params: { id: yield* lastRun("every-10s") } })
      assert.deepStrictEqual(run.payload, { report: "daily" })
      assert.strictEqual(run.scheduleId, "every-10s")
      assert.strictEqual(run.idempotencyKey, `schedule:every-10s:${iso(seconds(20))}`)
    }))

  it.effect("skips a fire time while the previous run is going (skip), and counts it", () =>
    Effect.gen(function*() {
      const { at } = yield* withClock
      const api = yield* (yield* TestServer.TestServer).client()
      yield* at(seconds(0), create({ id: "skipping" }))
      yield* at(seconds(10), fireDue)
      yield* at(seconds(20), fireDue)
      assert.strictEqual((yield* show("skipping")).skippedCount, 1)
      yield* finish(api, yield* lastRun("skipping"))
      yield* at(seconds(30), fireDue)
      assert.deepStrictEqual(yield* firedFor("skipping"), [iso(seconds(10)), iso(seconds(30))])
      assert.strictEqual((yield* show("skipping")).skippedCount, 1)
    }))

  it.effect("buffers one fire time while the previous run is going (buffer_one), and starts it when it ends", () =>
    Effect.gen(function*() {
      const { at } = yield* withClock
      const api = yield* (yield* TestServer.TestServer).client()
      yield* at(seconds(0), create({ id: "buffering", overlap: "buffer_one" }))
      yield* at(seconds(10), fireDue)
      yield* at(seconds(20), fireDue)
      yield* at(seconds(30), fireDue)
      const buffered = yield* show("buffering")
      // The later fire time replaced the buffered one, which counts as skipped.
      assert.strictEqual(DateTime.formatIso(buffered.bufferedFireAt!), iso(seconds(30)))
      assert.strictEqual(buffered.skippedCount, 1)
      yield* finish(api, yield* lastRun("buffering"))
      yield* at(seconds(35), fireDue)
      assert.deepStrictEqual(yield* firedFor("buffering"), [iso(seconds(10)), iso(seconds(30))])
      assert.isUndefined((yield* show("buffering")).bufferedFireAt)
    }))

  it.effect("cancels the previous run (cancel_previous), or starts regardless (allow_all)", () =>
    Effect.gen(function*() {
      const { at } = yield* withClock
      const api = yield* (yield* TestServer.TestServer).client()
      yield* at(seconds(0), create({ id: "cancelling", overlap: "cancel_previous" }))
      yield* at(seconds(10), fireDue)
      const first = yield* lastRun("cancelling")
      yield* at(seconds(20), fireDue)
      assert.strictEqual((yield* api.runs.status({ params: { id: first } })).state, "cancelled")
      assert.deepStrictEqual(yield* firedFor("cancelling"), [iso(seconds(10)), iso(seconds(20))])
      yield* at(seconds(0), create({ id: "overlapping", overlap: "allow_all" }))
      yield* at(seconds(10), fireDue)
      yield* at(seconds(20), fireDue)
      const runs = (yield* show("overlapping")).lastRuns
      assert.deepStrictEqual(runs.map((r) => r.state), ["pending", "pending"])
    }))

  it.effect("catches up only the fire times within the window after the servers were down, counting the rest", () =>
    Effect.gen(function*() {
      const { at } = yield* withClock
      yield* at(seconds(0), create({ id: "down-allow", overlap: "allow_all", catchUpWindowMs: 60_000 }))
      yield* at(seconds(0), create({ id: "down-skip", catchUpWindowMs: 60_000 }))
      // Down for three minutes: 18 fire times passed, those of the last minute (120 s … 180 s) are within the window.
      yield* at(seconds(180), fireDue)
      const allowed = yield* show("down-allow")
      assert.deepStrictEqual(yield* firedFor("down-allow"), [120, 130, 140, 150, 160, 170, 180].map((s) => iso(seconds(s))))
      assert.strictEqual(allowed.skippedCount, 11)
      // Skip starts the first of them; the others overlap it.
      assert.deepStrictEqual(yield* firedFor("down-skip"), [iso(seconds(120))])
      assert.strictEqual((yield* show("down-skip")).skippedCount, 17)
      assert.strictEqual(DateTime.formatIso((yield* show("down-skip")).nextFireTimes[0]!), iso(seconds(190)))
    }))

  it.effect("backfills a past range once, and refuses a range that is empty or too large, naming the field", () =>
    Effect.gen(function*() {
      const { at } = yield* withClock
      const api = yield* (yield* TestServer.TestServer).client()
      yield* at(seconds(0), create({ id: "backfilled", spec: { everyMs: 60_000 } }))
      const range = { from: DateTime.makeUnsafe(t0 - 5 * 60_000), to: DateTime.makeUnsafe(t0) }
      const first = yield* api.schedules.backfill({ params: { id: "backfilled" as ScheduleId }, payload: range })
      assert.deepStrictEqual([first.fireTimes, first.started], [5, 5])
      const again = yield* api.schedules.backfill({ params: { id: "backfilled" as ScheduleId }, payload: range })
      assert.deepStrictEqual([again.fireTimes, again.started], [5, 0])
      assert.deepStrictEqual(again.runIds, first.runIds)
      assert.deepStrictEqual((yield* firedFor("backfilled")).length, 5)
      const empty = yield* api.schedules.backfill({
        params: { id: "backfilled" as ScheduleId },
        payload: { from: range.to, to: range.from }
      }).pipe(Effect.flip)
      assert.strictEqual(empty._tag, "InvalidRequest")
      const huge = yield* api.schedules.backfill({
        params: { id: "backfilled" as ScheduleId },
        payload: { from: DateTime.makeUnsafe(t0 - 10 * 86_400_000), to: range.to }
      }).pipe(Effect.flip)
      assert.strictEqual(huge._tag, "InvalidRequest")
      if (huge._tag === "InvalidRequest") assert.deepStrictEqual(huge.issues[0]!.path, ["to"])
    }))

  it.effect("starts nothing while paused, and resumes from the next fire time without catching up", () =>
    Effect.gen(function*() {
      const { at } = yield* withClock
      const api = yield* (yield* TestServer.TestServer).client()
      yield* at(seconds(0), create({ id: "paused" }))
      const paused = yield* api.schedules.pause({ params: { id: "paused" as ScheduleId } })
      assert.isTrue(paused.paused)
      assert.deepStrictEqual(paused.nextFireTimes, [])
      yield* at(seconds(45), fireDue)
      assert.deepStrictEqual(yield* firedFor("paused"), [])
      const resumed = yield* at(seconds(45), schedules((s) => s.resume("paused" as ScheduleId)))
      assert.strictEqual(DateTime.formatIso(resumed.nextFireTimes[0]!), iso(seconds(50)))
      yield* at(seconds(50), fireDue)
      assert.deepStrictEqual(yield* firedFor("paused"), [iso(seconds(50))])
      assert.strictEqual((yield* show("paused")).skippedCount, 0)
    }))

  it.effect("triggers a run now, whatever the overlap policy", () =>
    Effect.gen(function*() {
      const { at } = yield* withClock
      yield* at(seconds(0), create({ id: "triggered" }))
      yield* at(seconds(10), fireDue)
      const triggered = yield* at(seconds(12), schedules((s) => s.trigger("triggered" as ScheduleId)))
      assert.isTrue(triggered.created)
      assert.deepStrictEqual(yield* firedFor("triggered"), [iso(seconds(10)), iso(seconds(12))])
      // The manual run is the one a later fire time overlaps.
      yield* at(seconds(20), fireDue)
      assert.strictEqual((yield* show("triggered")).skippedCount, 1)
    }))

  it.effect("delays each fire time by its jitter, the same on every replica", () =>
    Effect.gen(function*() {
      const { at } = yield* withClock
      // The jitter is derived from the schedule and the fire time (the same on every replica), and the fire time
      // from today's clock: take a schedule whose jitter is long enough to tell from none at this test's steps.
      const id = Array.from({ length: 100 }, (_, i) => `jittered-${i}`).find((id) => jitterOf(id, seconds(60), 5_000) > 250)!
      const jitter = jitterOf(id, seconds(60), 5_000)
      yield* at(seconds(0), create({ id, jitterMs: 5_000, spec: { everyMs: 60_000 } }))
      // Started its jitter after its fire time.
      let now = seconds(60)
      while ((yield* firedFor(id)).length === 0 && now <= seconds(66)) {
        yield* at(now, fireDue)
        now += 250
      }
      assert.isAtLeast(now - 250, seconds(60) + jitter)
      assert.isBelow(now - 250, seconds(60) + jitter + 250)
      assert.deepStrictEqual(yield* firedFor(id), [iso(seconds(60))])
    }))

  it.effect("computes cron fire times in the schedule's time zone", () =>
    Effect.gen(function*() {
      const { at } = yield* withClock
      // Friday 2025-01-03 12:00 UTC: the next weekday mornings at 09:00 in Paris (08:00 UTC in winter).
      const friday = Date.UTC(2025, 0, 3, 12)
      const schedule = yield* at(friday, create({ id: "paris", spec: { cron: "0 9 * * MON-FRI", timezone: "Europe/Paris" } }))
      assert.deepStrictEqual(schedule.nextFireTimes.slice(0, 2).map(DateTime.formatIso), [
        "2025-01-06T08:00:00.000Z",
        "2025-01-07T08:00:00.000Z"
      ])
    }))

  it.effect("records the schedule a workflow version declares; the highest version declaring it owns it", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const register = (v: string, cron: string) =>
        api.execution.register({
          params: { id: worker },
          payload: { workflows: [{ name: "digest" as WorkflowName, version: v as WorkflowVersion, trigger: { spec: { cron }, payload: v } }] }
        })
      yield* register("1.0.0", "0 8 * * *")
      const declared = yield* api.schedules.get({ params: { id: "digest:trigger" as ScheduleId } })
      assert.deepStrictEqual([declared.declared, declared.workflowVersion, declared.payload], [true, "1.0.0", "1.0.0"])
      yield* register("1.2.0", "0 9 * * *")
      yield* register("1.1.0", "0 7 * * *")
      const updated = yield* api.schedules.get({ params: { id: "digest:trigger" as ScheduleId } })
      assert.deepStrictEqual([updated.workflowVersion, updated.spec], ["1.2.0", { cron: "0 9 * * *" }])
      const all = yield* api.schedules.list({ query: { workflow: "digest" as WorkflowName } })
      assert.deepStrictEqual(all.map((s) => s.id), ["digest:trigger"])
    }))

  it.effect("answers typed errors: an id taken, an unknown schedule, a malformed cron or time zone", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const api = yield* server.client()
      const input = { id: "dup" as ScheduleId, workflowName: name, workflowVersion: version, spec: { everyMs: 60_000 } }
      yield* api.schedules.create({ payload: input })
      assert.strictEqual((yield* api.schedules.create({ payload: input }).pipe(Effect.flip))._tag, "ScheduleExists")
      const missing = yield* api.schedules.get({ params: { id: "nope" as ScheduleId } }).pipe(Effect.flip)
      assert.strictEqual(missing._tag, "ScheduleNotFound")
      yield* api.schedules.delete({ params: { id: "dup" as ScheduleId } })
      assert.strictEqual((yield* api.schedules.delete({ params: { id: "dup" as ScheduleId } }).pipe(Effect.flip))._tag, "ScheduleNotFound")
      for (const spec of [{ cron: "61 * * * *" }, { cron: "0 9 * * *", timezone: "Mars/Olympus" }]) {
        const response = yield* Effect.promise(() =>
          fetch(`${server.baseUrl}/schedules`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ workflowName: name, workflowVersion: version, spec })
          })
        )
        assert.strictEqual(response.status, 400)
        const body = yield* Effect.promise(() => response.json() as Promise<{ _tag: string; issues: Array<{ path: Array<string> }> }>)
        assert.strictEqual(body._tag, "InvalidRequest")
        assert.strictEqual(body.issues[0]?.path[1], "spec")
      }
    }))
})

/** A second server replica over the first one's database, both firing schedules. */
class Replica extends Context.Service<Replica, TestServer.TestServer["Service"]>()("test/Replica") {}

const firing = { schedulerIntervalMs: 100 }

const TwoReplicas = Layer.unwrap(Effect.gen(function*() {
  const server = yield* TestServer.TestServer
  return Layer.effect(Replica, Effect.gen(function*() { return yield* TestServer.TestServer })).pipe(
    Layer.provide(TestServer.layer({ ...firing, databaseUrl: server.databaseUrl, redisPrefix: server.redisPrefix }))
  )
})).pipe(Layer.provideMerge(TestServer.layer(firing)))

layer(TwoReplicas, { excludeTestServices: true })("schedules on two replicas", (it) => {
  it.effect("fires a cron every second for 10 s: one run per fire time, none missing, none twice", () =>
    Effect.gen(function*() {
      const primary = yield* (yield* TestServer.TestServer).client()
      const replica = yield* (yield* Replica).client()
      const sql = yield* SqlClient.SqlClient
      const id = "every-second" as ScheduleId
      yield* primary.schedules.create({
        payload: { id, workflowName: name, workflowVersion: version, spec: { cron: "* * * * * *" }, overlap: "allow_all" }
      })
      yield* Effect.sleep("10 seconds")
      yield* replica.schedules.pause({ params: { id } })
      // A fire being handled when the pause came may still start its run.
      yield* Effect.sleep("500 millis")
      const fired = yield* sql<{ readonly at: number; readonly runs: number }>`
        SELECT extract(epoch FROM scheduled_for)::float8 AS at, count(*)::int AS runs FROM workflow_runs
        WHERE schedule_id = ${id} GROUP BY scheduled_for ORDER BY scheduled_for`
      assert.isAtLeast(fired.length, 9)
      assert.deepStrictEqual(fired.filter((f) => f.runs !== 1), [])
      const first = fired[0]!.at
      assert.deepStrictEqual(fired.map((f) => f.at - first), fired.map((_, i) => i))
      const schedule = yield* replica.schedules.get({ params: { id } })
      assert.strictEqual(schedule.skippedCount, 0)
    }))
})
