/**
 * The batcher under the worker's writes: one request in flight, the next items gathering; a lazy item (a task
 * attempt's start) goes with the next item, or alone once `lingerMs` passed (time driven by `TestClock`).
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import * as Batcher from "../src/internal/Batcher.ts"

/** A batcher whose requests are recorded, each answered with its items doubled. */
const recording = Effect.gen(function*() {
  const requests: Array<ReadonlyArray<number>> = []
  const batcher = yield* Batcher.make({
    maxItems: 100,
    lingerMs: 20,
    send: (items: ReadonlyArray<number>) => Effect.sync(() => (requests.push(items), items.map((i) => i * 2)))
  })
  return { batcher, requests }
})

describe("Batcher", () => {
  it.effect("sends an item that must go at once without waiting", () =>
    Effect.gen(function*() {
      const { batcher, requests } = yield* recording
      const answer = yield* batcher.submit(1)
      assert.strictEqual(yield* Deferred.await(answer), 2)
      assert.deepStrictEqual(requests, [[1]])
    }))

  it.effect("sends a lazy item with the next item, in the order they were submitted", () =>
    Effect.gen(function*() {
      const { batcher, requests } = yield* recording
      const lazy = yield* batcher.submit(1, undefined, { lazy: true })
      yield* TestClock.adjust("5 millis")
      assert.deepStrictEqual(requests, [])
      const eager = yield* batcher.submit(2)
      assert.strictEqual(yield* Deferred.await(eager), 4)
      assert.strictEqual(yield* Deferred.await(lazy), 2)
      assert.deepStrictEqual(requests, [[1, 2]])
    }))

  it.effect("sends lazy items alone once the linger passed", () =>
    Effect.gen(function*() {
      const { batcher, requests } = yield* recording
      const first = yield* batcher.submit(1, undefined, { lazy: true })
      const second = yield* batcher.submit(2, undefined, { lazy: true })
      const waiting = yield* Effect.forkChild(Deferred.await(first))
      yield* TestClock.adjust("19 millis")
      assert.deepStrictEqual(requests, [])
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* Fiber.join(waiting), 2)
      assert.strictEqual(yield* Deferred.await(second), 4)
      assert.deepStrictEqual(requests, [[1, 2]])
    }))
})
