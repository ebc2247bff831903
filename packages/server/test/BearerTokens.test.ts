/**
 * JWTs as `Authorization: Bearer`: verified with the HS256 secret or a key of the JWKS (served by this test), the
 * role read from the configured claim (here a nested array, `realm_access.roles`), and refused with a reason:
 * expired, forged, from another issuer or audience, without a role. API keys keep working beside them, and the
 * SDK's client sends a token it asks for before every request.
 */
import * as Client from "@aiki/contract/Client"
import type { AikiClient } from "@aiki/contract/Client"
import type { RunId, WorkerId, WorkflowName } from "@aiki/contract/Ids"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { FetchHttpClient } from "effect/http"
import * as Jose from "jose"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import * as TestServer from "./support/TestServer.ts"

const secret = "a-shared-secret-of-at-least-32-characters"
const adminKey = "admin-key-beside-the-tokens"
const issuer = "https://id.example.com"
const audience = "aiki"
const someRun = "01900000-0000-7000-8000-000000000000" as RunId

/** The identity provider of this test: an ES256 key pair, the public half published as a JWKS. */
class Provider extends Context.Service<Provider, {
  readonly sign: (claims: Jose.JWTPayload, options?: { readonly expiresIn?: string | number; readonly kid?: string }) => Promise<string>
}>()("test/Provider") {}

