/**
 * The chaos scenario: a deployment of real processes (see `Deployment`), N three-task runs started with
 * idempotency keys at an even pace over `durationMs`, while workers are SIGKILLed every ~`killIntervalMs` (and
 * replaced), servers are SIGKILLed and restarted, Redis is restarted empty and Postgres is SIGKILLed and
 * recovers. Then no more kills: it waits until no run is left unfinished (or `settleTimeoutMs` passes) and hands
 * the database, the side-effect log and the kill log to `Audit`.
 *
 * It runs on real time (processes, clocks of other processes): in tests, use a live clock.
 */
import { RunState, isTerminal } from "@aiki/contract/RunState"
import type { WorkflowName } from "@aiki/contract/Ids"
import { client, type Client } from "@aiki/sdk"
import { AikiClient } from "@aiki/sdk/AikiClient"
import { PgClient } from "@effect/sql-pg"
import { Clock, Effect, Fiber, Random, Redacted, Schedule, Semaphore } from "effect"
import { SqlClient } from "effect/sql"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Audit from "./Audit.ts"
import { chaosThreeSteps, readExecutions, workflowName } from "./ChaosWorkflow.ts"
import * as Deployment from "./Deployment.ts"

export interface ChaosOptions extends Omit<Deployment.DeploymentOptions, "directory"> {
  /** Runs to start. */
  readonly runs: number
  /** How long runs are started and things are killed. */
  readonly durationMs: number
  /** A random worker is SIGKILLed every `killIntervalMs` × (0.5…1.5). */
  readonly killIntervalMs: number
  /** Server crashes (round robin over the replicas), Redis restarts and Postgres crashes, spread over the duration. */
  readonly serverCrashes: number
  readonly redisRestarts: number
  readonly postgresCrashes: number
  /** How long to wait after the chaos for every run to finish. */
  readonly settleTimeoutMs: number
  /** Seeds the choice of victims and the kill intervals. */
  readonly seed: string
  /** Kept after the run (side-effect log, process logs); by default a temporary directory, removed when all is well. */
  readonly directory?: string | undefined
}

/**
 * Short heartbeats and reaper intervals, so that a killed worker's runs are taken over in seconds rather than
 * the ~90 s of the production defaults, and a chaos of a minute finishes soon after it. Not shorter: on a busy
 * 2-core machine a 500 ms heartbeat (1.5 s lease) let live workers' leases lapse.
 */
export const defaults: ChaosOptions = {
  runs: 2_000,
  durationMs: 60_000,
  killIntervalMs: 2_000,
  serverCrashes: 2,
  redisRestarts: 2,
  postgresCrashes: 1,
  settleTimeoutMs: 120_000,
  seed: "aiki",
  replicas: 1,
  workers: 3,
  workerConcurrency: 20,
  subscriber: "redis_streams",
  heartbeatMs: 1_000,
  claimMinIdleMs: 3_000,
  reaperIntervalMs: 500,
  republishAfterMs: 2_000,
  taskMs: 20,
  outageMs: 1_000
}

export interface Report {
  readonly options: ChaosOptions
  readonly verdict: Audit.Verdict
  readonly kills: Readonly<Record<Deployment.KillKind, number>>
  readonly unplannedExits: ReadonlyArray<Deployment.UnplannedExit>
  /** Start requests that failed and were sent again with the same idempotency key. */
  readonly startRetries: number
  readonly durationMs: number
  /** How the duration splits: starting the deployment, the chaos itself, waiting for the runs to finish. */
  readonly phasesMs: { readonly setup: number; readonly chaos: number; readonly settle: number }
  /** Where the logs are (kept when the chaos found something). */
  readonly directory: string
  /** Every finding: the verdict's violations and the processes that died without being killed. */
  readonly violations: ReadonlyArray<string>
}

const unfinishedStates = RunState.literals.filter((state) => !isTerminal(state))

/** Whether every run of the chaos workflow is terminal, as the HTTP API of `aiki` lists them. */
const settled = (aiki: Client) =>
  aiki.runtime.runPromise(Effect.gen(function*() {
    const { api } = yield* AikiClient
    for (const state of unfinishedStates) {
      const page = yield* api.workflows.runs({ params: { name: workflowName as WorkflowName }, query: { state, limit: 1 } })
      if (page.runs.length > 0) return false
    }
    return true
  })).catch(() => false)

