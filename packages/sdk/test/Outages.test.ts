/**
 * The infrastructure fails under a running worker: the server process is SIGKILLed and restarted mid-run, and
 * Redis is killed and comes back empty. Runs still complete, and completed tasks do not run again.
 */
import { eventually } from "@aiki/testing/eventually"
import { freePort } from "@aiki/testing/freePort"
import { type Running, spawnNode, waitForHealth } from "@aiki/testing/NodeProcess"
import * as RedisProcess from "@aiki/testing/RedisProcess"
import * as TestDatabase from "@aiki/testing/TestDatabase"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer, Ref, Scope } from "effect"
import { randomBytes } from "node:crypto"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { AikiClient } from "../src/AikiClient.ts"
import * as Fixtures from "./fixtures/workflows.ts"
import * as WorkerProcess from "./support/WorkerProcess.ts"

const serverMain = fileURLToPath(import.meta.resolve("@aiki/server/main"))

/** A server process that a test may kill and start again on the same port and database. */
class Infrastructure extends Context.Service<Infrastructure, {
  readonly baseUrl: string
  readonly redis: RedisProcess.RedisProcess
  readonly sideEffectsFile: string
  readonly killServer: Effect.Effect<void>
  readonly startServer: Effect.Effect<void>
}>()("test/Infrastructure") {}

const TestLayer = Layer.unwrap(Effect.gen(function*() {
  const database = yield* TestDatabase.make
  const redis = yield* RedisProcess.make
  const port = yield* Effect.promise(freePort)
  const baseUrl = `http://127.0.0.1:${port}`
  const scope = yield* Scope.Scope
  const server = yield* Ref.make<Running | undefined>(undefined)
  const env = {
    DATABASE_URL: database.url,
    REDIS_URL: redis.url,
    REDIS_PREFIX: `aiki-test-${randomBytes(4).toString("hex")}`,
    PORT: String(port),
    HOST: "127.0.0.1",
    REAPER_INTERVAL_MS: "300",
    REPUBLISH_AFTER_MS: "1000",
    AUTH: "off"
  }
  const startServer = Effect.gen(function*() {
    const running = yield* spawnNode(serverMain, env).pipe(Scope.provide(scope))
    yield* Ref.set(server, running)
    yield* waitForHealth(`${baseUrl}/health`, running)
  })
  const killServer = Effect.gen(function*() {
    const running = yield* Ref.get(server)
    if (running === undefined) return
    running.child.kill("SIGKILL")
    yield* Effect.promise(() => running.exited)
  })
  yield* startServer
  const sideEffectsFile = join(mkdtempSync(join(tmpdir(), "aiki-outages-")), "side-effects.log")
  return AikiClient.layer({ baseUrl }).pipe(
    Layer.provideMerge(Layer.succeed(Infrastructure, { baseUrl, redis, sideEffectsFile, killServer, startServer }))
  )
}))

const worker = (id: string, env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const infra = yield* Infrastructure
    return yield* WorkerProcess.start({
      AIKI_URL: infra.baseUrl,
      REDIS_URL: infra.redis.url,
      WORKER_ID: id,
      SIDE_EFFECTS_FILE: infra.sideEffectsFile,
      HEARTBEAT_MS: "400",
      CLAIM_MIN_IDLE_MS: "1500",
      ...env
    })
  })

const effectsOf = (runId: string) =>
  Effect.map(Infrastructure, (infra) => WorkerProcess.sideEffects(infra.sideEffectsFile, runId).map(([what]) => what))

layer(TestLayer, { excludeTestServices: true, timeout: 120_000 })("outages", (it) => {
  it.effect("a run survives its server being SIGKILLed and restarted mid-task", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const infra = yield* Infrastructure
      yield* worker("survivor", { STEP_TWO_MS: "2000" })
      const run = yield* aiki.start(Fixtures.threeSteps.effect, 3)
      yield* eventually(Effect.gen(function*() {
        assert.include(yield* effectsOf(run.id), "step-two")
      }))
      yield* infra.killServer
      yield* Effect.sleep("1500 millis")
      yield* infra.startServer
      const result = yield* run.result({ timeoutMs: 60_000 })
      assert.deepStrictEqual(result, { one: 3, two: true, three: "survivor" })
      const effects = yield* effectsOf(run.id)
      assert.strictEqual(effects.filter((e) => e === "step-one").length, 1)
      assert.strictEqual(effects.filter((e) => e === "step-three").length, 1)
    }).pipe(Effect.scoped))

  it.effect("runs in flight and new runs complete after Redis is killed and comes back empty", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const infra = yield* Infrastructure
      yield* worker("steadfast", { STEP_TWO_MS: "1500" })
      const inFlight = yield* aiki.start(Fixtures.threeSteps.effect, 4)
      yield* eventually(Effect.gen(function*() {
        assert.include(yield* effectsOf(inFlight.id), "step-two")
      }))
      yield* infra.redis.stop
      // Started while Redis is down: the outbox keeps it until Redis is back.
      const whileDown = yield* aiki.start(Fixtures.threeSteps.effect, 5)
      yield* Effect.sleep("500 millis")
      yield* infra.redis.start
      const after = yield* aiki.start(Fixtures.threeSteps.effect, 6)
      for (const [handle, n] of [[inFlight, 4], [whileDown, 5], [after, 6]] as const) {
        const result = yield* handle.result({ timeoutMs: 60_000 })
        assert.deepStrictEqual(result, { one: n, two: true, three: "steadfast" })
        const effects = yield* effectsOf(handle.id)
        assert.strictEqual(effects.filter((e) => e === "step-one").length, 1)
        assert.strictEqual(effects.filter((e) => e === "step-three").length, 1)
      }
    }).pipe(Effect.scoped))
})
