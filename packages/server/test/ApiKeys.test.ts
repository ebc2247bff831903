/**
 * Dashboard sessions: a token stands for its key until it expires (time driven by `TestClock`), and stops being
 * accepted as soon as its key is changed or removed from the configuration.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Option, Redacted } from "effect"
import { TestClock } from "effect/testing"
import { ApiKeys } from "../src/ApiKeys.ts"
import { type ApiKey, ServerConfig } from "../src/ServerConfig.ts"

const client: ApiKey = { key: Redacted.make("client-secret"), role: "client", name: "API_KEYS[0]" }
const keysWith = (apiKeys: ReadonlyArray<ApiKey>) =>
  ApiKeys.layer.pipe(Layer.provide(ServerConfig.layer({ apiKeys, sessionTtlMs: 60_000 })))

const issue = ApiKeys.use((keys) => keys.issueSession(client))
const verify = (token: string) => ApiKeys.use((keys) => keys.verifySession(token))

describe("ApiKeys", () => {
  it.effect("accepts a session until it expires", () =>
    Effect.gen(function*() {
      const { expiresAt, token } = yield* issue
      assert.strictEqual(expiresAt, 60_000)
      yield* TestClock.adjust("59 seconds")
      const valid = yield* verify(token)
      assert.strictEqual(Option.getOrUndefined(valid)?.key.name, "API_KEYS[0]")
      yield* TestClock.adjust("1 second")
      assert.isTrue(Option.isNone(yield* verify(token)))
    }).pipe(Effect.provide(keysWith([client]))))

  it.effect("refuses a session whose key changed or was removed", () =>
    Effect.gen(function*() {
      const { token } = yield* issue.pipe(Effect.provide(keysWith([client])))
      const rotated = { ...client, key: Redacted.make("rotated-secret") }
      assert.isTrue(Option.isSome(yield* verify(token).pipe(Effect.provide(keysWith([client])))))
      assert.isTrue(Option.isNone(yield* verify(token).pipe(Effect.provide(keysWith([rotated])))))
      assert.isTrue(Option.isNone(yield* verify(token).pipe(Effect.provide(keysWith([])))))
    }))

  it.effect("finds a presented key's entry, and nothing for another", () =>
    Effect.gen(function*() {
      const keys = yield* ApiKeys
      assert.isTrue(keys.enabled)
      assert.strictEqual(Option.getOrUndefined(keys.find("client-secret"))?.role, "client")
      assert.isTrue(Option.isNone(keys.find("client-secret ")))
    }).pipe(Effect.provide(keysWith([client]))))
})
