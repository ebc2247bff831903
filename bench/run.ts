/**
 * `pnpm bench`: the Aiki server and worker processes (concurrency 50 each) on the local Postgres and Redis, all
 * on this machine. In one run it measures, and prints (never asserts):
 * - the server's two hottest paths alone, one request at a time with no worker: one claim, one task's write;
 * - a burst of 2,000 runs of a 3-task no-op workflow with one worker process: runs/s, start→completed latency, and
 *   the CPU time per run of the server, the worker, Postgres and the machine (from `/proc`: steadier across noisy
 *   machines than runs/s, and what a change to either side's work shows in first);
 * - the same burst as raw `pg` statements (five autocommits per run, see `Baseline.ts`) and the ratio
 *   Aiki / baseline, which stays comparable on a faster, slower or busier machine;
 * - 200 runs one at a time (start → completion pushed to the client);
 * - one 1,000-task workflow: time per task over its first 100 and its last 100 tasks (it should stay flat);
 * - the burst again with 4 worker processes;
 * - the takeover after a SIGKILL of the worker running a task while a second one runs, with the SDK's default
 *   settings: from the kill to the task starting again on the other worker;
 * - each worker's peak RSS and the machine's load average before and after.
 * Every task result is committed to Postgres before the workflow goes on, as always.
 *
 * Environment: `DATABASE_URL` (a server it may create databases on; default local), `REDIS_URL` (default local),
 * `BENCH_RUNS` (2000), `BENCH_PROBES` (300), `BENCH_SEQUENTIAL_RUNS` (200), `BENCH_LONG_TASKS` (1000), `BENCH_TAKEOVER=0` skips the
 * takeover (it takes ~90 s with the default lease), `BENCH_REPEAT=3` runs everything three times and prints the
 * median of each figure, `BENCH_PROFILE=dir` writes V8 CPU profiles of the server and the workers there,
 * `BENCH_BUILT=1` runs the workers from the JavaScript `tsc -b` emits (as an installed SDK runs; see `workerScript`).
 */
