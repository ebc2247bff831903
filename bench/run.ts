/**
 * `pnpm bench`: the Aiki server and one worker process (concurrency 50) on the local Postgres and Redis. Starts
 * 2,000 runs of a 3-task no-op workflow as fast as it can, then 200 runs one at a time, and prints throughput,
 * start→completed latency percentiles and the worker's peak RSS. Every task result is committed to Postgres
 * before the workflow goes on, as always.
 *
 * Uses `DATABASE_URL` (a database it may create others on; default local) and `REDIS_URL` (default local).
 */
import { client } from "@aiki/sdk"
import { freePort } from "@aiki/testing/freePort"
import { spawnNode, waitForHealth } from "@aiki/testing/NodeProcess"
import * as TestDatabase from "@aiki/testing/TestDatabase"
import { Effect } from "effect"
import { cpus } from "node:os"
import { fileURLToPath } from "node:url"
import { threeNoops } from "./workflow.ts"

const BATCH = Number(process.env["BENCH_RUNS"] ?? 2_000)
const SEQUENTIAL = Number(process.env["BENCH_SEQUENTIAL_RUNS"] ?? 200)
const redisUrl = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379"
/** `BENCH_PROFILE=dir` writes V8 CPU profiles of the server and the worker there (open them in Chrome DevTools). */
const profile: Record<string, string> = process.env["BENCH_PROFILE"] !== undefined
  ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env["BENCH_PROFILE"]}` }
  : {}

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
const ms = (n: number) => `${n.toFixed(1)} ms`

const completedCount = async (baseUrl: string) => {
  const text = await (await fetch(`${baseUrl}/metrics`)).text()
  const line = text.split("\n").find((l) => l.startsWith("aiki_workflows_completed_total"))
  return line === undefined ? 0 : Number(line.split(" ").pop())
}

const main = Effect.gen(function*() {
  const database = yield* TestDatabase.make
  const port = yield* Effect.promise(freePort)
  const baseUrl = `http://127.0.0.1:${port}`
  const server = yield* spawnNode(fileURLToPath(import.meta.resolve("@aiki/server/main")), {
    DATABASE_URL: database.url,
    DATABASE_POOL_SIZE: "20",
    REDIS_URL: redisUrl,
    REDIS_PREFIX: `aiki-bench-${port}`,
    PORT: String(port),
    HOST: "127.0.0.1",
    ...profile
  })
  yield* waitForHealth(`${baseUrl}/health`, server)
  const worker = yield* spawnNode(fileURLToPath(new URL("./worker.ts", import.meta.url)), {
    AIKI_URL: baseUrl,
    REDIS_URL: redisUrl,
    ...profile
  })

  const aiki = yield* Effect.acquireRelease(Effect.promise(() => client({ baseUrl })), (c) => Effect.promise(c.close))
  // Warm up (connections, prepared statements, JIT) before measuring.
  yield* Effect.promise(async () => {
    const warm = await Promise.all(Array.from({ length: 50 }, (_, i) => threeNoops.start(aiki, { payload: i })))
    await Promise.all(warm.map((h) => h.waitForCompletion({ timeoutMs: 60_000 })))
  })

  // Phase 1: a burst of runs, started as fast as the client can.
  const before = yield* Effect.promise(() => completedCount(baseUrl))
  const batch = yield* Effect.promise(async () => {
    const started = performance.now()
    const handles: Array<{ id: string }> = []
    let next = 0
    await Promise.all(Array.from({ length: 64 }, async () => {
      while (next < BATCH) {
        const i = next++
        handles.push(await threeNoops.start(aiki, { payload: i }))
      }
    }))
    const allStarted = performance.now()
    while ((await completedCount(baseUrl)) - before < BATCH) await new Promise((r) => setTimeout(r, 25))
    const finished = performance.now()
    const latencies: Array<number> = []
    for (let i = 0; i < handles.length; i += 100) {
      const statuses = await Promise.all(handles.slice(i, i + 100).map((h) => threeNoops.getHandle(aiki, h.id).getStatus()))
      for (const s of statuses) {
        latencies.push(Number(s.finishedAt!.epochMilliseconds) - Number(s.createdAt.epochMilliseconds))
      }
    }
    return { seconds: (finished - started) / 1000, startSeconds: (allStarted - started) / 1000, latencies: latencies.sort((a, b) => a - b) }
  })

  // Phase 2: one run at a time, each waited for (pushed completion) before the next starts.
  const sequential = yield* Effect.promise(async () => {
    const latencies: Array<number> = []
    for (let i = 0; i < SEQUENTIAL; i++) {
      const t0 = performance.now()
      const handle = await threeNoops.start(aiki, { payload: i })
      await handle.waitForCompletion({ timeoutMs: 30_000 })
      latencies.push(performance.now() - t0)
    }
    return latencies.sort((a, b) => a - b)
  })

  worker.child.kill("SIGTERM")
  const stopped = yield* Effect.promise(() => worker.exited)
  server.child.kill("SIGTERM")
  yield* Effect.promise(() => server.exited)
  const rss = JSON.parse(stopped.stdout.trim().split("\n").pop() ?? "{}") as { peakRssBytes?: number }

  const cpu = cpus()
  console.log(`Aiki benchmark — ${cpu.length} cores (${cpu[0]?.model.trim()}), Node ${process.version}`)
  console.log(`Server + 1 worker process (concurrency 50), Postgres and Redis on localhost; 3 no-op tasks per run\n`)
  console.log(`Burst of ${BATCH} runs`)
  console.log(`  runs/s (start of first → completion of last) ${(BATCH / batch.seconds).toFixed(0)}`)
  console.log(`  tasks/s                                      ${((BATCH * 3) / batch.seconds).toFixed(0)}`)
  console.log(`  starts/s (client, 64 in flight)              ${(BATCH / batch.startSeconds).toFixed(0)}`)
  console.log(`  start→completed (server clock) p50 ${ms(percentile(batch.latencies, 50))}  p95 ${ms(percentile(batch.latencies, 95))}  p99 ${ms(percentile(batch.latencies, 99))}`)
  console.log(`\n${SEQUENTIAL} runs one at a time`)
  console.log(`  start→completed (client, incl. SSE) p50 ${ms(percentile(sequential, 50))}  p95 ${ms(percentile(sequential, 95))}  p99 ${ms(percentile(sequential, 99))}`)
  console.log(`\nWorker peak RSS ${rss.peakRssBytes === undefined ? "?" : `${(rss.peakRssBytes / 1024 / 1024).toFixed(0)} MiB`}`)
})

await Effect.runPromise(Effect.scoped(main))
