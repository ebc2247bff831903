/**
 * The Effect API end to end against a real server: a workflow of tasks runs on a worker and its typed result
 * and typed error reach the caller; retries count attempts; a changed workflow fails with NonDeterminismError.
 */
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer, Schema } from "effect"
import { AikiClient } from "../src/AikiClient.ts"
import * as Task from "../src/Task.ts"
import * as Worker from "../src/Worker.ts"
import * as Workflow from "../src/Workflow.ts"
import { eventually } from "@aiki/testing/eventually"
import * as AikiServer from "./support/AikiServer.ts"

class OutOfStock extends Schema.TaggedError<OutOfStock>()("OutOfStock", { sku: Schema.String }) {}

const calls: Array<string> = []
let flaky = 0

const Reserve = Task.make("reserve", {
  payload: Schema.Struct({ sku: Schema.String, quantity: Schema.Number }),
  success: Schema.Struct({ reservation: Schema.String }),
  error: OutOfStock,
  run: ({ quantity, sku }) =>
    Effect.gen(function*() {
      calls.push(`reserve:${sku}`)
      if (quantity > 10) return yield* new OutOfStock({ sku })
      return { reservation: `r-${sku}-${quantity}` }
    })
})

const Flaky = Task.make("flaky", {
  payload: Schema.Number,
  success: Schema.Number,
  retry: { type: "fixed", maxAttempts: 3, delayMs: 10 },
  run: (n, { attempt }) =>
    Effect.suspend(() => {
      flaky++
      return attempt < 3 ? Effect.die(new Error(`flaky attempt ${attempt}`)) : Effect.succeed(n * attempt)
    })
})

const Order = Workflow.make("engine-order", "1.0.0", {
  payload: Schema.Struct({ sku: Schema.String, quantity: Schema.Number }),
  success: Schema.Struct({ reservation: Schema.String, flaky: Schema.Number }),
  error: OutOfStock,
  run: (order) =>
    Effect.gen(function*() {
      const { reservation } = yield* Reserve.start(order)
      const flaky = yield* Flaky.start(order.quantity)
      return { reservation, flaky }
    })
})

const memoized: Array<string> = []
let fragileCalls = 0

const Prepare = Task.make("prepare", {
  payload: Schema.String,
  success: Schema.String,
  run: (name) => Effect.sync(() => (memoized.push(name), `prepared ${name}`))
})

const Fragile = Task.make("fragile", {
  payload: Schema.String,
  success: Schema.String,
  run: (name) => Effect.suspend(() => ++fragileCalls === 1 ? Effect.die(new Error("first try breaks")) : Effect.succeed(`${name} ok`))
})

/** Fails on its first attempt (its second task breaks once); retried as a whole with the first task memoized. */
const RetriedWorkflow = Workflow.make("engine-retried", "1.0.0", {
  payload: Schema.String,
  success: Schema.Array(Schema.String),
  retry: { type: "fixed", maxAttempts: 2, delayMs: 10 },
  run: (name) => Effect.all([Prepare.start(name), Fragile.start(name)])
})

let patientCalls = 0

/** Fails once, then succeeds after a retry delay long enough to suspend the run on the server. */
const Patient = Task.make("patient", {
  payload: Schema.Number,
  success: Schema.Number,
  retry: { type: "fixed", maxAttempts: 2, delayMs: 400 },
  run: (n, { attempt }) => Effect.suspend(() => ++patientCalls === 1 ? Effect.die(new Error("not yet")) : Effect.succeed(n + attempt))
})

const Suspending = Workflow.make("engine-suspending", "1.0.0", {
  payload: Schema.Number,
  success: Schema.Number,
  run: (n) => Patient.start(n)
})

/** Sleeps briefly (in the worker) and then long enough to be parked on the server, between two tasks. */
const Sleepy = Workflow.make("engine-sleepy", "1.0.0", {
  payload: Schema.String,
  success: Schema.Array(Schema.String),
  run: (name) =>
    Effect.gen(function*() {
      const before = yield* Prepare.start(`${name}-before`)
      yield* Workflow.sleep("50 millis")
      yield* Workflow.sleep("600 millis")
      const after = yield* Prepare.start(`${name}-after`)
      return [before, after]
    })
})