/** The infrastructure crashes in the order they happen: interleaved kinds. */
const plan = (options: ChaosOptions) => {
  const lists: Array<Array<"server" | "redis" | "postgres">> = [
    Array.from({ length: options.serverCrashes }, () => "server" as const),
    Array.from({ length: options.subscriber === "redis_streams" ? options.redisRestarts : 0 }, () => "redis" as const),
    Array.from({ length: options.postgresCrashes }, () => "postgres" as const)
  ]
  const longest = Math.max(0, ...lists.map((list) => list.length))
  return Array.from({ length: longest }, (_, i) => lists.flatMap((list) => (i < list.length ? [list[i]!] : []))).flat()
}

/** Runs the chaos in the current scope and returns what happened. */
export const run = Effect.fnUntraced(function*(options: ChaosOptions) {
  const directory = options.directory ?? mkdtempSync(join(tmpdir(), "aiki-chaos-"))
  // A temporary directory goes once every process has stopped and written its log, unless there are findings.
  let keep = options.directory !== undefined
  yield* Effect.addFinalizer(() => Effect.sync(() => keep || rmSync(directory, { recursive: true, force: true })))
  const origin = yield* Clock.currentTimeMillis
  const deployment = yield* Deployment.make({ ...options, directory })
  const clients = yield* Effect.acquireRelease(
    Effect.promise(() => Promise.all(deployment.baseUrls.map((baseUrl) => client({ baseUrl })))),
    (clients) => Effect.promise(() => Promise.all(clients.map((c) => c.close())))
  )
  const started = yield* Clock.currentTimeMillis
  const deadline = started + options.durationMs + options.settleTimeoutMs

  // Starts, at an even pace; a failed start is sent again with the same key, to the next replica.
  const expected: Array<{ key: string; n: number; runId: string | undefined }> = Array.from(
    { length: options.runs },
    (_, n) => ({ key: `chaos-${n}`, n, runId: undefined })
  )
  let startRetries = 0
  // A client's connection pool: during an outage, starts queue here rather than each retrying on its own (with
  // hundreds retrying, a restarted server did not answer `/health` within 2 s for half a minute).
  const inFlight = yield* Semaphore.make(64)
  const startRun = (n: number) =>
    Effect.gen(function*() {
      let tries = 0
      const entry = expected[n]!
      const once = Effect.tryPromise(() =>
        chaosThreeSteps.start(clients[(n + tries++) % clients.length]!, { payload: { n }, idempotencyKey: entry.key })
      )
      const handle = yield* once.pipe(
        Effect.tapError(() => Effect.sync(() => startRetries++)),
        Effect.retry({
          // Backing off like a well-behaved client: hundreds of starts retried every 250 ms during an outage
          // took enough CPU to slow the restarting server down to 15 s.
          schedule: Schedule.min([Schedule.exponential("100 millis"), Schedule.spaced("2 seconds")]),
          while: () => Clock.currentTimeMillis.pipe(Effect.map((now) => now < deadline))
        }),
        Effect.option
      )
      if (handle._tag === "Some") entry.runId = handle.value.id
    }).pipe(inFlight.withPermit)
  const starting = yield* Effect.gen(function*() {
    const fibers: Array<Fiber.Fiber<void>> = []
    for (let n = 0; n < options.runs; n++) {
      const due = started + (n * options.durationMs) / options.runs
      const wait = due - (yield* Clock.currentTimeMillis)
      if (wait > 0) yield* Effect.sleep(wait)
      fibers.push(yield* Effect.forkChild(startRun(n)))
    }
    yield* Fiber.joinAll(fibers)
  }).pipe(Effect.forkChild)

  // Workers killed at random intervals, for the whole duration.
  const killing = yield* Effect.gen(function*() {
    while (true) {
      yield* Effect.sleep(Math.round(options.killIntervalMs * (0.5 + (yield* Random.next))))
      yield* deployment.killWorker
    }
  }).pipe(Random.withSeed(options.seed), Effect.forkChild)

  // The infrastructure crashes, one after the other, spread over the duration.
  const crashes = plan(options)
  const infrastructure = yield* Effect.gen(function*() {
    let serverCrash = 0
    for (let i = 0; i < crashes.length; i++) {
      const due = started + (options.durationMs * (i + 1)) / (crashes.length + 1)
      const wait = due - (yield* Clock.currentTimeMillis)
      if (wait > 0) yield* Effect.sleep(wait)
      switch (crashes[i]!) {
        case "server":
          yield* deployment.crashServer(serverCrash++ % options.replicas)
          break
        case "redis":
          if (deployment.restartRedis !== undefined) yield* deployment.restartRedis
          break
        case "postgres":
          yield* deployment.crashPostgres
          break
      }
    }
  }).pipe(Effect.forkChild)

  yield* Effect.sleep(options.durationMs)
  yield* Fiber.join(infrastructure)
  yield* Fiber.interrupt(killing)
  yield* Fiber.join(starting)
  const chaosEnded = yield* Clock.currentTimeMillis

  // No more chaos: wait for the runs to finish.
  yield* Effect.promise(async () => {
    const giveUp = Date.now() + options.settleTimeoutMs
    while (Date.now() < giveUp && !(await settled(clients[0]!))) await new Promise((r) => setTimeout(r, 500))
  })
  const finished = yield* Clock.currentTimeMillis

  const records = yield* Effect.flatMap(SqlClient.SqlClient, (sql) => Audit.readRecords(sql, workflowName)).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(deployment.databaseUrl), maxConnections: 3 })),
    Effect.orDie
  )
  const verdict = Audit.judge({
    expected,
    records,
    executions: readExecutions(deployment.sideEffectsFile),
    kills: deployment.kills(),
    outageShadowMs: 3 * options.heartbeatMs + 2_000,
    replicaOf: deployment.replicaOf,
    origin
  })
  writeFileSync(
    join(directory, "kills.json"),
    JSON.stringify({ origin, kills: deployment.kills(), unplannedExits: deployment.unplannedExits() }, null, 1)
  )
  const kills = { worker: 0, server: 0, redis: 0, postgres: 0 }
  for (const kill of deployment.kills()) kills[kill.kind]++
  const unplannedExits = deployment.unplannedExits()
  const violations = [
    ...verdict.violations,
    ...unplannedExits.map((exit) =>
      `${exit.process} exited on its own at ${((exit.at - origin) / 1000).toFixed(3)}s (${exit.code ?? exit.signal}); see ${directory}/logs`
    )
  ]
  keep ||= violations.length > 0
  return {
    options,
    verdict,
    kills,
    unplannedExits,
    startRetries,
    durationMs: finished - origin,
    phasesMs: { setup: started - origin, chaos: chaosEnded - started, settle: finished - chaosEnded },
    directory,
    violations
  } satisfies Report
})

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)}s`

/** The one line that sums a chaos run up. */
export const summary = (report: Report): string => {
  const { kills, options, verdict } = report
  const justified = Object.values(verdict.justified).reduce((a, b) => a + b, 0)
  return [
    `chaos ${report.violations.length === 0 ? "PASS" : "FAIL"}:`,
    `runs=${verdict.runs} completed=${verdict.completed} exact=${verdict.exact} failed=${verdict.failed}`,
    `unfinished=${verdict.unfinished} tasks-completed-twice=${verdict.tasksCompletedTwice}`,
    `executions=${verdict.executions} re-executions=${verdict.reExecutions}`,
    `justified=${justified} (worker ${verdict.justified.worker}, server ${verdict.justified.server},`,
    `postgres ${verdict.justified.postgres}) unjustified=${verdict.unjustified}`,
    `kills: worker=${kills.worker} server=${kills.server} redis=${kills.redis} postgres=${kills.postgres}`,
    `unplanned-exits=${report.unplannedExits.length} start-retries=${report.startRetries}`,
    `replicas=${options.replicas} subscriber=${options.subscriber}`,
    `duration=${seconds(report.durationMs)} (setup ${seconds(report.phasesMs.setup)}, chaos ${seconds(report.phasesMs.chaos)},`,
    `settle ${seconds(report.phasesMs.settle)})`
  ].join(" ")
}
