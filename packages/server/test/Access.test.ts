/**
 * Who may call what, and how bad requests are answered. Each role's key against each endpoint group (401 without
 * a valid key, 403 for a role that may not), and the typed 400/413 bodies that name what was wrong.
 */
import type { AikiClient } from "@aiki/contract/Client"
import type { RunId, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { assert, layer } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import * as TestServer from "./support/TestServer.ts"

const keys = { admin: "admin-secret", worker: "worker-secret", client: "client-secret" } as const
const name = "access" as WorkflowName
const version = "1.0.0" as WorkflowVersion
const someRun = "01900000-0000-7000-8000-000000000000" as RunId

type Outcome = "ok" | "Unauthorized" | "Forbidden"

/** One call per endpoint group; a domain error (e.g. RunNotFound) means the request got past access control. */
const calls: Record<string, (api: AikiClient) => Effect.Effect<unknown, { readonly _tag: string }>> = {
  health: (api) => api.health.server(),
  workflows: (api) => api.workflows.runs({ params: { name }, query: {} }),
  runs: (api) => api.runs.status({ params: { id: someRun } }),
  workers: (api) => api.workers.health({ params: { id: "w" as WorkerId } }),
  fleet: (api) => api.fleet.workers(),
  session: (api) => api.session.current(),
  execution: (api) => api.execution.register({ params: { id: "w" as WorkerId }, payload: { workflows: [] } })
}

const expected: Record<string, Record<"admin" | "worker" | "client" | "none" | "wrong", Outcome>> = {
  health: { admin: "ok", worker: "ok", client: "ok", none: "ok", wrong: "ok" },
  workflows: { admin: "ok", worker: "Forbidden", client: "ok", none: "Unauthorized", wrong: "Unauthorized" },
  runs: { admin: "ok", worker: "Forbidden", client: "ok", none: "Unauthorized", wrong: "Unauthorized" },
  workers: { admin: "ok", worker: "Forbidden", client: "ok", none: "Unauthorized", wrong: "Unauthorized" },
  fleet: { admin: "ok", worker: "Forbidden", client: "Forbidden", none: "Unauthorized", wrong: "Unauthorized" },
  session: { admin: "ok", worker: "Forbidden", client: "ok", none: "Unauthorized", wrong: "Unauthorized" },
  execution: { admin: "ok", worker: "ok", client: "Forbidden", none: "Unauthorized", wrong: "Unauthorized" }
}

const outcome = (effect: Effect.Effect<unknown, { readonly _tag: string }>) =>
  effect.pipe(
    Effect.as<Outcome>("ok"),
    Effect.catch((e): Effect.Effect<Outcome> =>
      Effect.succeed(e._tag === "Unauthorized" || e._tag === "Forbidden" ? e._tag : "ok")
    )
  )

const raw = (path: string, init: RequestInit = {}) =>
  Effect.gen(function*() {
    const { baseUrl } = yield* TestServer.TestServer
    return yield* Effect.promise(async () => {
      const response = await fetch(`${baseUrl}${path}`, init)
      const text = await response.text()
      return { status: response.status, headers: response.headers, body: text.length > 0 ? JSON.parse(text) : undefined }
    })
  })

layer(
  TestServer.layer({
    apiKeys: [
      { key: Redacted.make(keys.admin), role: "admin", name: "API_KEY" },
      { key: Redacted.make(keys.worker), role: "worker", name: "API_KEYS[0]" },
      { key: Redacted.make(keys.client), role: "client", name: "API_KEYS[1]" }
    ],
    maxPayloadBytes: 1024,
    corsOrigins: ["https://app.example.com"]
  }),
  { excludeTestServices: true }
)("access", (it) => {
  it.effect("lets each role reach exactly the groups it may", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const clients = {
        admin: yield* server.client(keys.admin),
        worker: yield* server.client(keys.worker),
        client: yield* server.client(keys.client),
        none: yield* server.client(),
        wrong: yield* server.client("not-a-key")
      }
      const actual: Record<string, Record<string, Outcome>> = {}
      for (const [group, call] of Object.entries(calls)) {
        actual[group] = {}
        for (const [who, api] of Object.entries(clients)) {
          actual[group][who] = yield* outcome(call(api))
        }
      }
      assert.deepStrictEqual(actual, expected)
    }))

  it.effect("answers 401 and 403 with a typed body that says why", () =>
    Effect.gen(function*() {
      const missing = yield* raw(`/workflow-runs/${someRun}/status`)
      assert.strictEqual(missing.status, 401)
      assert.deepStrictEqual(missing.body, { _tag: "Unauthorized", message: "Missing X-API-Key header" })
      const forbidden = yield* raw(`/workers/w/claim`, {
        method: "POST",
        headers: { "x-api-key": keys.client, "content-type": "application/json" },
        body: JSON.stringify({ runIds: [someRun], replayVersion: 2 })
      })
      assert.strictEqual(forbidden.status, 403)
      assert.strictEqual(forbidden.body._tag, "Forbidden")
    }))

  it.effect("exchanges a key for an HttpOnly, SameSite=Strict session cookie that carries the key's role", () =>
    Effect.gen(function*() {
      const login = (apiKey: string) =>
        raw("/auth/session", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ apiKey })
        })
      const client = yield* login(keys.client)
      assert.strictEqual(client.status, 200)
      assert.strictEqual(client.body.role, "client")
      assert.strictEqual(client.body.keyName, "API_KEYS[1]")
      const setCookie = client.headers.get("set-cookie") ?? ""
      assert.match(setCookie, /^aiki_session=[^;]+/)
      assert.include(setCookie, "HttpOnly")
      assert.include(setCookie, "SameSite=Strict")
      assert.include(setCookie, "Path=/")
      assert.notInclude(setCookie, keys.client)
      const cookie = setCookie.split(";")[0]!

      // The cookie stands for the client key: runs yes (404: past access control), the fleet no, live updates yes.
      const status = yield* raw(`/workflow-runs/${someRun}/status`, { headers: { cookie } })
      assert.strictEqual(status.status, 404)
      const fleet = yield* raw("/workers", { headers: { cookie } })
      assert.strictEqual(fleet.status, 403)
      assert.strictEqual(fleet.body._tag, "Forbidden")
      const current = yield* raw("/auth/session", { headers: { cookie } })
      assert.deepStrictEqual(current.body, { role: "client", keyName: "API_KEYS[1]", authRequired: true })
      const { baseUrl } = yield* TestServer.TestServer
      const sse = yield* Effect.promise(async () => {
        const controller = new AbortController()
        const response = await fetch(`${baseUrl}/workflow-runs/activity`, { headers: { cookie }, signal: controller.signal })
        const reader = response.body!.getReader()
        const first = new TextDecoder().decode((await reader.read()).value)
        controller.abort()
        return { status: response.status, type: response.headers.get("content-type"), first }
      })
      assert.strictEqual(sse.status, 200)
      assert.include(sse.type, "text/event-stream")
      assert.include(sse.first, "Connected")

      // An admin's cookie reaches the fleet; a header key wins over a cookie.
      const admin = yield* login(keys.admin)
      const adminCookie = (admin.headers.get("set-cookie") ?? "").split(";")[0]!
      assert.strictEqual((yield* raw("/workers", { headers: { cookie: adminCookie } })).status, 200)
      assert.strictEqual((yield* raw("/workers", { headers: { cookie: adminCookie, "x-api-key": keys.client } })).status, 403)

      // A forged or altered cookie is refused with a reason; so are a wrong key and a key that cannot read runs.
      const [payload, signature] = cookie.slice("aiki_session=".length).split(".")
      const forgedPayload = Buffer.from(JSON.stringify({ k: "API_KEY", e: Date.now() + 60_000 })).toString("base64url")
      for (const bad of [`${forgedPayload}.${signature}`, `${payload}.${signature!.slice(1)}`, "garbage"]) {
        const refused = yield* raw(`/workflow-runs/${someRun}/status`, { headers: { cookie: `aiki_session=${bad}` } })
        assert.strictEqual(refused.status, 401, bad)
        assert.include(refused.body.message, "log in again")
      }
      const wrong = yield* login("not-a-key")
      assert.strictEqual(wrong.status, 401)
      assert.isNull(wrong.headers.get("set-cookie"))
      const worker = yield* login(keys.worker)
      assert.strictEqual(worker.status, 403)
      assert.include(worker.body.message, "worker key")
      const empty = yield* login("")
      assert.strictEqual(empty.status, 400)
      assert.deepStrictEqual(empty.body.issues[0].path, ["body", "apiKey"])

      // Logging out clears the cookie.
      const logout = yield* raw("/auth/session", { method: "DELETE", headers: { cookie } })
      assert.strictEqual(logout.status, 204)
      assert.match(logout.headers.get("set-cookie") ?? "", /^aiki_session=;.*Max-Age=0/)
    }))

  it.effect("rejects bad input with a 400 naming the field, and writes nothing", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const headers = { "x-api-key": keys.client, "content-type": "application/json" }
      const start = `/workflows/${name}/versions/${version}/start`
      const malformed = yield* raw(start, { method: "POST", headers, body: "{not json" })
      assert.strictEqual(malformed.status, 400)
      assert.strictEqual(malformed.body._tag, "InvalidRequest")
      assert.deepStrictEqual(malformed.body.issues[0].path, ["body"])

      const wrongType = yield* raw(start, { method: "POST", headers, body: JSON.stringify({ payload: 1, idempotencyKey: 5 }) })
      assert.strictEqual(wrongType.status, 400)
      assert.deepStrictEqual(wrongType.body.issues[0].path, ["body", "idempotencyKey"])

      const missing = yield* raw(start, { method: "POST", headers, body: JSON.stringify({}) })
      assert.strictEqual(missing.status, 400)
      assert.deepStrictEqual(missing.body.issues[0].path, ["body", "payload"])

      const badVersion = yield* raw(`/workflows/${name}/versions/latest/start`, { method: "POST", headers, body: "{\"payload\":1}" })
      assert.strictEqual(badVersion.status, 400)
      assert.deepStrictEqual(badVersion.body.issues[0].path, ["path", "version"])
      assert.include(badVersion.body.message, "semantic version")

      const badId = yield* raw(`/workflow-runs/not-a-uuid/status`, { headers })
      assert.strictEqual(badId.status, 400)
      assert.deepStrictEqual(badId.body.issues[0].path, ["path", "id"])

      const badQuery = yield* raw(`/workflows/${name}/runs?limit=0`, { headers })
      assert.strictEqual(badQuery.status, 400)
      assert.deepStrictEqual(badQuery.body.issues[0].path, ["query", "limit"])

      const tooLarge = yield* raw(start, { method: "POST", headers, body: JSON.stringify({ payload: "x".repeat(4096) }) })
      assert.strictEqual(tooLarge.status, 413)
      assert.deepStrictEqual(tooLarge.body._tag, "PayloadTooLarge")
      assert.strictEqual(tooLarge.body.maxBytes, 1024)

      // None of the rejected requests created a run.
      const api = yield* server.client(keys.client)
      const page = yield* api.workflows.runs({ params: { name }, query: {} })
      assert.deepStrictEqual(page.runs, [])

      // The derived client decodes the same answers as typed errors.
      const typed = yield* api.workflows.start({
        params: { name, version },
        payload: { payload: "y".repeat(4096) }
      }).pipe(Effect.flip)
      assert.strictEqual(typed._tag, "PayloadTooLarge")
    }))

  it.effect("serves the OpenAPI document, docs, metrics and CORS for the configured origins", () =>
    Effect.gen(function*() {
      const openapi = yield* raw("/openapi.json")
      assert.strictEqual(openapi.status, 200)
      assert.property(openapi.body.paths, "/workflows/{name}/versions/{version}/start")
      assert.property(openapi.body.paths, "/workflow-runs/{id}/status")
      const { baseUrl } = yield* TestServer.TestServer
      const docs = yield* Effect.promise(() => fetch(`${baseUrl}/docs`).then((r) => r.status))
      assert.strictEqual(docs, 200)
      const metrics = yield* Effect.promise(() => fetch(`${baseUrl}/metrics`).then((r) => r.text()))
      assert.include(metrics, "aiki_workers_active")
      const preflight = yield* Effect.promise(() =>
        fetch(`${baseUrl}/workflow-runs/${someRun}/status`, {
          method: "OPTIONS",
          headers: { origin: "https://app.example.com", "access-control-request-method": "GET" }
        })
      )
      assert.strictEqual(preflight.headers.get("access-control-allow-origin"), "https://app.example.com")
      const other = yield* Effect.promise(() =>
        fetch(`${baseUrl}/health`, { headers: { origin: "https://evil.example.com" } })
      )
      assert.notStrictEqual(other.headers.get("access-control-allow-origin"), "https://evil.example.com")
    }))
})
