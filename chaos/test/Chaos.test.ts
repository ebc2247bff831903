/**
 * `pnpm chaos`, shorter: a few hundred runs while workers are SIGKILLed every ~2 s and the server, Redis and
 * Postgres are each crashed once; then every run must have completed with its exact result, no task may have
 * completed twice, and every task that ran twice must have been in flight at a kill. Once with one server and
 * Redis Streams, once with two replicas and workers long-polling over HTTP.
 */
import { assert, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Chaos from "../src/Chaos.ts"

const chaos = (options: Partial<Chaos.ChaosOptions>) =>
  Effect.gen(function*() {
    const report = yield* Chaos.run({
      ...Chaos.defaults,
      runs: 200,
      durationMs: 12_000,
      serverCrashes: 1,
      redisRestarts: 1,
      postgresCrashes: 1,
      settleTimeoutMs: 60_000,
      ...options
    })
    yield* Effect.logInfo(Chaos.summary(report))
    assert.deepStrictEqual(report.violations, [], `${report.violations.length} findings; logs in ${report.directory}`)
    assert.strictEqual(report.verdict.exact, report.options.runs)
    assert.isAtLeast(report.verdict.executions, 3 * report.options.runs)
    // The chaos did happen.
    assert.isAtLeast(report.kills.worker, 1)
    assert.strictEqual(report.kills.server, report.options.serverCrashes)
    assert.strictEqual(report.kills.postgres, report.options.postgresCrashes)
    assert.strictEqual(report.kills.redis, report.options.subscriber === "redis_streams" ? report.options.redisRestarts : 0)
  })

it.live("one server, Redis Streams: every run completes exactly once through crashes of everything", () =>
  chaos({ replicas: 1, subscriber: "redis_streams" }), { timeout: 150_000 })

it.live("two server replicas, HTTP long-polling: every run completes exactly once through crashes of everything", () =>
  chaos({ replicas: 2, subscriber: "http", runs: 150 }), { timeout: 150_000 })
