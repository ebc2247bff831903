/**
 * Redis as operators run it, end to end: a server process and a worker reach a TLS-only Redis that requires an
 * ACL user, and a real three-node Redis Cluster. Runs of several workflow versions complete through them; on the
 * cluster that needs every stream in one hash slot (one `XREADGROUP` spans them), which is what the hash tag in
 * the stream keys gives.
 */
import * as RedisCluster from "@aiki/testing/RedisCluster"
import * as RedisProcess from "@aiki/testing/RedisProcess"
import * as SelfSignedCertificate from "@aiki/testing/SelfSignedCertificate"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer, Schema } from "effect"
import { Cluster, Redis } from "ioredis"
import { readFileSync } from "node:fs"
import { AikiClient, type RedisOptions } from "../src/AikiClient.ts"
import * as Task from "../src/Task.ts"
import * as Worker from "../src/Worker.ts"
import * as Workflow from "../src/Workflow.ts"
import * as AikiServer from "./support/AikiServer.ts"

const Shout = Task.make("shout", {
  payload: Schema.String,
  success: Schema.String,
  run: (text) => Effect.succeed(text.toUpperCase())
})

/** Four versions, so a worker's read spans four streams (on a cluster, four slots unless they share a tag). */
const workflows = ["greeting", "farewell", "reminder", "receipt"].map((name) =>
  Workflow.make(`redis-${name}`, "1.0.0", {
    payload: Schema.String,
    success: Schema.String,
    run: (text) => Shout.start(`${name}: ${text}`)
  })
)

class Deployment extends Context.Service<Deployment, {
  readonly server: AikiServer.AikiServer
  /** The server's Redis settings. */
  readonly env: Record<string, string | undefined>
  /** A plain client of the Redis the server and worker use, to look at the streams. */
  readonly inspect: () => Redis | Cluster
}>()("test/Deployment") {}

/** The server with `env`, and a worker reading with `redis`, both against the same Redis. */
const deployment = (
  env: Record<string, string | undefined>,
  redis: RedisOptions,
  inspect: () => Redis | Cluster
) =>
  Effect.gen(function*() {
    const server = yield* AikiServer.make(env)
    const worker = Worker.layer({
      id: "redis-worker",
      workflows,
      subscriber: { type: "redis_streams", blockTimeMs: 200 },
      workflowRun: { heartbeatIntervalMs: 1_000 }
    })
    return worker.pipe(
      Layer.provideMerge(AikiClient.layer({ baseUrl: server.baseUrl, redis })),
      Layer.provideMerge(Layer.succeed(Deployment, { server, env, inspect }))
    )
  })

/** Starts two runs of every workflow and checks their results. */
const runEverywhere = Effect.gen(function*() {
  const aiki = yield* AikiClient
  const handles = yield* Effect.forEach(workflows, (workflow) =>
    Effect.forEach(["one", "two"], (text) => Effect.map(aiki.start(workflow, text), (handle) => ({ workflow, text, handle }))))
  for (const { handle, text, workflow } of handles.flat()) {
    const result = yield* handle.result({ timeoutMs: 30_000 })
    assert.strictEqual(result, `${workflow.name.replace("redis-", "")}: ${text}`.toUpperCase())
  }
})

/** Uses a plain client of the deployment's Redis. */
const inspect = <A>(f: (redis: Redis | Cluster, prefix: string) => Promise<A>) =>
  Effect.gen(function*() {
    const deployment = yield* Deployment
    return yield* Effect.acquireUseRelease(
      Effect.sync(deployment.inspect),
      (redis) => Effect.promise(() => f(redis, deployment.server.redisPrefix)),
      (redis) => Effect.sync(() => redis.disconnect())
    )
  })

/** How many entries were ever added to each workflow's stream (they are deleted once done). */
const entriesAdded = inspect((redis, prefix) =>
  Promise.all(workflows.map(async (w) => {
    const info = await redis.xinfo("STREAM", `{${prefix}}:workflow:${w.name}:1.0.0`) as Array<unknown>
    return Number(info[info.indexOf("entries-added") + 1])
  }))
)

const redisHealth = (baseUrl: string) => Effect.promise(() => fetch(`${baseUrl}/health/redis`).then((r) => r.status))

const user = { name: "aiki", password: "s3cret-pass" }

const TlsLayer = Layer.unwrap(Effect.gen(function*() {
  const certificate = yield* SelfSignedCertificate.make
  const redis = yield* RedisProcess.makeWith({ tls: certificate, user })
  const ca = readFileSync(certificate.certFile)
  return yield* deployment(
    {
      REDIS_URL: redis.url,
      REDIS_USERNAME: user.name,
      REDIS_PASSWORD: user.password,
      REDIS_TLS_CA_FILE: certificate.certFile
    },
    { url: redis.url, username: user.name, password: user.password, tls: { ca } },
    () => new Redis(redis.url, { username: user.name, password: user.password, tls: { ca } })
  )
}))

layer(TlsLayer, { excludeTestServices: true, timeout: 60_000 })("Redis over TLS with an ACL user", (it) => {
  it.effect("carries runs of every workflow between the server and the worker", () =>
    Effect.gen(function*() {
      yield* runEverywhere
      assert.deepStrictEqual(yield* entriesAdded, workflows.map(() => 2))
      assert.strictEqual(yield* redisHealth((yield* Deployment).server.baseUrl), 200)
    }))

  it.effect("is refused to a server with the wrong password or without the CA", () =>
    Effect.gen(function*() {
      const { env } = yield* Deployment
      const wrongPassword = yield* AikiServer.make({ ...env, REDIS_PASSWORD: "wrong" })
      assert.strictEqual(yield* redisHealth(wrongPassword.baseUrl), 503)
      const untrusting = yield* AikiServer.make({ ...env, REDIS_TLS_CA_FILE: undefined })
      assert.strictEqual(yield* redisHealth(untrusting.baseUrl), 503)
    }).pipe(Effect.scoped))
})

const ClusterLayer = Layer.unwrap(Effect.gen(function*() {
  const cluster = yield* RedisCluster.make(3)
  return yield* deployment(
    { REDIS_URL: undefined, REDIS_CLUSTER_NODES: cluster.nodes.join(",") },
    { cluster: { nodes: cluster.nodes } },
    () => new Cluster([...cluster.nodes])
  )
}))

layer(ClusterLayer, { excludeTestServices: true, timeout: 60_000 })("Redis Cluster", (it) => {
  it.effect("carries runs of every workflow, with all of a deployment's streams in one hash slot", () =>
    Effect.gen(function*() {
      yield* runEverywhere
      assert.deepStrictEqual(yield* entriesAdded, workflows.map(() => 2))
      const slots = yield* inspect((redis, prefix) =>
        Promise.all(workflows.map((w) => redis.cluster("KEYSLOT", `{${prefix}}:workflow:${w.name}:1.0.0`)))
      )
      assert.strictEqual(new Set(slots).size, 1)
      // Without the tag they would be spread: the one XREADGROUP over them would fail with CROSSSLOT.
      const untagged = yield* inspect((redis, prefix) =>
        Promise.all(workflows.map((w) => redis.cluster("KEYSLOT", `${prefix}:workflow:${w.name}:1.0.0`)))
      )
      assert.isAbove(new Set(untagged).size, 1)
      assert.strictEqual(yield* redisHealth((yield* Deployment).server.baseUrl), 200)
    }))
})
