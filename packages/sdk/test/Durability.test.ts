/**
 * The promises Aiki makes, checked by breaking things for real: worker processes are SIGKILLed mid-task, frozen
 * (SIGSTOP) until their lease is taken over, stopped gracefully; runs are cancelled mid-operation; workflows change
 * between executions. A real server process, real Postgres and Redis.
 */
import type { Lease } from "@aiki/contract/Models"
import { eventually } from "@aiki/testing/eventually"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { AikiClient } from "../src/AikiClient.ts"
import * as Fixtures from "./fixtures/workflows.ts"
import * as AikiServer from "./support/AikiServer.ts"
import * as WorkerProcess from "./support/WorkerProcess.ts"

class Server extends Context.Service<Server, AikiServer.AikiServer & { readonly sideEffectsFile: string }>()(
  "test/Server"
) {}

const TestLayer = Layer.unwrap(Effect.gen(function*() {
  const server = yield* AikiServer.make()
  const sideEffectsFile = join(mkdtempSync(join(tmpdir(), "aiki-effects-")), "side-effects.log")
  return AikiClient.layer({ baseUrl: server.baseUrl }).pipe(
    Layer.provideMerge(Layer.succeed(Server, { ...server, sideEffectsFile }))
  )
}))

type Subscriber = "redis_streams" | "http"

/** Starts a fixture worker against this file's server, receiving runs with `subscriber`. */
const workerWith = (subscriber: Subscriber) => (id: string, env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const server = yield* Server
    return yield* WorkerProcess.start({
      AIKI_URL: server.baseUrl,
      ...(subscriber === "redis_streams" ? { REDIS_URL: AikiServer.redisUrl } : {}),
      WORKER_ID: id,
      SIDE_EFFECTS_FILE: server.sideEffectsFile,
      HEARTBEAT_MS: "400",
      CLAIM_MIN_IDLE_MS: "1500",
      ...env
    })
  })

const sideEffects = (runId: string) =>
  Effect.map(Server, (server) => WorkerProcess.sideEffects(server.sideEffectsFile, runId))

/** Waits until the run's task `name` is running. */
const taskRunning = (runId: string, name: string) =>
  eventually(Effect.gen(function*() {
    const aiki = yield* AikiClient
    const tasks = yield* aiki.api.runs.tasks({ params: { id: runId as Lease["run"]["id"] } })
    assert.isTrue(tasks.some((t) => t.name === name && t.state === "running"), `${name} is not running yet`)
  }))

