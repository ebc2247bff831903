/**
 * Each example runs end to end as a user runs it (`pnpm example NAME`), against a real server process: with
 * Redis Streams, and with the HTTP subscriber (no Redis on the worker side).
 */
import { freePort } from "@aiki/testing/freePort"
import { spawnNode, waitForHealth } from "@aiki/testing/NodeProcess"
import * as TestDatabase from "@aiki/testing/TestDatabase"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { randomBytes } from "node:crypto"
import { fileURLToPath } from "node:url"

const redisUrl = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379"
const serverMain = fileURLToPath(import.meta.resolve("@aiki/server/main"))
const runExample = fileURLToPath(new URL("../src/run.ts", import.meta.url))

class Server extends Context.Service<Server, { readonly baseUrl: string }>()("test/Server") {}

const TestLayer = Layer.effect(Server, Effect.gen(function*() {
  const database = yield* TestDatabase.make
  const port = yield* Effect.promise(freePort)
  const running = yield* spawnNode(serverMain, {
    DATABASE_URL: database.url,
    REDIS_URL: redisUrl,
    REDIS_PREFIX: `aiki-test-${randomBytes(4).toString("hex")}`,
    PORT: String(port),
    HOST: "127.0.0.1",
    AUTH: "off"
  })
  const baseUrl = `http://127.0.0.1:${port}`
  yield* waitForHealth(`${baseUrl}/health`, running)
  return { baseUrl }
}))

const example = (name: string, env: Record<string, string>) =>
  Effect.gen(function*() {
    const { baseUrl } = yield* Server
    const run = yield* spawnNode(runExample, { AIKI_URL: baseUrl, ...env, NO_COLOR: "1" }, [name])
    return yield* Effect.promise(() => run.exited)
  }).pipe(Effect.scoped)

layer(TestLayer, { excludeTestServices: true, timeout: 60_000 })("examples", (it) => {
  it.effect("order-processing charges, reserves and confirms (Redis Streams)", () =>
    Effect.gen(function*() {
      const exited = yield* example("order-processing", { REDIS_URL: redisUrl })
      assert.strictEqual(exited.code, 0, exited.stdout + exited.stderr)
      assert.include(exited.stdout, "send-confirmation      completed")
      assert.include(exited.stdout, "\"chargeId\": \"ch-pay-order-1001\"")
    }))

  it.effect("morning-routine retries the snoozed alarm (HTTP subscriber)", () =>
    Effect.gen(function*() {
      const exited = yield* example("morning-routine", {})
      assert.strictEqual(exited.code, 0, exited.stdout + exited.stderr)
      assert.include(exited.stdout, "ring-alarm             completed (attempt 2)")
      assert.include(exited.stdout, "2 cup(s) of coffee ready")
    }))

  it.effect("user-onboarding waits for the verification event, welcomes, and sends tips after its sleep", () =>
    Effect.gen(function*() {
      const exited = yield* example("user-onboarding", { REDIS_URL: redisUrl })
      assert.strictEqual(exited.code, 0, exited.stdout + exited.stderr)
      const result = JSON.parse(exited.stdout.slice(exited.stdout.indexOf("Result:") + "Result:".length)) as {
        readonly userId: string
        readonly sent: ReadonlyArray<string>
      }
      assert.deepStrictEqual(result.userId, "user-ada")
      assert.deepStrictEqual(result.sent, [
        "verify-email sent to ada@example.com",
        "welcome sent to ada@example.com",
        "getting-started-tips sent to ada@example.com"
      ])
      // It was parked on the server until the event came.
      const { baseUrl } = yield* Server
      const runId = /Started user-onboarding run (\S+)/.exec(exited.stdout)![1]!
      const transitions = yield* Effect.promise(() =>
        fetch(`${baseUrl}/workflow-runs/${runId}/transitions`).then((r) => r.json() as Promise<ReadonlyArray<{ readonly toState: string }>>)
      )
      assert.include(transitions.map((t) => t.toState), "awaiting_event")
    }))

  it.effect("effect-order-processing returns its typed result", () =>
    Effect.gen(function*() {
      const exited = yield* example("effect-order-processing", { REDIS_URL: redisUrl })
      assert.strictEqual(exited.code, 0, exited.stdout + exited.stderr)
      assert.include(exited.stdout, "\"chargeId\": \"ch-order-2002\"")
    }))
})
