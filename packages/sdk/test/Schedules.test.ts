/**
 * Schedules end to end: a real server process, Redis Streams, real workers. The schedule a workflow version
 * declares (its `trigger`) starts runs the workers complete; the `skip` overlap policy keeps a slow schedule to one
 * run at a time; and schedules are created, triggered, backfilled, paused and deleted through the Effect client
 * and the promise client.
 */
import type { RunId } from "@aiki/contract/Ids"
import { eventually } from "@aiki/testing/eventually"
import { assert, layer } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { AikiClient } from "../src/AikiClient.ts"
import { client, workflow } from "../src/index.ts"
import * as Task from "../src/Task.ts"
import * as Worker from "../src/Worker.ts"
import * as Workflow from "../src/Workflow.ts"
import * as AikiServer from "./support/AikiServer.ts"
import { mostAtOnce, runningSpans } from "./support/AuditTrail.ts"

const Echo = Task.make("echo", { payload: Schema.String, success: Schema.String, run: Effect.succeed })

/** Declares a schedule: a run every second. */
const Tick = Workflow.make("schedule-tick", "1.0.0", {
  payload: Schema.Struct({ source: Schema.String }),
  success: Schema.String,
  trigger: { every: "1 second", payload: { source: "trigger" }, overlap: "allow_all" },
  run: (p) => Echo.start(p.source)
})

/** Takes longer than its schedule's interval. */
const Slow = Workflow.make("schedule-slow", "1.0.0", {
  payload: Schema.Null,
  success: Schema.Null,
  run: () => Task.make("slow", { payload: Schema.Null, success: Schema.Null, run: () => Effect.as(Effect.sleep("2500 millis"), null) }).start(null)
})

/** The promise API's report, scheduled through the promise client. */
const report = workflow({ name: "schedule-report" })
const reportV1 = report.v("1.0.0", { run: async (_ctx, payload: { readonly day: string }) => `report of ${payload.day}` })

const TestLayer = Layer.unwrap(Effect.gen(function*() {
  const server = yield* AikiServer.make({ SCHEDULER_INTERVAL_MS: "100" })
  const aiki = AikiClient.layer({ baseUrl: server.baseUrl, redis: { url: AikiServer.redisUrl } })
  const workers = Worker.layer({
    id: "schedule-worker",
    workflows: [Tick, Slow, reportV1.effect],
    subscriber: { type: "redis_streams", blockTimeMs: 200 },
    workflowRun: { heartbeatIntervalMs: 1_000 }
  })
  return workers.pipe(Layer.provideMerge(aiki))
}))

layer(TestLayer, { excludeTestServices: true, timeout: 60_000 })("schedules", (it) => {
  it.effect("starts the runs a workflow version's trigger declares, and the workers complete them", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const declared = yield* aiki.schedules.get("schedule-tick:trigger")
      assert.isTrue(declared.declared)
      assert.deepStrictEqual(declared.spec, { everyMs: 1_000 })
      assert.deepStrictEqual(declared.payload, { source: "trigger" })
      const completed = yield* eventually(aiki.schedules.get("schedule-tick:trigger").pipe(Effect.flatMap((s) => {
        const done = s.lastRuns.filter((r) => r.state === "completed")
        return done.length >= 2 ? Effect.succeed(done) : Effect.fail(`${done.length} completed`)
      })))
      const run = yield* aiki.handle(Tick, completed[0]!.runId).result()
      assert.strictEqual(run, "trigger")
      const paused = yield* aiki.schedules.pause("schedule-tick:trigger")
      assert.deepStrictEqual(paused.nextFireTimes, [])
    }))

  it.effect("keeps a schedule whose runs outlast its interval to one run at a time (skip), counting the rest", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const created = yield* aiki.schedules.create(Slow, { id: "slow-every-second", every: "1 second", payload: null })
      assert.strictEqual(created.overlap, "skip")
      yield* Effect.sleep("6 seconds")
      const paused = yield* aiki.schedules.pause("slow-every-second")
      const runIds = paused.lastRuns.map((r) => r.runId as RunId)
      yield* Effect.forEach(runIds, (id) => aiki.handle(Slow, id).result({ timeoutMs: 20_000 }), { discard: true })
      assert.isAtLeast(runIds.length, 2)
      assert.strictEqual(mostAtOnce(yield* runningSpans(runIds)), 1)
      assert.isAtLeast((yield* aiki.schedules.get("slow-every-second")).skippedCount, 2)
    }))

  it.effect("creates, triggers, backfills and deletes schedules through the promise client", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const promises = yield* Effect.promise(() => client({ baseUrl: aiki.options.baseUrl }))
      const schedule = yield* Effect.promise(() =>
        promises.schedules.create(reportV1, {
          id: "daily-report",
          cron: "0 6 * * *",
          timezone: "Europe/Paris",
          payload: { day: "today" },
          paused: true
        })
      )
      assert.isTrue(schedule.paused)
      const triggered = yield* Effect.promise(() => promises.schedules.trigger("daily-report"))
      assert.strictEqual(yield* Effect.promise(() => reportV1.getHandle(promises, triggered.id).waitForCompletion()), "report of today")
      const now = Date.now()
      const backfilled = yield* Effect.promise(() =>
        promises.schedules.backfill("daily-report", { from: new Date(now - 3 * 86_400_000), to: new Date(now) })
      )
      assert.strictEqual(backfilled.started, 3)
      assert.deepStrictEqual(
        (yield* Effect.promise(() => promises.schedules.list("schedule-report"))).map((s) => s.id),
        ["daily-report"]
      )
      yield* Effect.promise(() => promises.schedules.delete("daily-report"))
      const gone = yield* Effect.promise(() => promises.schedules.get("daily-report").then(() => "found", (e: { _tag: string }) => e._tag))
      assert.strictEqual(gone, "ScheduleNotFound")
      yield* Effect.promise(() => promises.close())
    }))
})