// The same promises hold whichever way workers receive runs: Redis Streams, or long-polling the server.
for (const subscriber of ["redis_streams", "http"] as const) {
const worker = workerWith(subscriber)
layer(TestLayer, { excludeTestServices: true, timeout: 120_000 })(`durability (${subscriber})`, (it) => {
  it.effect("completes a run on a second worker after the first is SIGKILLed mid-task; done tasks never rerun", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const a = yield* worker("worker-a", { STEP_TWO_MS: "60000" })
      const run = yield* aiki.start(Fixtures.threeSteps.effect, 7)
      // Killed while step two's code is running (it has begun its side effect), not merely recorded as started.
      yield* eventually(Effect.gen(function*() {
        assert.include((yield* sideEffects(run.id)).map(([what]) => what), "step-two")
      }))
      yield* WorkerProcess.signal(a, "SIGKILL")
      yield* worker("worker-b", { STEP_TWO_MS: "50" })
      const result = yield* run.result({ timeoutMs: 60_000 })
      assert.deepStrictEqual(result, { one: 7, two: true, three: "worker-b" })
      const effects = yield* sideEffects(run.id)
      assert.deepStrictEqual(effects.filter(([what]) => what === "step-one"), [["step-one", "worker-a"]])
      assert.deepStrictEqual(effects.filter(([what]) => what === "step-three"), [["step-three", "worker-b"]])
      assert.deepStrictEqual(effects.filter(([what]) => what === "step-two").map(([, by]) => by), ["worker-a", "worker-b"])
    }).pipe(Effect.scoped))

  it.effect("fences a frozen worker: once its lease is taken over it can neither record a task nor finish the run", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const a = yield* worker("zombie", { STEP_TWO_MS: "2500" })
      const run = yield* aiki.start(Fixtures.threeSteps.effect, 1)
      yield* taskRunning(run.id, "step-two")
      yield* WorkerProcess.signal(a, "SIGSTOP")
      yield* worker("rescuer", { STEP_TWO_MS: "50" })
      const result = yield* run.result({ timeoutMs: 60_000 })
      assert.deepStrictEqual(result, { one: 1, two: true, three: "rescuer" })
      const finished = yield* run.status
      // Wake the zombie: its step two ends and it tries to go on with lease 1.
      yield* WorkerProcess.signal(a, "SIGCONT")
      yield* Effect.sleep("4 seconds")
      const after = yield* run.status
      assert.strictEqual(after.state, "completed")
      assert.deepStrictEqual(after.result, finished.result)
      assert.deepStrictEqual(after.updatedAt, finished.updatedAt)
      const tasks = yield* aiki.api.runs.tasks({ params: { id: run.id } })
      const stepTwo = tasks.find((t) => t.name === "step-two")!
      // The zombie's attempt was closed as lost; the one that counts belongs to a later lease (the rescuer's).
      // (Under load the zombie may have lost and regained the run once before it froze: compare epochs, not values.)
      const [zombieAttempt, ...later] = stepTwo.attempts
      assert.strictEqual(zombieAttempt!.error?.name, "LeaseLost")
      assert.isAbove(later[later.length - 1]!.leaseEpoch, zombieAttempt!.leaseEpoch)
      assert.isUndefined(later[later.length - 1]!.error)
      const effects = yield* sideEffects(run.id)
      assert.deepStrictEqual(effects.filter(([what]) => what === "step-three"), [["step-three", "rescuer"]])
    }).pipe(Effect.scoped))

  it.effect("a worker frozen past its lease in a retry delay never runs the next attempt once it wakes", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const frozen = yield* worker("sleepy-retrier")
      const run = yield* aiki.start(Fixtures.retryAfterDelay.effect, null)
      yield* eventually(Effect.gen(function*() {
        const [task] = yield* aiki.api.runs.tasks({ params: { id: run.id } })
        assert.strictEqual(task?.state, "retrying")
      }))
      yield* WorkerProcess.signal(frozen, "SIGSTOP")
      yield* worker("rescuer")
      assert.strictEqual(yield* run.result({ timeoutMs: 60_000 }), "rescuer")
      // Its delay is long over when it wakes, and nothing stands between the delay and the next attempt: it must
      // learn that it lost the run before it acts again.
      yield* WorkerProcess.signal(frozen, "SIGCONT")
      yield* Effect.sleep("3 seconds")
      const attempts = (yield* sideEffects(run.id)).filter(([what]) => what === "second-try")
      assert.deepStrictEqual(attempts.map(([, , by]) => by), ["rescuer"])
    }).pipe(Effect.scoped))

  it.effect("cancelling a run aborts its task's signal within a second and ends it cancelled", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      yield* worker("canceller")
      const run = yield* aiki.start(Fixtures.slowOperation.effect, null)
      yield* eventually(Effect.gen(function*() {
        assert.deepStrictEqual((yield* sideEffects(run.id)).map(([what]) => what), ["started"])
      }))
      const cancelledAt = Date.now()
      yield* run.cancel
      const aborted = yield* eventually(Effect.gen(function*() {
        const line = (yield* sideEffects(run.id)).find(([what]) => what === "aborted")
        assert.isDefined(line)
        return Number(line![1])
      }))
      assert.isBelow(aborted - cancelledAt, 1_000)
      const error = yield* run.result().pipe(Effect.flip)
      assert.strictEqual(error._tag, "RunCancelled")
      assert.strictEqual((yield* run.status).state, "cancelled")
    }).pipe(Effect.scoped))

  it.effect("retries a failing task until it succeeds, and fails the run with the last error once attempts run out", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      yield* worker("retrier")
      const flaky = yield* aiki.start(Fixtures.flakyRetry.effect, null)
      assert.deepStrictEqual(yield* flaky.result({ timeoutMs: 30_000 }), { attempt: 3 })
      const [task] = yield* aiki.api.runs.tasks({ params: { id: flaky.id } })
      assert.deepStrictEqual(task!.attempts.map((a) => a.error?.message), ["attempt 1 failed", "attempt 2 failed", undefined])

      const hopeless = yield* aiki.start(Fixtures.exhaustedRetry.effect, null)
      const error = yield* hopeless.result({ timeoutMs: 30_000 }).pipe(Effect.flip)
      assert.strictEqual(error._tag, "RunFailed")
      const [failed] = yield* aiki.api.runs.tasks({ params: { id: hopeless.id } })
      assert.strictEqual(failed!.state, "failed")
      assert.strictEqual(failed!.error?.message, "still broken (attempt 2)")
      assert.strictEqual(failed!.attempts.length, 2)
      assert.strictEqual((yield* hopeless.status).error?.message, "still broken (attempt 2)")
    }).pipe(Effect.scoped))

  it.effect("fails a run with NonDeterminismError when its task order changed between executions", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const a = yield* worker("deterministic", { SECOND_MS: "60000" })
      const run = yield* aiki.start(Fixtures.orderSensitive.effect, null)
      yield* taskRunning(run.id, "second")
      yield* WorkerProcess.signal(a, "SIGKILL")
      yield* worker("reordered", { TASK_ORDER: "reversed" })
      const error = yield* run.result({ timeoutMs: 60_000 }).pipe(Effect.flip)
      assert.strictEqual(error._tag, "RunFailed")
      const status = yield* run.status
      assert.strictEqual(status.error?.name, "NonDeterminismError")
      assert.include(status.error?.message, "\"first\"")
      assert.include(status.error?.message, "\"second\"")
    }).pipe(Effect.scoped))

  it.effect("a graceful stop lets a short run finish and hands a long one over at once", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const a = yield* worker("stopping", { SHUTDOWN_MS: "1500" })
      const short = yield* aiki.start(Fixtures.timed.effect, { ms: 500, label: "short" })
      const long = yield* aiki.start(Fixtures.timed.effect, { ms: 60_000, label: "long" })
      yield* taskRunning(short.id, "sleep")
      yield* taskRunning(long.id, "sleep")
      yield* WorkerProcess.signal(a, "SIGTERM")
      const exited = yield* Effect.promise(() => a.exited)
      assert.strictEqual(exited.code, 0, exited.stderr)
      assert.include(exited.stdout, "worker stopped")
      assert.strictEqual(yield* short.result({ timeoutMs: 10_000 }), "stopping")
      assert.strictEqual((yield* long.status).state, "pending")
      const trail = yield* aiki.api.runs.transitions({ params: { id: long.id } })
      assert.strictEqual(trail[trail.length - 1]!.reason, "released")
      yield* worker("successor", { TIMED_SCALE: "0.001" })
      assert.strictEqual(yield* long.result({ timeoutMs: 30_000 }), "successor")
    }).pipe(Effect.scoped))
})
}

