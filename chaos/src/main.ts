#!/usr/bin/env node
/**
 * `pnpm chaos`: see `Chaos.ts`. Prints the settings, every finding (stderr), then one summary line; exits 1 when
 * any invariant was violated. `pnpm chaos --help` lists the options.
 */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Console, Effect, Exit, Option, Runtime } from "effect"
import { Command, Flag } from "effect/cli"
import * as Chaos from "./Chaos.ts"

const { defaults } = Chaos
const int = (name: string, fallback: number, description: string) =>
  Flag.Int(name).pipe(Flag.withDescription(`${description} (default ${fallback})`), Flag.withDefault(fallback))

const chaos = Command.make("chaos", {
  runs: int("runs", defaults.runs, "Runs to start"),
  duration: int("duration", defaults.durationMs / 1000, "Seconds of chaos (runs are started over this time)"),
  killInterval: int("kill-interval", defaults.killIntervalMs, "Mean ms between worker SIGKILLs"),
  replicas: Flag.Literals("replicas", ["1", "2"]).pipe(
    Flag.withDescription(`Server replicas on the same database (default ${defaults.replicas})`),
    Flag.withDefault("1")
  ),
  subscriber: Flag.Literals("subscriber", ["redis_streams", "http"]).pipe(
    Flag.withDescription(`How workers receive runs (default ${defaults.subscriber})`),
    Flag.withDefault(defaults.subscriber)
  ),
  workers: int("workers", defaults.workers, "Worker processes alive at any time"),
  concurrency: int("concurrency", defaults.workerConcurrency, "Runs each worker executes at once"),
  serverCrashes: int("server-crashes", defaults.serverCrashes, "Server SIGKILLs (round robin over the replicas)"),
  redisRestarts: int("redis-restarts", defaults.redisRestarts, "Redis restarts, empty"),
  postgresCrashes: int("postgres-crashes", defaults.postgresCrashes, "Postgres SIGKILLs (crash recovery on restart)"),
  outage: int("outage", defaults.outageMs, "Ms a crashed server, Redis or Postgres stays down"),
  heartbeat: int("heartbeat", defaults.heartbeatMs, "Workers' heartbeat ms (leases last three)"),
  taskMs: int("task-ms", defaults.taskMs, "Ms each task takes"),
  settle: int("settle", defaults.settleTimeoutMs / 1000, "Seconds to wait for runs to finish after the chaos"),
  seed: Flag.String("seed").pipe(Flag.withDescription("Seeds the choice of victims"), Flag.withDefault(defaults.seed)),
  keep: Flag.Directory("keep").pipe(
    Flag.withDescription("Keep the side-effect log and process logs in this directory"),
    Flag.optional
  )
}, (flags) =>
  Effect.gen(function*() {
    const options: Chaos.ChaosOptions = {
      ...defaults,
      runs: flags.runs,
      durationMs: flags.duration * 1000,
      killIntervalMs: flags.killInterval,
      replicas: Number(flags.replicas),
      subscriber: flags.subscriber,
      workers: flags.workers,
      workerConcurrency: flags.concurrency,
      serverCrashes: flags.serverCrashes,
      redisRestarts: flags.redisRestarts,
      postgresCrashes: flags.postgresCrashes,
      outageMs: flags.outage,
      heartbeatMs: flags.heartbeat,
      claimMinIdleMs: 3 * flags.heartbeat,
      taskMs: flags.taskMs,
      settleTimeoutMs: flags.settle * 1000,
      seed: flags.seed,
      directory: Option.getOrUndefined(flags.keep)
    }
    yield* Console.log(
      `chaos settings: ${options.runs} runs over ${flags.duration}s, ${options.workers} workers × ${options.workerConcurrency} ` +
        `(${options.subscriber}), ${options.replicas} server replica(s); heartbeat ${options.heartbeatMs} ms ` +
        `(lease ${3 * options.heartbeatMs} ms), claim-min-idle ${options.claimMinIdleMs} ms, reaper ` +
        `${options.reaperIntervalMs} ms, republish-after ${options.republishAfterMs} ms, tasks ${options.taskMs} ms, ` +
        `outages ${options.outageMs} ms`
    )
    const report = yield* Chaos.run(options).pipe(Effect.scoped)
    for (const violation of report.violations.slice(0, 50)) yield* Console.error(violation)
    if (report.violations.length > 50) yield* Console.error(`… and ${report.violations.length - 50} more`)
    if (report.violations.length > 0) yield* Console.error(`logs: ${report.directory}`)
    yield* Console.log(Chaos.summary(report))
    if (report.violations.length > 0) process.exitCode = 1
  })).pipe(Command.withDescription("Kill Aiki's processes while runs go on; check every run ends exactly once"))

chaos.pipe(
  Command.run({ version: "0.0.0" }),
  Effect.provide(NodeServices.layer),
  (program) =>
    NodeRuntime.runMain(program, {
      // A finished chaos exits with the code it set (1 on findings); Ctrl-C still tears everything down.
      teardown: (exit, onExit) =>
        Exit.isSuccess(exit) ? onExit(Number(process.exitCode ?? 0)) : Runtime.defaultTeardown(exit, onExit)
    })
)
