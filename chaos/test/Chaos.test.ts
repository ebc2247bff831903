/**
 * `pnpm chaos`, shorter: 200 runs over 12 s on two server replicas while workers are SIGKILLed every ~2 s and a
 * server, Redis and Postgres are each crashed once; then every run must have completed with its exact result, no
 * task may have completed twice, and every task that ran twice must have been in flight at a kill. (One replica
 * and the HTTP subscriber: `pnpm chaos`, `pnpm chaos --subscriber http`; a second scenario here would double the
 * time this takes.)
 */
import { assert, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Chaos from "../src/Chaos.ts"

it.live("two server replicas: every run completes exactly once through crashes of workers, a server, Redis and Postgres", () =>
  Effect.gen(function*() {
    const report = yield* Chaos.run({
      ...Chaos.defaults,
      runs: 200,
      durationMs: 12_000,
      replicas: 2,
      subscriber: "redis_streams",
      serverCrashes: 1,
      redisRestarts: 1,
      postgresCrashes: 1,
      settleTimeoutMs: 60_000
    })
    yield* Effect.logInfo(Chaos.summary(report))
    assert.deepStrictEqual(report.violations, [], `${report.violations.length} findings; logs in ${report.directory}`)
    assert.strictEqual(report.verdict.exact, 200)
    assert.isAtLeast(report.verdict.executions, 3 * 200)
    // The chaos did happen.
    assert.isAtLeast(report.kills.worker, 1)
    assert.deepStrictEqual([report.kills.server, report.kills.redis, report.kills.postgres], [1, 1, 1])
  }), { timeout: 150_000 })
