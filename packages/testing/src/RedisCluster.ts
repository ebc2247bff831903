/**
 * A real Redis Cluster of the test's own: `size` masters (`redis-server --cluster-enabled yes` on free ports, no
 * replicas), joined with `redis-cli --cluster create`, killed with the test's scope.
 */
import { Effect } from "effect"
import { execFile, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Redis } from "ioredis"
import { freePort } from "./freePort.ts"
import { waitUntilUp } from "./RedisProcess.ts"

export interface RedisCluster {
  /** The masters, as `127.0.0.1:port`. */
  readonly nodes: ReadonlyArray<string>
  readonly ports: ReadonlyArray<number>
}

const startNode = (dir: string, port: number) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const child = spawn("redis-server", [
        "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--cluster-enabled", "yes", "--cluster-config-file", join(dir, `nodes-${port}.conf`), "--dir", dir
      ], { stdio: "ignore" })
      yield* waitUntilUp({ host: "127.0.0.1", port })
      return child
    }),
    (child) => Effect.sync(() => child.exitCode === null && child.kill("SIGKILL"))
  )

/** Whether every node sees all slots served. */
const clusterOk = (ports: ReadonlyArray<number>) =>
  Effect.promise(async () => {
    for (const port of ports) {
      const redis = new Redis({ host: "127.0.0.1", port, lazyConnect: true, maxRetriesPerRequest: 0 })
      try {
        await redis.connect()
        const info = await redis.cluster("INFO")
        if (!info.includes("cluster_state:ok")) return false
      } finally {
        redis.disconnect()
      }
    }
    return true
  })

/** Starts the cluster for the current scope. */
export const make = (size = 3) =>
  Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(tmpdir(), "aiki-cluster-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    )
    const ports: Array<number> = []
    for (let i = 0; i < size; i++) {
      // Cluster nodes also listen on port + 10000 (the cluster bus): keep both free and apart.
      let port = yield* Effect.promise(freePort)
      while (port > 55_000 || ports.includes(port)) port = yield* Effect.promise(freePort)
      ports.push(port)
    }
    yield* Effect.forEach(ports, (port) => startNode(dir, port), { concurrency: "unbounded", discard: true })
    const nodes = ports.map((port) => `127.0.0.1:${port}`)
    yield* Effect.callback<void, Error>((resume) => {
      execFile("redis-cli", ["--cluster", "create", ...nodes, "--cluster-replicas", "0", "--cluster-yes"], (error, stdout, stderr) =>
        resume(error === null ? Effect.void : Effect.fail(new Error(`redis-cli --cluster create failed:\n${stdout}\n${stderr}`))))
    }).pipe(Effect.orDie)
    for (let i = 0; i < 200 && !(yield* clusterOk(ports)); i++) yield* Effect.sleep("50 millis")
    if (!(yield* clusterOk(ports))) return yield* Effect.die(new Error("the Redis Cluster did not become ready"))
    return { nodes, ports } satisfies RedisCluster
  })
