/**
 * Postgres is the truth, Redis a transport. Against a Redis of this file's own that is killed and restarted empty:
 * a run started while Redis is down is published once it is back; runs whose stream entries Redis lost are
 * republished at once (not after `REPUBLISH_AFTER_MS`); a run whose lease lapsed is requeued. Nothing is mocked.
 */
import type { RunId, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { Redis } from "ioredis"
import { consumerGroup, streamKey } from "../src/RunStreams.ts"
import { eventually } from "@aiki/testing/eventually"
import * as RedisProcess from "@aiki/testing/RedisProcess"
import * as TestServer from "./support/TestServer.ts"

const name = "recovery" as WorkflowName
const version = "1.0.0" as WorkflowVersion

class PrivateRedis extends Context.Service<PrivateRedis, RedisProcess.RedisProcess>()("test/PrivateRedis") {}

const TestLayer = Layer.unwrap(Effect.gen(function*() {
  const redis = yield* RedisProcess.make
  return TestServer.layer({ redisUrl: redis.url, reaperIntervalMs: 200, republishAfterMs: 1_000 }).pipe(
    Layer.provideMerge(Layer.succeed(PrivateRedis, redis))
  )
}))

/** A plain connection to the private Redis, to look at streams as a worker would. */
const inspect = <A>(f: (redis: Redis) => Promise<A>) =>
  Effect.gen(function*() {
    const { url } = yield* PrivateRedis
    return yield* Effect.acquireUseRelease(
      Effect.sync(() => new Redis(url, { maxRetriesPerRequest: 1 })),
      (redis) => Effect.promise(() => f(redis)),
      (redis) => Effect.sync(() => redis.disconnect())
    )
  })

/** The run ids in a stream, in order. */
const entries = (stream: string) =>
  inspect((redis) => redis.xrange(stream, "-", "+")).pipe(
    Effect.map((items) => items.map(([, fields]) => fields[fields.indexOf("runId") + 1]))
  )

const streamOf = Effect.map(TestServer.TestServer, (s) => streamKey(s.redisPrefix, name, version))

layer(TestLayer, { excludeTestServices: true })("recovery", (it) => {
  it.effect("publishes a run started while Redis is down once Redis is back", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const redis = yield* PrivateRedis
      const api = yield* server.client()
      const stream = yield* streamOf
      yield* redis.stop
      const health = yield* api.health.redis().pipe(Effect.flip)
      assert.strictEqual(health._tag, "DependencyUnavailable")
      const { id } = yield* api.workflows.start({ params: { name, version }, payload: { payload: "while down" } })
      const sql = yield* SqlClient.SqlClient
      const unpublished = yield* sql<{ n: number }>`
        SELECT count(*)::int AS n FROM outbox WHERE run_id = ${id} AND published_at IS NULL`
      assert.strictEqual(unpublished[0]!.n, 1)

      yield* redis.start
      yield* eventually(Effect.gen(function*() {
        assert.include(yield* entries(stream), id)
      }))
      yield* eventually(Effect.gen(function*() {
        const rows = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE published_at IS NULL`
        assert.strictEqual(rows[0]!.n, 0)
      }))
      // The group exists from id 0, so a worker that joins now still receives the entry.
      const read = yield* inspect((r) => r.xreadgroup("GROUP", consumerGroup, "w1", "COUNT", 10, "STREAMS", stream, ">"))
      assert.include(JSON.stringify(read), id)
      yield* api.health.redis()
    }))

  it.effect("republishes a pending run whose stream entry was lost (Redis restarted empty), and only once", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const redis = yield* PrivateRedis
      const api = yield* server.client()
      const stream = yield* streamOf
      const { id: lost } = yield* api.workflows.start({ params: { name, version }, payload: { payload: "lost" } })
      yield* eventually(Effect.gen(function*() {
        assert.include(yield* entries(stream), lost)
      }))
      yield* redis.stop
      yield* redis.start
      assert.deepStrictEqual(yield* entries(stream), [])
      const { id: kept } = yield* api.workflows.start({ params: { name, version }, payload: { payload: "kept" } })
      yield* eventually(Effect.gen(function*() {
        const ids = yield* entries(stream)
        assert.include(ids, lost)
        assert.include(ids, kept)
      }))
      // Once republished, the run is not published again while its entry is there.
      yield* Effect.sleep("2500 millis")
      const ids = yield* entries(stream)
      assert.strictEqual(ids.filter((i) => i === lost).length, 1)
      assert.strictEqual(ids.filter((i) => i === kept).length, 1)
    }))

  it.effect("republishes under the current name a pending run whose entry sits in a stream named without a hash tag", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const api = yield* server.client()
      const stream = yield* streamOf
      const sql = yield* SqlClient.SqlClient
      const { id } = yield* api.workflows.start({ params: { name, version }, payload: { payload: "upgraded" } })
      yield* eventually(Effect.gen(function*() {
        assert.include(yield* entries(stream), id)
      }))
      // As a server before hash tags published it: the entry exists, under the old name no worker reads any more.
      const legacy = `${server.redisPrefix}:workflow:${name}:${version}`
      const messageId = yield* inspect((r) => r.xadd(legacy, "*", "runId", id))
      yield* inspect((r) => r.del(stream))
      yield* sql`UPDATE outbox SET stream = ${legacy}, message_id = ${messageId} WHERE run_id = ${id}`
      yield* eventually(Effect.gen(function*() {
        assert.include(yield* entries(stream), id)
      }))
      const rows = yield* sql<{ stream: string }>`SELECT stream FROM outbox WHERE run_id = ${id} ORDER BY id`
      assert.deepStrictEqual(rows.map((r) => r.stream), [legacy, stream])
    }))

  it.effect("requeues a run whose lease lapsed, so another worker can take it", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const api = yield* server.client()
      const stream = yield* streamOf
      const sql = yield* SqlClient.SqlClient
      const { id } = yield* api.workflows.start({ params: { name, version }, payload: { payload: "lapsed" } })
      const claims = yield* api.execution.claim({ params: { id: "dead-worker" as WorkerId }, payload: { runIds: [id], replayVersion: 2 } })
      const lease = claims.leases[0]!
      yield* sql`UPDATE workflow_runs SET lease_expires_at = now() - interval '1 second' WHERE id = ${id}`
      yield* eventually(Effect.gen(function*() {
        const run = yield* api.runs.status({ params: { id: id as RunId } })
        assert.strictEqual(run.state, "pending")
      }))
      const trail = yield* api.runs.transitions({ params: { id } })
      const last = trail[trail.length - 1]!
      assert.deepStrictEqual([last.fromState, last.toState, last.reason, last.workerId], [
        "running",
        "pending",
        "lease_expired",
        "dead-worker"
      ])
      yield* eventually(Effect.gen(function*() {
        assert.strictEqual((yield* entries(stream)).filter((i) => i === id).length, 2)
      }))
      const next = yield* api.execution.claim({ params: { id: "live-worker" as WorkerId }, payload: { runIds: [id], replayVersion: 2 } })
      assert.strictEqual(next.leases[0]?.leaseEpoch, lease.leaseEpoch + 1)
    }))
})

// Redis losing its data is noticed within a second: lost entries come back long before REPUBLISH_AFTER_MS.
const NoWaiting = Layer.unwrap(Effect.gen(function*() {
  const redis = yield* RedisProcess.make
  return TestServer.layer({ redisUrl: redis.url, reaperIntervalMs: 200, republishAfterMs: 600_000 }).pipe(
    Layer.provideMerge(Layer.succeed(PrivateRedis, redis))
  )
}))

layer(NoWaiting, { excludeTestServices: true })("recovery without waiting", (it) => {
  it.effect("republishes at once the pending runs whose entries Redis lost, and leaves the others alone", () =>
    Effect.gen(function*() {
      const server = yield* TestServer.TestServer
      const redis = yield* PrivateRedis
      const api = yield* server.client()
      const stream = yield* streamOf
      const lost = yield* Effect.forEach([1, 2, 3], (n) =>
        api.workflows.start({ params: { name, version }, payload: { payload: `lost ${n}` } }).pipe(Effect.map((r) => r.id)))
      yield* eventually(Effect.gen(function*() {
        assert.includeMembers(yield* entries(stream), lost)
      }))
      yield* redis.stop
      yield* redis.start
      const { id: fresh } = yield* api.workflows.start({ params: { name, version }, payload: { payload: "after" } })
      yield* eventually(Effect.gen(function*() {
        assert.includeMembers(yield* entries(stream), [...lost, fresh])
      }), { timeoutMs: 5_000 })
      yield* Effect.sleep("1500 millis")
      const ids = yield* entries(stream)
      for (const id of [...lost, fresh]) assert.strictEqual(ids.filter((i) => i === id).length, 1, id)
    }))
})