// Concurrent code replays exactly: recorded outcomes are delivered in the order they first arrived, whichever
// worker replays the run and however its tasks happen to be scheduled.
layer(TestLayer, { excludeTestServices: true, timeout: 120_000 })("replay of concurrent code", (it) => {
  /** What ran of a run, by task, in order. */
  const ranBy = (runId: string, name: string) =>
    Effect.map(sideEffects(runId), (lines) => lines.filter(([what]) => what === name).map(([, by]) => by))

  it.effect("Promise.all of chains completes on another worker after the first is SIGKILLed mid-run", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      // The first chain is slow, so the second chain's outcomes are recorded first; then chain-c hangs.
      const a = yield* workerWith("redis_streams")("chains-a", { CHAIN_A_MS: "400", CHAIN_C_MS: "60000" })
      const run = yield* aiki.start(Fixtures.parallelChains.effect, {})
      yield* eventually(Effect.gen(function*() {
        assert.deepStrictEqual(yield* ranBy(run.id, "chain-c"), ["chains-a"])
      }))
      yield* WorkerProcess.signal(a, "SIGKILL")
      yield* workerWith("redis_streams")("chains-b")
      assert.deepStrictEqual(yield* run.result({ timeoutMs: 60_000 }), {
        left: "chain-c(chain-a(a))",
        right: "chain-d(chain-b(b))",
        last: "chain-e(chain-c(chain-a(a))+chain-d(chain-b(b)))"
      })
      // Completed tasks never ran again; only the one cut off by the kill did.
      for (const name of ["chain-a", "chain-b", "chain-d"]) assert.deepStrictEqual(yield* ranBy(run.id, name), ["chains-a"])
      assert.deepStrictEqual(yield* ranBy(run.id, "chain-c"), ["chains-a", "chains-b"])
      assert.deepStrictEqual(yield* ranBy(run.id, "chain-e"), ["chains-b"])
      const tasks = yield* aiki.api.runs.tasks({ params: { id: run.id } })
      const order = (name: string) => tasks.find((t) => t.name === name)!.outcomeOrder!
      assert.isBelow(order("chain-b"), order("chain-a"))
    }).pipe(Effect.scoped))

  it.effect("Promise.all of chains completes after a durable sleep parked the run and it was replayed", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      yield* workerWith("http")("chains-sleeper", { CHAIN_A_MS: "300", SUSPEND_AFTER_MS: "200" })
      const run = yield* aiki.start(Fixtures.parallelChains.effect, { sleepMs: 1_000 })
      const result = (yield* run.result({ timeoutMs: 60_000 })) as { readonly last: string }
      assert.strictEqual(result.last, "chain-e(chain-c(chain-a(a))+chain-d(chain-b(b)))")
      const trail = yield* aiki.api.runs.transitions({ params: { id: run.id } })
      assert.includeMembers(trail.map((t) => `${t.fromState}->${t.toState}`), ["running->sleeping", "sleeping->pending"])
      for (const name of ["chain-a", "chain-b", "chain-c", "chain-d", "chain-e"]) {
        assert.strictEqual((yield* ranBy(run.id, name)).length, 1, name)
      }
    }).pipe(Effect.scoped))

  it.effect("Effect.all with concurrency completes on another worker after the first is SIGKILLed mid-run", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const a = yield* workerWith("http")("effect-chains-a", { EFFECT_A_MS: "400", EFFECT_C_MS: "60000" })
      const run = yield* aiki.start(Fixtures.effectParallelChains, {})
      yield* eventually(Effect.gen(function*() {
        assert.strictEqual((yield* ranBy(run.id, "effect-c")).length, 1)
      }))
      yield* WorkerProcess.signal(a, "SIGKILL")
      yield* workerWith("http")("effect-chains-b")
      assert.deepStrictEqual(yield* run.result({ timeoutMs: 60_000 }), ["effect-c(effect-a(a))", "effect-d(effect-b(b))"])
      for (const name of ["effect-a", "effect-b", "effect-d"]) assert.strictEqual((yield* ranBy(run.id, name)).length, 1, name)
      assert.strictEqual((yield* ranBy(run.id, "effect-c")).length, 2)
    }).pipe(Effect.scoped))

  it.effect("Effect.all with concurrency completes after a durable sleep parked the run and it was replayed", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      yield* workerWith("redis_streams")("effect-chains-sleeper", { EFFECT_A_MS: "300", SUSPEND_AFTER_MS: "200" })
      const run = yield* aiki.start(Fixtures.effectParallelChains, { sleepMs: 1_000 })
      assert.deepStrictEqual(yield* run.result({ timeoutMs: 60_000 }), ["effect-c(effect-a(a))", "effect-d(effect-b(b))"])
      const trail = yield* aiki.api.runs.transitions({ params: { id: run.id } })
      assert.includeMembers(trail.map((t) => `${t.fromState}->${t.toState}`), ["running->sleeping", "sleeping->pending"])
    }).pipe(Effect.scoped))

  it.effect("thrown non-Error values reach the workflow the same way the first time and after a replay", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      yield* workerWith("redis_streams")("catcher", { SUSPEND_AFTER_MS: "200" })
      const run = yield* aiki.start(Fixtures.catchesThrows.effect, { sleepMs: 800 })
      // What it caught decided its next call before the sleep; the replay after the sleep must see the same.
      assert.deepStrictEqual(yield* run.result({ timeoutMs: 60_000 }), [
        `Error: plain string {"thrown":"plain string"}`,
        `Error: {"code":42} {"thrown":{"code":42}}`,
        `Error: undefined {"thrown":"undefined"}`,
        `RangeError: out of range {"code":"E_RANGE"}`
      ])
      assert.strictEqual((yield* run.status).state, "completed")
    }).pipe(Effect.scoped))
})