/** Waits for an approval event, then acts on it. */
const Approval = Workflow.make("engine-approval", "1.0.0", {
  payload: Schema.String,
  success: Schema.String,
  run: (name) =>
    Effect.gen(function*() {
      const decision = yield* Workflow.waitForEvent("approval", Schema.Struct({ approved: Schema.Boolean, by: Schema.String }))
      return yield* Prepare.start(`${name} ${decision.approved ? "approved" : "rejected"} by ${decision.by}`)
    })
})

class Server extends Context.Service<Server, AikiServer.AikiServer>()("test/Server") {}

const TestLayer = Layer.unwrap(Effect.gen(function*() {
  const server = yield* AikiServer.make()
  const client = AikiClient.layer({ baseUrl: server.baseUrl, redis: { url: AikiServer.redisUrl } })
  const worker = Worker.layer({
    id: "engine-worker",
    workflows: [Order, RetriedWorkflow, Suspending, Sleepy, Approval],
    subscriber: { type: "redis_streams", blockTimeMs: 200 },
    workflowRun: { heartbeatIntervalMs: 1_000, suspendAfterMs: 200 }
  })
  return worker.pipe(Layer.provideMerge(client), Layer.provideMerge(Layer.succeed(Server, server)))
}))

layer(TestLayer, { excludeTestServices: true, timeout: 60_000 })("engine", (it) => {
  it.effect("runs a workflow to its typed result; attempts are durable and counted", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const run = yield* aiki.start(Order, { sku: "apple", quantity: 2 })
      const result = yield* run.result({ timeoutMs: 20_000 })
      assert.deepStrictEqual(result, { reservation: "r-apple-2", flaky: 6 })
      const tasks = yield* aiki.api.runs.tasks({ params: { id: run.id } })
      assert.deepStrictEqual(tasks.map((t) => [t.name, t.state, t.attempts.length]), [["reserve", "completed", 1], ["flaky", "completed", 3]])
      assert.include(tasks[1]!.attempts[0]!.error?.message ?? "", "flaky attempt 1")
      // The worker registered the version with its schemas, as JSON Schema.
      const worker = yield* aiki.api.workers.health({ params: { id: "engine-worker" as never } })
      assert.deepStrictEqual(worker.workflows.map((w) => w.name), ["engine-approval", "engine-order", "engine-retried", "engine-sleepy", "engine-suspending"])
      const registered = (yield* aiki.api.workflows.list()).find((w) => w.name === "engine-order")
      assert.isDefined(registered)
      assert.deepStrictEqual((registered!.payloadSchema as { required?: Array<string> }).required, ["sku", "quantity"])
    }))

  it.effect("delivers the workflow's declared error to the caller, decoded", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const run = yield* aiki.start(Order, { sku: "melon", quantity: 50 })
      const error = yield* run.result({ timeoutMs: 20_000 }).pipe(Effect.flip)
      assert.instanceOf(error, OutOfStock)
      assert.strictEqual((error as OutOfStock).sku, "melon")
      const status = yield* run.status
      assert.strictEqual(status.state, "failed")
      assert.strictEqual(status.error?.name, "OutOfStock")
    }))

  it.effect("retries a failed workflow with its completed tasks memoized and its failed task run again", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const run = yield* aiki.start(RetriedWorkflow, "batch-7")
      assert.deepStrictEqual(yield* run.result({ timeoutMs: 20_000 }), ["prepared batch-7", "batch-7 ok"])
      assert.deepStrictEqual(memoized, ["batch-7"])
      assert.strictEqual(fragileCalls, 2)
      const tasks = yield* aiki.api.runs.tasks({ params: { id: run.id } })
      assert.deepStrictEqual(tasks.map((t) => [t.name, t.state, t.attempts.length]), [["prepare", "completed", 1], ["fragile", "completed", 2]])
    }))

  it.effect("records the trace a run was started in, for its worker to continue", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const span = yield* Effect.currentSpan
      const run = yield* aiki.start(Order, { sku: "pear", quantity: 1 })
      const status = yield* run.status
      assert.match(status.traceParent ?? "", new RegExp(`^00-${span.traceId}-[0-9a-f]{16}-0[01]$`))
      yield* run.result({ timeoutMs: 20_000 })
    }).pipe(Effect.withSpan("test.startTraced")))

  it.effect("parks a run on the server during a long retry delay and resumes it when due", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const run = yield* aiki.start(Suspending, 40)
      assert.strictEqual(yield* run.result({ timeoutMs: 20_000 }), 42)
      const trail = yield* aiki.api.runs.transitions({ params: { id: run.id } })
      const runSteps = trail.filter((t) => t.taskAddress === undefined).map((t) => `${t.fromState}->${t.toState}:${t.reason}`)
      assert.deepStrictEqual(runSteps, [
        "undefined->pending:started",
        "pending->running:claimed",
        "running->awaiting_retry:suspended",
        "awaiting_retry->pending:woken",
        "pending->running:claimed",
        "running->completed:completed"
      ])
      const [task] = yield* aiki.api.runs.tasks({ params: { id: run.id } })
      assert.deepStrictEqual(task!.attempts.map((a) => a.error?.message), ["not yet", undefined])
    }))

  it.effect("sleeps durably: a short sleep in the worker, a long one parked on the server, neither repeated", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const run = yield* aiki.start(Sleepy, "nap")
      assert.deepStrictEqual(yield* run.result({ timeoutMs: 20_000 }), ["prepared nap-before", "prepared nap-after"])
      const trail = yield* aiki.api.runs.transitions({ params: { id: run.id } })
      const runSteps = trail.filter((t) => t.taskAddress === undefined).map((t) => `${t.fromState}->${t.toState}`)
      assert.includeMembers(runSteps, ["running->sleeping", "sleeping->pending"])
      const tasks = yield* aiki.api.runs.tasks({ params: { id: run.id } })
      assert.deepStrictEqual(tasks.map((t) => [t.name, t.state, t.attempts.length]), [
        ["prepare", "completed", 1],
        ["aiki.sleep", "completed", 1],
        ["aiki.sleep", "completed", 1],
        ["prepare", "completed", 1]
      ])
      assert.deepStrictEqual(memoized.filter((m) => m.startsWith("nap")), ["nap-before", "nap-after"])
    }))

  it.effect("counts runs and tasks in the Prometheus metrics, under the names operators expect", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const server = yield* Server
      yield* (yield* aiki.start(Order, { sku: "fig", quantity: 1 })).result({ timeoutMs: 20_000 })
      yield* (yield* aiki.start(Order, { sku: "fig", quantity: 99 })).result({ timeoutMs: 20_000 }).pipe(Effect.flip)
      // Worker gauges are sampled every few seconds: wait for a sample that includes this worker.
      yield* eventually(Effect.gen(function*() {
        const text = yield* Effect.promise(() => fetch(`${server.baseUrl}/metrics`).then((r) => r.text()))
        const value = (name: string) => Number(text.split("\n").find((l) => l.startsWith(`${name} `))?.split(" ")[1] ?? NaN)
        for (
          const name of [
            "aiki_workflows_started_total",
            "aiki_workflows_completed_total",
            "aiki_workflows_failed_total",
            "aiki_tasks_started_total",
            "aiki_tasks_completed_total",
            "aiki_tasks_failed_total",
            "aiki_tasks_retried_total",
            "aiki_workers_active"
          ]
        ) {
          assert.isAtLeast(value(name), 1, name)
        }
        assert.include(text, "aiki_workflow_duration_seconds_bucket")
        assert.include(text, "aiki_workers_heartbeat_age_seconds{worker_id=\"engine-worker\"}")
      }))
    }))

  it.effect("waits on the server for an event, wakes when it is sent, and receives it once", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const run = yield* aiki.start(Approval, "invoice-9")
      yield* eventually(Effect.gen(function*() {
        assert.strictEqual((yield* run.status).state, "awaiting_event")
      }))
      const sent = yield* run.sendEvent("approval", { approved: true, by: "ann" })
      assert.strictEqual(sent.runState, "pending")
      assert.strictEqual(yield* run.result({ timeoutMs: 20_000 }), "prepared invoice-9 approved by ann")
      const trail = yield* aiki.api.runs.transitions({ params: { id: run.id } })
      assert.includeMembers(trail.map((t) => `${t.fromState}->${t.toState}:${t.reason}`), [
        "running->awaiting_event:suspended",
        "awaiting_event->pending:event_received"
      ])
      const late = yield* run.sendEvent("approval", { approved: false, by: "bob" }).pipe(Effect.flip)
      assert.strictEqual(late._tag, "InvalidTransition")

      // An event sent before the workflow waits for it is kept for it: the run never parks.
      const early = yield* aiki.start(Approval, "invoice-10")
      yield* early.sendEvent("approval", { approved: false, by: "cy" })
      assert.strictEqual(yield* early.result({ timeoutMs: 20_000 }), "prepared invoice-10 rejected by cy")
    }))
})