import type { LeaseEpoch, RunId, TaskAddress, TaskName, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { client, type Client } from "@aiki/sdk"
import { AikiClient } from "@aiki/sdk/AikiClient"
import { freePort } from "@aiki/testing/freePort"
import { type Running, spawnNode, waitForHealth } from "@aiki/testing/NodeProcess"
import * as TestDatabase from "@aiki/testing/TestDatabase"
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import { cpus, loadavg } from "node:os"
import { fileURLToPath } from "node:url"
import * as Baseline from "./Baseline.ts"
import { holdMs, takeover, thousandTasks, threeNoops } from "./workflow.ts"

const BATCH = Number(process.env["BENCH_RUNS"] ?? 2_000)
const SEQUENTIAL = Number(process.env["BENCH_SEQUENTIAL_RUNS"] ?? 200)
const LONG = Number(process.env["BENCH_LONG_TASKS"] ?? 1_000)
const REPEAT = Number(process.env["BENCH_REPEAT"] ?? 1)
const TAKEOVER = process.env["BENCH_TAKEOVER"] !== "0"
const PROBES = Number(process.env["BENCH_PROBES"] ?? 300)
const CONCURRENCY = 50
const redisUrl = process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379"
const BUILT = process.env["BENCH_BUILT"] === "1"
const profile: Record<string, string> = process.env["BENCH_PROFILE"] !== undefined
  ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env["BENCH_PROFILE"]}` }
  : {}
/**
 * How a worker process runs: from the TypeScript sources by default, or (`BENCH_BUILT=1`) from the JavaScript
 * `tsc -b` emits, the packages resolved to it through their `aiki-built` export condition, as an installed SDK runs.
 */
const workerScript = fileURLToPath(new URL(BUILT ? "./dist/worker.js" : "./worker.ts", import.meta.url))
const workerEnv: Record<string, string> = BUILT
  ? { NODE_OPTIONS: [profile["NODE_OPTIONS"], "--conditions=aiki-built"].filter(Boolean).join(" ") }
  : profile
if (BUILT) {
  // The emitted JavaScript of this very tree: `tsc -b` does only what changed since it last ran.
  execFileSync(process.execPath, [fileURLToPath(new URL("../node_modules/typescript/bin/tsc", import.meta.url)), "-b"], {
    cwd: fileURLToPath(new URL("..", import.meta.url)),
    stdio: "inherit"
  })
}

/** What one repetition measured, by name (see `report` for names and units). */
type Figures = Record<string, number>

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const completedCount = async (baseUrl: string) => {
  const text = await (await fetch(`${baseUrl}/metrics`)).text()
  const line = text.split("\n").find((l) => l.startsWith("aiki_workflows_completed_total"))
  return line === undefined ? 0 : Number(line.split(" ").pop())
}

const tasksOf = (aiki: Client, id: string) =>
  aiki.runtime.runPromise(Effect.flatMap(AikiClient, ({ api }) => api.runs.tasks({ params: { id: id as RunId } })))

/**
 * CPU time (ms, user + system) used so far by the processes `pids`, by every Postgres process, and by the whole
 * machine, read from `/proc` (Linux; NaN elsewhere). Postgres counts all its processes on the machine (backends,
 * WAL writer, …): run the bench on an otherwise quiet Postgres.
 */
const cpuNow = (pids: ReadonlyArray<number>) => {
  const tick = 10 // ms per clock tick (USER_HZ is 100 on Linux)
  const ofPid = (pid: number) => {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
      return (Number(fields[11]) + Number(fields[12])) * tick
    } catch {
      return NaN
    }
  }
  const postgres = () => {
    let sum = 0
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue
      try {
        if (readFileSync(`/proc/${entry}/comm`, "utf8").trim() === "postgres") sum += ofPid(Number(entry))
      } catch {
        // The process ended meanwhile.
      }
    }
    return sum
  }
  try {
    const machine = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number)
    // user, nice, system, irq, softirq, steal (idle and iowait left out)
    const busy = (machine[0]! + machine[1]! + machine[2]! + machine[5]! + machine[6]! + machine[7]!) * tick
    return { processes: pids.map(ofPid), postgres: postgres(), machine: busy }
  } catch {
    return { processes: pids.map(() => NaN), postgres: NaN, machine: NaN }
  }
}

/** 50 runs to warm up connections, prepared statements and the JIT of fresh processes. */
const warmUp = (aiki: Client) =>
  Promise.all(Array.from({ length: 50 }, (_, i) => threeNoops.start(aiki, { payload: i }))).then((handles) =>
    Promise.all(handles.map((h) => h.waitForCompletion({ timeoutMs: 60_000 })))
  )

/**
 * The server's two hottest paths alone, one request at a time and no worker running: a claim of one fresh run,
 * then one task's start and result in one write request (the client's clock, median of `PROBES` after 30 to warm
 * up). Each run is of a workflow nobody serves, claimed by a worker id of the probe's own, and completed after.
 */
const serverPaths = async (aiki: Client): Promise<Figures> => {
  const api = await aiki.runtime.runPromise(Effect.map(AikiClient, (c) => c.api))
  const workerId = "bench-probe" as WorkerId
  // The SDK's replay semantics version (what a worker of this tree claims with; the probe never replays).
  const replayVersion = 2
  const claims: Array<number> = []
  const writes: Array<number> = []
  for (let i = 0; i < PROBES + 30; i++) {
    const { id } = await aiki.runtime.runPromise(api.workflows.start({
      params: { name: "bench-probe" as WorkflowName, version: "1.0.0" as WorkflowVersion },
      payload: { payload: i }
    }))
    const claimSent = performance.now()
    const { leases } = await aiki.runtime.runPromise(
      api.execution.claim({ params: { id: workerId }, payload: { runIds: [id], replayVersion } })
    )
    const writeSent = performance.now()
    const leaseEpoch = leases[0]!.leaseEpoch as LeaseEpoch
    const address = "probe:1:0" as TaskAddress
    await aiki.runtime.runPromise(api.execution.write({
      params: { id: workerId },
      payload: {
        writes: [
          { _tag: "StartTask", runId: id, leaseEpoch, address, sequence: 0, name: "probe" as TaskName, payload: i, attempt: 1 },
          { _tag: "FinishTask", runId: id, leaseEpoch, address, attempt: 1, elapsedMs: 0, outcome: { _tag: "Completed", result: i }, outcomeOrder: 0 }
        ]
      }
    }))
    if (i >= 30) {
      claims.push(writeSent - claimSent)
      writes.push(performance.now() - writeSent)
    }
    // Not timed: the run ends, so that no lease of the probe's lapses while the later phases run.
    await aiki.runtime.runPromise(api.execution.write({
      params: { id: workerId },
      payload: { writes: [{ _tag: "CompleteRun", runId: id, leaseEpoch, result: i }] }
    }))
  }
  return { probeClaimMs: median(claims), probeWriteMs: median(writes) }
}

/**
 * `BATCH` runs started as fast as the client can (64 in flight); throughput, start→completed latency, and the CPU
 * time per run of the server, of the workers `workerPids` together, of Postgres and of the whole machine.
 */
const burst = async (aiki: Client, prefix: string, serverPid: number, workerPids: ReadonlyArray<number>): Promise<Figures> => {
  const before = await completedCount(aiki.baseUrl)
  const cpuBefore = cpuNow([serverPid, ...workerPids])
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
  while ((await completedCount(aiki.baseUrl)) - before < BATCH) await sleep(25)
  const seconds = (performance.now() - started) / 1000
  const cpuAfter = cpuNow([serverPid, ...workerPids])
  const perRun = (before: number, after: number) => (after - before) / BATCH
  const workersCpu = workerPids.reduce((sum, _, i) => sum + perRun(cpuBefore.processes[i + 1]!, cpuAfter.processes[i + 1]!), 0)
  const latencies: Array<number> = []
  for (let i = 0; i < handles.length; i += 100) {
    const statuses = await Promise.all(handles.slice(i, i + 100).map((h) => threeNoops.getHandle(aiki, h.id).getStatus()))
    for (const s of statuses) latencies.push(Number(s.finishedAt!.epochMilliseconds) - Number(s.createdAt.epochMilliseconds))
  }
  latencies.sort((a, b) => a - b)
  return {
    [`${prefix}RunsPerSecond`]: BATCH / seconds,
    [`${prefix}TasksPerSecond`]: (BATCH * 3) / seconds,
    [`${prefix}StartsPerSecond`]: BATCH / ((allStarted - started) / 1000),
    [`${prefix}P50`]: percentile(latencies, 50),
    [`${prefix}P95`]: percentile(latencies, 95),
    [`${prefix}P99`]: percentile(latencies, 99),
    [`${prefix}ServerCpuMs`]: perRun(cpuBefore.processes[0]!, cpuAfter.processes[0]!),
    [`${prefix}WorkerCpuMs`]: workersCpu,
    [`${prefix}PostgresCpuMs`]: perRun(cpuBefore.postgres, cpuAfter.postgres),
    [`${prefix}MachineCpuMs`]: perRun(cpuBefore.machine, cpuAfter.machine)
  }
}

/** One run at a time, each waited for (completion pushed over SSE) before the next starts. */
const oneAtATime = async (aiki: Client): Promise<Figures> => {
  const latencies: Array<number> = []
  for (let i = 0; i < SEQUENTIAL; i++) {
    const t0 = performance.now()
    const handle = await threeNoops.start(aiki, { payload: i })
    await handle.waitForCompletion({ timeoutMs: 30_000 })
    latencies.push(performance.now() - t0)
  }
  latencies.sort((a, b) => a - b)
  return { sequentialP50: percentile(latencies, 50), sequentialP95: percentile(latencies, 95), sequentialP99: percentile(latencies, 99) }
}

/** A `LONG`-task workflow; time per task (server clock) over its first and its last 100 tasks. */
const longJournal = async (aiki: Client): Promise<Figures> => {
  const handle = await thousandTasks.start(aiki, { payload: LONG })
  await handle.waitForCompletion({ timeoutMs: 600_000 })
  const tasks = [...await tasksOf(aiki, handle.id)].sort((a, b) => a.sequence - b.sequence)
  const perTask = (from: number, to: number) => {
    const start = Number(tasks[from]!.attempts[0]!.startedAt.epochMilliseconds)
    const end = Number(tasks[to - 1]!.attempts[0]!.finishedAt!.epochMilliseconds)
    return (end - start) / (to - from)
  }
  const window = Math.min(100, tasks.length)
  return { longFirstMsPerTask: perTask(0, window), longLastMsPerTask: perTask(tasks.length - window, tasks.length) }
}

/**
 * SIGKILLs the worker running a task (found as the run's lease owner) while another is running, and measures
 * until the task starts again on the other worker: the SDK's default settings decide it.
 */
const takeoverAfterKill = async (aiki: Client, workers: ReadonlyMap<string, Running>): Promise<Figures> => {
  const handle = await takeover.start(aiki, { payload: 1 })
  let owner: string | undefined
  while (owner === undefined) {
    const [status, tasks] = await Promise.all([handle.getStatus(), tasksOf(aiki, handle.id)])
    if (status.leaseOwner !== undefined && tasks[0]?.state === "running") owner = status.leaseOwner
    else await sleep(20)
  }
  const victim = workers.get(owner)!
  victim.child.kill("SIGKILL")
  const killedAt = Date.now()
  await victim.exited
  while (true) {
    const again = (await tasksOf(aiki, handle.id))[0]?.attempts[1]
    if (again !== undefined) {
      await handle.waitForCompletion({ timeoutMs: 60_000 + holdMs })
      return { takeoverSeconds: (Number(again.startedAt.epochMilliseconds) - killedAt) / 1000 }
    }
    await sleep(100)
  }
}

/** One repetition of everything, on a fresh database and server. */
const measure = Effect.gen(function*() {
  const figures: Figures = {}
  const database = yield* TestDatabase.make
  const baselineDatabase = yield* TestDatabase.make
  const port = yield* Effect.promise(freePort)
  const baseUrl = `http://127.0.0.1:${port}`
  const server = yield* spawnNode(fileURLToPath(import.meta.resolve("@aiki/server/main")), {
    DATABASE_URL: database.url,
    DATABASE_POOL_SIZE: "20",
    REDIS_URL: redisUrl,
    REDIS_PREFIX: `aiki-bench-${port}`,
    PORT: String(port),
    HOST: "127.0.0.1",
    AUTH: "off",
    ...profile
  })
  yield* waitForHealth(`${baseUrl}/health`, server)
  /** A worker process serving `workflow` only, once it registered (runs started before would be flagged). */
  const startWorker = (id: string, workflow: { readonly name: string } = threeNoops) =>
    spawnNode(workerScript, {
      AIKI_URL: baseUrl,
      REDIS_URL: redisUrl,
      WORKER_ID: id,
      WORKFLOW: workflow.name,
      ...workerEnv
    }).pipe(Effect.tap((worker) =>
      Effect.promise(async () => {
        while ((await fetch(`${baseUrl}/workers/${id}/health`)).status !== 200) {
          if (worker.child.exitCode !== null) throw new Error(`Worker ${id} exited: ${(await worker.exited).stderr}`)
          await sleep(25)
        }
      })
    ))
  /** Stops workers gracefully; their peak RSS in bytes. */
  const stop = (workers: ReadonlyArray<Running>) =>
    Effect.promise(() =>
      Promise.all(workers.map(async (worker) => {
        worker.child.kill("SIGTERM")
        const exited = await worker.exited
        return (JSON.parse(exited.stdout.trim().split("\n").pop() || "{}") as { peakRssBytes?: number }).peakRssBytes ?? NaN
      }))
    )
  const aiki = yield* Effect.acquireRelease(Effect.promise(() => client({ baseUrl })), (c) => Effect.promise(c.close))

  Object.assign(figures, yield* Effect.promise(() => serverPaths(aiki)))

  // One worker process.
  const single = yield* startWorker("bench-worker-1")
  yield* Effect.promise(() => warmUp(aiki))
  Object.assign(figures, yield* Effect.promise(() => burst(aiki, "burst", server.child.pid!, [single.child.pid!])))
  Object.assign(figures, yield* Effect.promise(() => oneAtATime(aiki)))
  figures["rssSingle"] = (yield* stop([single]))[0]!

  const long = yield* startWorker("bench-worker-long", thousandTasks)
  Object.assign(figures, yield* Effect.promise(() => longJournal(aiki)))
  yield* stop([long])

  // The baseline, while Aiki is idle.
  const baselineCpu = cpuNow([process.pid])
  figures["baselineRunsPerSecond"] = yield* Effect.promise(() => Baseline.burst(baselineDatabase.url, BATCH, CONCURRENCY))
  const baselineCpuAfter = cpuNow([process.pid])
  // Its Postgres backends end with its pool (their CPU time leaves /proc with them): the machine's is what compares.
  figures["baselineMachineCpuMs"] = (baselineCpuAfter.machine - baselineCpu.machine) / BATCH

  // Four worker processes.
  const four: Array<Running> = []
  for (let i = 1; i <= 4; i++) four.push(yield* startWorker(`bench-worker-4-${i}`))
  yield* Effect.promise(() => warmUp(aiki))
  Object.assign(figures, yield* Effect.promise(() => burst(aiki, "four", server.child.pid!, four.map((w) => w.child.pid!))))
  figures["rssFour"] = Math.max(...(yield* stop(four)))

  // Two workers; the one running the task is killed.
  if (TAKEOVER) {
    const pair = new Map<string, Running>()
    for (const id of ["bench-worker-a", "bench-worker-b"]) pair.set(id, yield* startWorker(id, takeover))
    Object.assign(figures, yield* Effect.promise(() => takeoverAfterKill(aiki, pair)))
    yield* stop([...pair.values()].filter((w) => w.child.exitCode === null && w.child.signalCode === null))
  }

  server.child.kill("SIGTERM")
  yield* Effect.promise(() => server.exited)
  return figures
}).pipe(Effect.scoped)

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2
}

