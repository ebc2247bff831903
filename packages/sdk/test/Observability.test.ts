/**
 * Metrics and traces as operators see them with several server replicas. Two replicas of one deployment (one
 * database, one Redis prefix) take a burst of starts between them while a worker runs everything: their counters,
 * summed, count every run and task exactly once; the fleet gauges come from one replica only, so a sum does not
 * double the fleet, and a worker that left is removed from them. And one trace, exported to an OTLP collector run
 * by the test, goes from the application's `start` to the worker's run and each task attempt. (Starts travel to
 * the server in batches, so the server's handling of a start is in the batch request's trace; the run's trace goes
 * on from the start itself, whose `traceparent` the run keeps.)
 */
import { eventually } from "@aiki/testing/eventually"
import * as OtlpCollector from "@aiki/testing/OtlpCollector"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { client, task, worker, workflow } from "../src/index.ts"
import * as AikiServer from "./support/AikiServer.ts"

// ---------------------------------------------------------------------------------------------------------------
// Metrics

/** `name{labels} value` samples of a Prometheus text page. */
const scrape = (baseUrl: string) =>
  Effect.promise(async () => {
    const text = await fetch(`${baseUrl}/metrics`).then((r) => r.text())
    return text.split("\n").filter((line) => line.length > 0 && !line.startsWith("#")).map((line) => {
      const [series, value] = [line.slice(0, line.lastIndexOf(" ")), Number(line.slice(line.lastIndexOf(" ") + 1))]
      const brace = series.indexOf("{")
      return { name: brace < 0 ? series : series.slice(0, brace), labels: brace < 0 ? "" : series.slice(brace), value }
    })
  })

type Samples = Effect.Success<ReturnType<typeof scrape>>

const total = (pages: ReadonlyArray<Samples>, name: string) =>
  pages.flat().filter((s) => s.name === name).reduce((sum, s) => sum + s.value, 0)

const seriesOf = (pages: ReadonlyArray<Samples>, name: string) => pages.flat().filter((s) => s.name === name)

const check = task({
  name: "metrics-check",
  retry: { type: "fixed", maxAttempts: 2, delayMs: 10 },
  run: ({ attempt, payload }: { attempt: number; payload: number }) => {
    // Every tenth run fails its first attempt: retries are counted too.
    if (payload % 10 === 0 && attempt === 1) throw new Error("first attempt fails")
    return payload
  }
})
const counted = workflow({
  name: "metrics-counted",
  version: "1.0.0",
  run: ({ workflowRun }, n: number) => check.run(workflowRun, { payload: n })
})

// ---------------------------------------------------------------------------------------------------------------
// Traces

const prepare = task({ name: "trace-prepare", run: ({ payload }: { payload: string }) => `prepared ${payload}` })
let flakyAttempts = 0
const deliver = task({
  name: "trace-deliver",
  retry: { type: "fixed", maxAttempts: 2, delayMs: 10 },
  run: ({ payload }: { payload: string }) => {
    if (++flakyAttempts === 1) throw new Error("the first delivery fails")
    return `delivered ${payload}`
  }
})
const traced = workflow({
  name: "traced",
  version: "1.0.0",
  async run({ workflowRun }, name: string) {
    const prepared = await prepare.run(workflowRun, { payload: name })
    return await deliver.run(workflowRun, { payload: prepared })
  }
})