const ProviderLayer = Layer.unwrap(Effect.gen(function*() {
  const { privateKey, publicKey } = yield* Effect.promise(() => Jose.generateKeyPair("ES256"))
  const jwk = { ...(yield* Effect.promise(() => Jose.exportJWK(publicKey))), kid: "key-1", alg: "ES256", use: "sig" }
  const server = yield* Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<Server>((resolve) => {
        const server = createServer((req, res) => {
          if (req.url === "/.well-known/jwks.json") res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: [jwk] }))
          else res.writeHead(404).end()
        })
        server.listen(0, "127.0.0.1", () => resolve(server))
      })
    ),
    (server) => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
  )
  const jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`
  const provider = Provider.of({
    sign: (claims, options = {}) =>
      new Jose.SignJWT(claims)
        .setProtectedHeader({ alg: "ES256", kid: options.kid ?? "key-1" })
        .setIssuer(issuer)
        .setAudience(audience)
        .setIssuedAt()
        .setExpirationTime(options.expiresIn ?? "5m")
        .sign(privateKey)
  })
  return Layer.succeed(Provider, provider).pipe(Layer.provideMerge(TestServer.layer({
    apiKeys: [{ key: Redacted.make(adminKey), role: "admin", name: "API_KEY" }],
    jwt: Option.some({
      secret: Option.some(Redacted.make(secret)),
      jwksUrl: Option.some(jwksUrl),
      issuer: Option.some(issuer),
      audience: Option.some(audience),
      roleClaim: "realm_access.roles"
    })
  })))
}))

/** A token signed with the shared secret (HS256). */
const hs256 = (claims: Jose.JWTPayload, options: { readonly key?: string; readonly expiresIn?: string | number } = {}) =>
  new Jose.SignJWT(claims)
    .setProtectedHeader({ alg: "HS256" })
    .setIssuer(issuer)
    .setAudience(audience)
    .setExpirationTime(options.expiresIn ?? "5m")
    .sign(new TextEncoder().encode(options.key ?? secret))

const roles = (...roles: ReadonlyArray<string>) => ({ sub: "ann", realm_access: { roles } })

/** The status and body the server answers `path` with, for `headers`. */
const call = (path: string, headers: Record<string, string>) =>
  Effect.gen(function*() {
    const { baseUrl } = yield* TestServer.TestServer
    return yield* Effect.promise(async () => {
      const response = await fetch(`${baseUrl}${path}`, { headers })
      return { status: response.status, body: await response.json() as Record<string, unknown> }
    })
  })

const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

/** The API as the SDK reaches it, with a token it asks for before each request. */
const clientWith = (token: () => Promise<string>) =>
  Effect.gen(function*() {
    const { baseUrl } = yield* TestServer.TestServer
    return yield* Client.make({ baseUrl, token }).pipe(Effect.provide(FetchHttpClient.layer))
  })

const outcome = (effect: Effect.Effect<unknown, { readonly _tag: string }>) =>
  effect.pipe(Effect.as("ok"), Effect.catch((e) => Effect.succeed(e._tag)))

const reads = (api: AikiClient) => api.workflows.runs({ params: { name: "jwt" as WorkflowName }, query: {} })

layer(ProviderLayer, { excludeTestServices: true })("bearer tokens", (it) => {
  it.effect("a token's role claim decides what it may call, for HS256 and JWKS-signed tokens alike", () =>
    Effect.gen(function*() {
      const provider = yield* Provider
      const client = yield* Effect.promise(() => hs256(roles("client")))
      assert.strictEqual((yield* call("/workflows/jwt/runs", bearer(client))).status, 200)
      const fleet = yield* call("/workers", bearer(client))
      assert.deepStrictEqual([fleet.status, fleet.body.message], [403, "A client token may not use operator endpoints"])
      const worker = yield* Effect.promise(() => provider.sign(roles("offline_access", "worker")))
      const api = yield* clientWith(() => Promise.resolve(worker))
      assert.strictEqual(yield* outcome(api.execution.register({ params: { id: "jwt-worker" as WorkerId }, payload: { workflows: [] } })), "ok")
      assert.strictEqual(yield* outcome(reads(api)), "Forbidden")
      const admin = yield* Effect.promise(() => provider.sign(roles("admin")))
      const session = yield* call("/auth/session", bearer(admin))
      assert.deepStrictEqual(session.body, { role: "admin", keyName: "jwt:ann", authRequired: true })
    }))

  it.effect("refuses expired, forged, foreign and roleless tokens, saying why", () =>
    Effect.gen(function*() {
      const provider = yield* Provider
      const refused = (token: string) =>
        Effect.map(call(`/workflow-runs/${someRun}/status`, bearer(token)), ({ body, status }) => [status, body.message])
      assert.deepStrictEqual(
        yield* refused(yield* Effect.promise(() => hs256(roles("admin"), { expiresIn: Math.floor(Date.now() / 1000) - 120 }))),
        [401, "The bearer token has expired"]
      )
      assert.deepStrictEqual(
        yield* refused(yield* Effect.promise(() => hs256(roles("admin"), { key: "another-secret-of-at-least-32-characters" }))),
        [401, "The bearer token's signature is not valid"]
      )
      assert.deepStrictEqual(
        yield* refused(yield* Effect.promise(() => provider.sign(roles("admin"), { kid: "key-2" }))),
        [401, "No key published at JWT_JWKS_URL matches the bearer token"]
      )
      const foreign = yield* Effect.promise(() =>
        new Jose.SignJWT(roles("admin")).setProtectedHeader({ alg: "HS256" }).setIssuer("https://evil.example.com")
          .setAudience(audience).setExpirationTime("5m").sign(new TextEncoder().encode(secret))
      )
      assert.deepStrictEqual(yield* refused(foreign), [401, "The bearer token is not accepted: unexpected \"iss\" claim value"])
      const unsigned = new Jose.UnsecuredJWT(roles("admin")).setIssuer(issuer).setAudience(audience).encode()
      assert.strictEqual((yield* refused(unsigned))[0], 401)
      assert.deepStrictEqual(
        yield* refused(yield* Effect.promise(() => hs256(roles("superuser")))),
        [403, "The bearer token's \"realm_access.roles\" claim names no role (admin, worker or client)"]
      )
      assert.deepStrictEqual(yield* refused("not.a.jwt"), [401, "The bearer token is not a valid JWT"])
    }))

  it.effect("API keys keep working beside tokens, and a request with neither is told what to send", () =>
    Effect.gen(function*() {
      assert.strictEqual((yield* call("/workers", { "x-api-key": adminKey })).status, 200)
      assert.deepStrictEqual((yield* call("/workers", {})).body, {
        _tag: "Unauthorized",
        message: "Missing X-API-Key header or Authorization: Bearer token"
      })
      // A token is asked for before every request, so a renewed one is used as soon as it is there.
      let current = yield* Effect.promise(() => hs256(roles("client"), { expiresIn: Math.floor(Date.now() / 1000) - 120 }))
      const api = yield* clientWith(() => Promise.resolve(current))
      assert.strictEqual(yield* outcome(reads(api)), "Unauthorized")
      current = yield* Effect.promise(() => hs256(roles("client")))
      assert.strictEqual(yield* outcome(reads(api)), "ok")
    }))
})