const report = (all: ReadonlyArray<Figures>, load: { readonly before: ReadonlyArray<number>; readonly after: ReadonlyArray<number> }) => {
  const f = (name: string) => median(all.map((figures) => figures[name] ?? NaN))
  const n = (name: string) => f(name).toFixed(0)
  const ms = (name: string) => `${f(name).toFixed(1)} ms`
  const mib = (name: string) => `${(f(name) / 1024 / 1024).toFixed(0)} MiB`
  const cpuLine = (prefix: string, workers: string) =>
    `  CPU ms per run: server ${f(`${prefix}ServerCpuMs`).toFixed(2)}, ${workers} ${f(`${prefix}WorkerCpuMs`).toFixed(2)}, ` +
    `Postgres ${f(`${prefix}PostgresCpuMs`).toFixed(2)}, machine ${f(`${prefix}MachineCpuMs`).toFixed(2)}`
  const cpu = cpus()
  const lines = [
    `Aiki benchmark — ${cpu.length} cores (${cpu[0]?.model.trim()}), Node ${process.version}` +
    (all.length > 1 ? `; medians of ${all.length} repetitions` : ""),
    `Server + worker processes (concurrency ${CONCURRENCY} each, run from ${BUILT ? "the built JavaScript" : "the TypeScript sources"}), ` +
    `Postgres and Redis on localhost; 3 no-op tasks per run`,
    `Load average (1/5/15 min): before ${load.before.map((l) => l.toFixed(2)).join(" ")}, after ${load.after.map((l) => l.toFixed(2)).join(" ")}`,
    ``,
    `The server alone, one request at a time (client clock, medians of ${PROBES})`,
    `  claim of one run ${ms("probeClaimMs")}; one task's start and result in one write ${ms("probeWriteMs")}`,
    ``,
    `Burst of ${BATCH} runs, 1 worker process`,
    `  runs/s (start of first → completion of last) ${n("burstRunsPerSecond")}`,
    `  tasks/s                                      ${n("burstTasksPerSecond")}`,
    `  starts/s (client, 64 in flight)              ${n("burstStartsPerSecond")}`,
    `  start→completed (server clock) p50 ${ms("burstP50")}  p95 ${ms("burstP95")}  p99 ${ms("burstP99")}`,
    cpuLine("burst", "worker"),
    `The same burst as raw pg: 5 autocommits per run, ${CONCURRENCY} connections`,
    `  runs/s                                       ${n("baselineRunsPerSecond")}`,
    `  Aiki / baseline                              ${median(all.map((x) => x["burstRunsPerSecond"]! / x["baselineRunsPerSecond"]!)).toFixed(3)}`,
    `  CPU ms per run: machine ${f("baselineMachineCpuMs").toFixed(2)}`,
    `  Aiki / baseline, machine CPU per run         ${median(all.map((x) => x["burstMachineCpuMs"]! / x["baselineMachineCpuMs"]!)).toFixed(2)}`,
    ``,
    `${SEQUENTIAL} runs one at a time`,
    `  start→completed (client, incl. SSE) p50 ${ms("sequentialP50")}  p95 ${ms("sequentialP95")}  p99 ${ms("sequentialP99")}`,
    ``,
    `One ${LONG}-task workflow (server clock)`,
    `  ms per task: first 100 ${f("longFirstMsPerTask").toFixed(2)}, last 100 ${f("longLastMsPerTask").toFixed(2)}`,
    ``,
    `Burst of ${BATCH} runs, 4 worker processes`,
    `  runs/s                                       ${n("fourRunsPerSecond")}`,
    `  start→completed (server clock) p50 ${ms("fourP50")}  p95 ${ms("fourP95")}  p99 ${ms("fourP99")}`,
    cpuLine("four", "workers"),
    ``,
    TAKEOVER
      ? `Takeover after SIGKILL of the worker running a task, a second one running (the SDK's default settings)\n` +
        `  kill → the task starting on the other worker ${f("takeoverSeconds").toFixed(1)} s`
      : `Takeover: skipped (BENCH_TAKEOVER=0)`,
    ``,
    `Worker peak RSS: 1 worker ${mib("rssSingle")}; 4 workers, the largest ${mib("rssFour")}`
  ]
  console.log(lines.join("\n"))
}

const loadBefore = loadavg()
const all: Array<Figures> = []
for (let i = 0; i < REPEAT; i++) {
  all.push(await Effect.runPromise(measure))
  if (REPEAT > 1) console.error(`repetition ${i + 1} of ${REPEAT} done`)
}
report(all, { before: loadBefore, after: loadavg() })