describe("observability", () => {
  it.live("two replicas: counters sum to every run and task once, the fleet gauges are not doubled", () =>
    Effect.gen(function*() {
      const settings = { WORKER_STALE_AFTER_MS: "1500" }
      const first = yield* AikiServer.make(settings)
      const second = yield* AikiServer.make({ ...settings, DATABASE_URL: first.databaseUrl, REDIS_PREFIX: first.redisPrefix })
      const connect = (baseUrl: string, redis: boolean) =>
        Effect.acquireRelease(
          Effect.promise(() => client({ baseUrl, ...(redis ? { redis: { url: AikiServer.redisUrl } } : {}) })),
          (aiki) => Effect.promise(() => aiki.close())
        )
      const workerSide = yield* connect(first.baseUrl, true)
      const w = yield* Effect.promise(() =>
        worker(workerSide, {
          id: "metrics-worker",
          maxConcurrentWorkflowRuns: 50,
          subscriber: { type: "redis_streams", blockTimeMs: 100 },
          workflowRun: { heartbeatIntervalMs: 500 },
          livenessTimeoutMs: 2_000
        })
      )
      w.workflowRegistry.add(counted)
      const stopped = w.start()

      // A burst of starts, half through each replica, all at once.
      const apps = [yield* connect(first.baseUrl, false), yield* connect(second.baseUrl, false)]
      const runs = 200
      const handles = yield* Effect.promise(() =>
        Promise.all(Array.from({ length: runs }, (_, n) => counted.start(apps[n % 2]!, { payload: n })))
      )
      const results = yield* Effect.promise(() => Promise.all(handles.map((h) => h.waitForCompletion({ timeoutMs: 60_000 }))))
      assert.deepStrictEqual(results, Array.from({ length: runs }, (_, n) => n))

      const pages = [yield* scrape(first.baseUrl), yield* scrape(second.baseUrl)]
      assert.isAbove(total([pages[0]!], "aiki_workflows_started_total"), 0, "the first replica counted its starts")
      assert.isAbove(total([pages[1]!], "aiki_workflows_started_total"), 0, "the second replica counted its starts")
      const retried = runs / 10
      assert.deepStrictEqual(
        {
          started: total(pages, "aiki_workflows_started_total"),
          completed: total(pages, "aiki_workflows_completed_total"),
          durations: total(pages, "aiki_workflow_duration_seconds_count"),
          tasksStarted: total(pages, "aiki_tasks_started_total"),
          tasksCompleted: total(pages, "aiki_tasks_completed_total"),
          tasksFailed: total(pages, "aiki_tasks_failed_total"),
          tasksRetried: total(pages, "aiki_tasks_retried_total")
        },
        {
          started: runs,
          completed: runs,
          durations: runs,
          tasksStarted: runs + retried,
          tasksCompleted: runs,
          tasksFailed: retried,
          tasksRetried: retried
        }
      )

      // The fleet once: one replica reports the live worker, the other nothing.
      yield* eventually(Effect.gen(function*() {
        const now = [yield* scrape(first.baseUrl), yield* scrape(second.baseUrl)]
        assert.strictEqual(total(now, "aiki_workers_active"), 1)
        assert.strictEqual(seriesOf(now, "aiki_workers_active").length, 1)
        assert.deepStrictEqual(seriesOf(now, "aiki_workers_heartbeat_age_seconds").map((s) => s.labels), ["{worker_id=\"metrics-worker\"}"])
      }))

      // The worker leaves: its series goes, and the fleet is empty.
      yield* Effect.promise(() => w.stop())
      yield* Effect.promise(() => stopped)
      yield* eventually(Effect.gen(function*() {
        const now = [yield* scrape(first.baseUrl), yield* scrape(second.baseUrl)]
        assert.deepStrictEqual(seriesOf(now, "aiki_workers_heartbeat_age_seconds"), [])
        assert.strictEqual(seriesOf(now, "aiki_workers_active").length, 1)
        assert.strictEqual(total(now, "aiki_workers_active"), 0)
      }))

      // The replica exporting the gauges stops: the other one takes over.
      const leader = seriesOf([yield* scrape(first.baseUrl)], "aiki_workers_active").length === 1 ? first : second
      const follower = leader === first ? second : first
      leader.process.child.kill("SIGTERM")
      yield* Effect.promise(() => leader.process.exited)
      yield* eventually(Effect.gen(function*() {
        assert.strictEqual(seriesOf([yield* scrape(follower.baseUrl)], "aiki_workers_active").length, 1)
      }))
    }).pipe(Effect.scoped), 120_000)

  it.live("one trace from the application's start to the worker's run and every task attempt", () =>
    Effect.gen(function*() {
      const otlp = yield* OtlpCollector.make
      const server = yield* AikiServer.make()
      const tracing = (serviceName: string) => ({ endpoint: otlp.endpoint, serviceName, exportIntervalMs: 200 })
      const workerSide = yield* Effect.promise(() => client({ baseUrl: server.baseUrl, tracing: tracing("orders-worker") }))
      const w = yield* Effect.promise(() => worker(workerSide, { id: "traced-worker", subscriber: { type: "http", blockTimeMs: 500 } }))
      w.workflowRegistry.add(traced)
      const stopped = w.start()
      const app = yield* Effect.promise(() => client({ baseUrl: server.baseUrl, tracing: tracing("orders-app") }))
      const handle = yield* Effect.promise(() => traced.start(app, { payload: "parcel" }))
      assert.strictEqual(yield* Effect.promise(() => handle.waitForCompletion({ timeoutMs: 20_000 })), "delivered prepared parcel")
      // Closing a client flushes what it has not exported yet.
      yield* Effect.promise(() => w.stop().then(() => stopped))
      yield* Effect.promise(() => Promise.all([workerSide.close(), app.close()]))

      const start = otlp.spans.find((s) => s.name === "AikiClient.start" && s.service === "orders-app")
      assert.isDefined(start, `spans: ${otlp.spans.map((s) => `${s.service}:${s.name}`).join(", ")}`)
      assert.isUndefined(start!.parentSpanId)
      const trace = otlp.spans.filter((s) => s.traceId === start!.traceId)
      const byId = new Map(trace.map((s) => [s.spanId, s]))
      /** The names from `span` up to the root of the trace. */
      const ancestry = (span: OtlpCollector.ExportedSpan): Array<string> => {
        const parent = span.parentSpanId === undefined ? undefined : byId.get(span.parentSpanId)
        return [span.name, ...(parent === undefined ? [] : ancestry(parent))]
      }
      const execution = trace.find((s) => s.name === "Worker.executeRun")
      assert.isDefined(execution, "the worker's run is in the trace of the start")
      assert.strictEqual(execution!.service, "orders-worker")
      assert.strictEqual(execution!.attributes["runId"], handle.id)
      assert.strictEqual(execution!.attributes["run.end"], "completed")
      assert.strictEqual(ancestry(execution!).at(-1), "AikiClient.start")
      const attempts = trace.filter((s) => s.name.startsWith("Task "))
      assert.deepStrictEqual(
        attempts.map((s) => [s.name, s.attributes["attempt"]]).sort(),
        [["Task trace-deliver", 1], ["Task trace-deliver", 2], ["Task trace-prepare", 1]]
      )
      for (const attempt of attempts) assert.strictEqual(attempt.parentSpanId, execution!.spanId)
      // The worker's protocol (polls, heartbeats, writes) is not traced.
      const chatter = otlp.spans.filter((s) => s.service === "orders-worker" && String(s.attributes["url.full"] ?? "").includes("/workers/"))
      assert.deepStrictEqual(chatter.map((s) => s.attributes["url.full"]), [])
    }).pipe(Effect.scoped), 60_000)
})
