/**
 * The batcher under the worker's writes: requests in flight, the next items gathering; a lazy item (a task
 * attempt's start) goes with the next item, or alone once `lingerMs` passed (time driven by `TestClock`); items of
 * one key (one run's writes) never in two requests at once.
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

/** Lets every fiber that can go on do so. */
const idle = Effect.forEach(Array.from({ length: 20 }), () => Effect.yieldNow, { discard: true })

/** A batcher keyed by an item's tens (12 and 17 share a key), whose requests wait until the test answers them. */
const gated = Effect.gen(function*() {
  const requests: Array<{ readonly items: ReadonlyArray<number>; readonly answer: Deferred.Deferred<void> }> = []
  const batcher = yield* Batcher.make({
    maxItems: 100,
    maxInFlight: 2,
    keyOf: (item: number) => Math.floor(item / 10),
    send: (items: ReadonlyArray<number>) =>
      Effect.gen(function*() {
        const answer = yield* Deferred.make<void>()
        requests.push({ items, answer })
        yield* Deferred.await(answer)
        return items.map((i) => i * 2)
      })
  })
  return { batcher, requests, sent: () => requests.map((r) => r.items) }
})

describe("Batcher with keys", () => {
  it.effect("keeps up to maxInFlight requests in flight; the next items gather behind them", () =>
    Effect.gen(function*() {
      const { batcher, requests, sent } = yield* gated
      yield* batcher.submit(10)
      yield* idle
      yield* batcher.submit(20)
      yield* idle
      yield* batcher.submit(30)
      yield* batcher.submit(40)
      yield* idle
      assert.deepStrictEqual(sent(), [[10], [20]])
      yield* Deferred.succeed(requests[0]!.answer, undefined)
      yield* idle
      assert.deepStrictEqual(sent(), [[10], [20], [30, 40]])
    }))

  it.effect("never has two requests in flight with items of one key, and keeps a key's items in order", () =>
    Effect.gen(function*() {
      const { batcher, requests, sent } = yield* gated
      yield* batcher.submit(11)
      yield* idle
      // 12 shares 11's key: it waits for 11's request although a second request could go; 21 goes meanwhile.
      const twelve = yield* batcher.submit(12)
      yield* batcher.submit(21)
      yield* batcher.submit(17)
      yield* idle
      assert.deepStrictEqual(sent(), [[11], [21]])
      yield* Deferred.succeed(requests[1]!.answer, undefined)
      yield* idle
      assert.deepStrictEqual(sent(), [[11], [21]])
      yield* Deferred.succeed(requests[0]!.answer, undefined)
      yield* idle
      assert.deepStrictEqual(sent(), [[11], [21], [12, 17]])
      yield* Deferred.succeed(requests[2]!.answer, undefined)
      assert.strictEqual(yield* Deferred.await(twelve), 24)
    }))
})
