/**
 * A deployment that authenticates with JWTs only (`JWT_SECRET`, no API key): the promise API's client and worker
 * send `token` as `Authorization: Bearer` on every request — starts, the execution protocol, the live event
 * streams — and a run goes from start to completion. The worker's token carries the `worker` role, the
 * application's the `client` role.
 */
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { createHmac } from "node:crypto"
import { client, task, worker, workflow } from "../src/index.ts"
import * as AikiServer from "./support/AikiServer.ts"

const secret = "a-secret-for-hs256-of-32-characters-at-least"

/** An HS256 JWT, as an identity provider would issue it. */
const sign = (claims: Record<string, unknown>) => {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url")
  const body = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ exp: Math.floor(Date.now() / 1000) + 300, ...claims })}`
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`
}

class Server extends Context.Service<Server, AikiServer.AikiServer>()("test/Server") {}

const greet = task({ name: "greet", run: ({ payload }: { payload: string }) => `hello ${payload}` })
const greeting = workflow({
  name: "jwt-greeting",
  version: "1.0.0",
  run: ({ workflowRun }, name: string) => greet.run(workflowRun, { payload: name })
})

layer(Layer.effect(Server, AikiServer.make({ JWT_SECRET: secret })), { excludeTestServices: true, timeout: 60_000 })("bearer token", (it) => {
  it.effect("a client and a worker holding JWTs only run a workflow to completion", () =>
    Effect.gen(function*() {
      const { baseUrl } = yield* Server
      let asked = 0
      const workerSide = yield* Effect.acquireRelease(
        Effect.promise(() => client({ baseUrl, token: () => (asked++, sign({ sub: "worker-1", role: "worker" })) })),
        (aiki) => Effect.promise(() => aiki.close())
      )
      const w = yield* Effect.promise(() => worker(workerSide, { id: "jwt-worker", subscriber: { type: "http", blockTimeMs: 500 } }))
      w.workflowRegistry.add(greeting)
      void w.start()
      yield* Effect.addFinalizer(() => Effect.promise(() => w.stop()))

      const app = yield* Effect.acquireRelease(
        Effect.promise(() => client({ baseUrl, token: sign({ sub: "shop", role: "client" }) })),
        (aiki) => Effect.promise(() => aiki.close())
      )
      const handle = yield* Effect.promise(() => greeting.start(app, { payload: "ann" }))
      assert.strictEqual(yield* Effect.promise(() => handle.waitForCompletion({ timeoutMs: 20_000 })), "hello ann")
      assert.isAbove(asked, 2, "the worker asks for its token before each request")

      // Without a token, or with the wrong role, the server says no.
      const anonymous = yield* Effect.promise(() => fetch(`${baseUrl}/workflow-runs/${handle.id}/status`))
      assert.strictEqual(anonymous.status, 401)
      const workerReads = yield* Effect.promise(() =>
        fetch(`${baseUrl}/workflow-runs/${handle.id}/status`, { headers: { authorization: `Bearer ${sign({ role: "worker" })}` } })
      )
      assert.strictEqual(workerReads.status, 403)
    }))
})
