/**
 * Timeouts and poison runs, enforced by the server with the database's clock: a task attempt that ignores its
 * signal is timed out while its worker lives and retried per its policy; a task that stops heartbeating is failed;
 * a run's execution timeout (set at start, or declared by its version) fails it with `timed_out` and aborts its
 * task; a run nobody claims fails with `schedule_to_start_timed_out`; a run that kills every worker that takes it
 * fails as `poisoned` after `POISON_AFTER_LAPSES` lapses while other runs complete. Real server and worker processes.
 */
import type { RunId, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { type Running, spawnNode } from "@aiki/testing/NodeProcess"
import { eventually } from "@aiki/testing/eventually"
import { assert, layer } from "@effect/vitest"
import { Context, DateTime, Effect, Layer } from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { AikiClient } from "../src/AikiClient.ts"
import * as Timeouts from "./fixtures/timeouts.ts"
import * as Fixtures from "./fixtures/workflows.ts"
import * as AikiServer from "./support/AikiServer.ts"
import * as WorkerProcess from "./support/WorkerProcess.ts"

class Server extends Context.Service<Server, AikiServer.AikiServer & {
  readonly sideEffectsFile: string
  /** The worker every test but the poison one shares, registered before the tests begin. */
  readonly shared: Running
}>()("test/TimeoutsServer") {}

/** A fixture worker (HTTP subscriber) against `server`. */
const workerOf = (server: { readonly baseUrl: string }, sideEffectsFile: string, id: string) =>
  WorkerProcess.start({
    AIKI_URL: server.baseUrl,
    WORKER_ID: id,
    SIDE_EFFECTS_FILE: sideEffectsFile,
    HEARTBEAT_MS: "400",
    LIVENESS_MS: "2000",
    // Long sleeps park at once (a run timeout then finds its run parked).
    SUSPEND_AFTER_MS: "1000"
  })

const TestLayer = Layer.unwrap(Effect.gen(function*() {
  const server = yield* AikiServer.make({ TIMEOUT_SWEEP_INTERVAL_MS: "200", POISON_AFTER_LAPSES: "3" })
  const sideEffectsFile = join(mkdtempSync(join(tmpdir(), "aiki-timeouts-")), "side-effects.log")
  const shared = yield* workerOf(server, sideEffectsFile, "shared")
  const client = AikiClient.layer({ baseUrl: server.baseUrl })
  // Registered before the runs start, so that run timeouts find them running (and parked).
  yield* eventually(Effect.flatMap(AikiClient, (aiki) => aiki.api.workers.health({ params: { id: "shared" as WorkerId } })), {
    timeoutMs: 30_000
  }).pipe(Effect.provide(client))
  return client.pipe(Layer.provideMerge(Layer.succeed(Server, { ...server, sideEffectsFile, shared })))
}))

/** Another fixture worker against this file's server. */
const worker = (id: string) => Effect.flatMap(Server, (server) => workerOf(server, server.sideEffectsFile, id))

const sideEffects = (runId: string) =>
  Effect.map(Server, (server) => WorkerProcess.sideEffects(server.sideEffectsFile, runId).map(([what]) => what))

const cliMain = fileURLToPath(new URL("../../cli/src/main.ts", import.meta.url))

/** Runs one `aiki` command against `url` to its end. */
const cli = (url: string, args: ReadonlyArray<string>) =>
  Effect.scoped(Effect.gen(function*() {
    const run = yield* spawnNode(cliMain, { NO_COLOR: "1", AIKI_URL: url }, args)
    return yield* Effect.promise(() => run.exited)
  }))

const alive = (worker: Running) => worker.child.exitCode === null && worker.child.signalCode === null

layer(TestLayer, { excludeTestServices: true, timeout: 90_000 })("timeouts", (it) => {
  it.effect("times out an attempt that ignores its signal while its worker lives, and retries it per its policy", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const w = (yield* Server).shared
      const run = yield* aiki.start(Timeouts.hangsOnFirstAttempt.effect, null)
      assert.deepStrictEqual(yield* run.result({ timeoutMs: 30_000 }), { attempt: 2 })
      const [task] = yield* aiki.api.runs.tasks({ params: { id: run.id } })
      assert.strictEqual(task!.attempts.length, 2)
      const first = task!.attempts[0]!
      assert.strictEqual(first.error?.name, "TaskTimedOut")
      assert.deepStrictEqual(first.error?.data, { kind: "start_to_close" })
      // The server failed it at its deadline (1.5 s), not the worker: the attempt was open that long.
      const ran = DateTime.toEpochMillis(first.finishedAt!) - DateTime.toEpochMillis(first.startedAt)
      assert.isAtLeast(ran, 1_500)
      assert.isDefined(first.timeoutAt)
      // Its signal was aborted, and the same worker, alive throughout, ran the retry.
      const effects = yield* sideEffects(run.id)
      assert.deepStrictEqual(effects, ["attempt-1", "aborted-1", "attempt-2"])
      assert.isTrue(alive(w))
      const trail = yield* aiki.api.runs.transitions({ params: { id: run.id } })
      assert.isTrue(trail.some((t) => t.reason === "task_timed_out"))
    }).pipe(Effect.scoped))

  it.effect("fails a task that stops heartbeating, even while its worker lives; heartbeats kept it alive until then", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const w = (yield* Server).shared
      const run = yield* aiki.start(Timeouts.stopsHeartbeating.effect, null)
      assert.deepStrictEqual(yield* run.result({ timeoutMs: 30_000 }), { caught: "TaskTimedOut", kind: "heartbeat" })
      const [task] = yield* aiki.api.runs.tasks({ params: { id: run.id } })
      const attempt = task!.attempts[0]!
      assert.strictEqual(attempt.error?.name, "TaskTimedOut")
      assert.strictEqual(attempt.heartbeatTimeoutMs, 1_500)
      // Heartbeats for 3 s kept it past its 1.5 s heartbeat timeout; the details of one of them are kept.
      const ran = DateTime.toEpochMillis(attempt.finishedAt!) - DateTime.toEpochMillis(attempt.startedAt)
      assert.isAtLeast(ran, 3_000)
      assert.isObject(attempt.heartbeatDetails)
      assert.deepStrictEqual(yield* sideEffects(run.id), ["stopped-heartbeating", "aborted"])
      assert.isTrue(alive(w))
    }).pipe(Effect.scoped))

  it.effect("times out an Effect task that stops heartbeating by interrupting it; the retry completes", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const run = yield* aiki.start(Timeouts.effectHeartbeatTimeout, null)
      assert.strictEqual(yield* run.result({ timeoutMs: 30_000 }), 2)
      const [task] = yield* aiki.api.runs.tasks({ params: { id: run.id } })
      assert.deepStrictEqual(task!.attempts[0]!.error?.data, { kind: "heartbeat" })
      assert.deepStrictEqual(task!.attempts[0]!.heartbeatDetails, { started: true })
      assert.deepStrictEqual(yield* sideEffects(run.id), ["attempt-1", "interrupted-1", "attempt-2"])
    }).pipe(Effect.scoped))

  it.effect("fails a run past its execution timeout (set at start, or declared by its version) and aborts its task", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const running = yield* aiki.start(Timeouts.takesAMinute.effect, null, { executionTimeoutMs: 5_000 })
      const parked = yield* aiki.start(Timeouts.declaresItsTimeout.effect, null)
      for (const run of [running, parked]) {
        const status = yield* eventually(Effect.gen(function*() {
          const status = yield* run.status
          assert.strictEqual(status.state, "failed")
          return status
        }), { timeoutMs: 30_000 })
        assert.strictEqual(status.failureReason, "timed_out")
        assert.strictEqual(status.error?.name, "RunTimedOut")
        assert.isDefined(status.deadlineAt)
      }
      // The worker running the task was told at once and aborted it.
      yield* eventually(Effect.gen(function*() {
        assert.deepStrictEqual(yield* sideEffects(running.id), ["started", "aborted"])
      }))
      const trail = yield* aiki.api.runs.transitions({ params: { id: parked.id } })
      assert.isTrue(trail.some((t) => t.fromState === "sleeping" && t.toState === "failed" && t.reason === "timed_out"))
    }).pipe(Effect.scoped))

  it.effect("fails a run no worker claimed within its schedule-to-start timeout; the API and the CLI say why", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const server = yield* Server
      const started = yield* aiki.api.workflows.start({
        params: { name: "nobody-serves" as WorkflowName, version: "1.0.0" as WorkflowVersion },
        payload: { payload: null, scheduleToStartTimeoutMs: 1_000 }
      })
      // The CLI's flag sets it too.
      const viaCli = yield* cli(server.baseUrl, [
        "--json", "workflows", "start", "nobody-serves", "1.0.0", "--schedule-to-start-timeout", "1000"
      ])
      assert.strictEqual(viaCli.code, 0, viaCli.stderr)
      const cliRun = (JSON.parse(viaCli.stdout) as { id: RunId }).id
      for (const id of [started.id, cliRun]) {
        const status = yield* eventually(Effect.gen(function*() {
          const run = yield* aiki.api.runs.status({ params: { id } })
          assert.strictEqual(run.state, "failed")
          return run
        }), { timeoutMs: 15_000 })
        assert.strictEqual(status.failureReason, "schedule_to_start_timed_out")
        assert.strictEqual(status.error?.name, "ScheduleToStartTimedOut")
      }
      const shown = yield* cli(server.baseUrl, ["runs", "get", cliRun])
      assert.include(shown.stdout, "failed (schedule_to_start_timed_out)")
      // A timeout that is not a positive integer is refused, naming the field, and nothing is started.
      const refused = yield* Effect.promise(() =>
        fetch(`${server.baseUrl}/workflows/nobody-serves/versions/1.0.0/start`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ payload: null, executionTimeoutMs: 0 })
        }).then(async (r) => ({ status: r.status, body: await r.text() }))
      )
      assert.strictEqual(refused.status, 400)
      assert.include(refused.body, "executionTimeoutMs")
    }).pipe(Effect.scoped))

  it.effect("fails a run that crashes every worker that takes it as poisoned after 3 lapses; other runs complete", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      // The shared worker would be one more victim: it stops first (the last test of the file).
      const { shared } = yield* Server
      yield* WorkerProcess.signal(shared, "SIGTERM")
      yield* Effect.promise(() => shared.exited)
      const poison = yield* aiki.start(Timeouts.crashesItsWorker.effect, { poison: true })
      const others = yield* Effect.forEach([1, 2, 3], (n) => aiki.start(Fixtures.threeSteps.effect, n))
      const healthy = yield* aiki.start(Timeouts.crashesItsWorker.effect, { poison: false })
      // One worker at a time, replaced whenever the poison run kills it.
      let generation = 0
      let current = yield* worker(`poisoned-${generation}`)
      const status = yield* eventually(Effect.gen(function*() {
        if (!alive(current)) current = yield* worker(`poisoned-${++generation}`)
        const status = yield* poison.status
        assert.strictEqual(status.state, "failed")
        return status
      }), { timeoutMs: 60_000 })
      assert.strictEqual(status.failureReason, "poisoned")
      assert.strictEqual(status.error?.name, "RunPoisoned")
      assert.include(status.error?.message ?? "", "lapsed 3 times in a row")
      // It crashed exactly three workers: it was not handed to a fourth.
      assert.strictEqual((yield* sideEffects(poison.id)).filter((what) => what === "crashing").length, 3)
      if (!alive(current)) current = yield* worker(`poisoned-${++generation}`)
      for (const [n, run] of others.entries()) {
        const result = yield* run.result({ timeoutMs: 30_000 })
        assert.strictEqual((result as { one: number }).one, n + 1)
      }
      assert.strictEqual(yield* healthy.result({ timeoutMs: 30_000 }), "fine")
      const trail = yield* aiki.api.runs.transitions({ params: { id: poison.id as RunId } })
      assert.isTrue(trail.some((t) => t.toState === "failed" && t.reason === "poisoned"))
    }).pipe(Effect.scoped))
})
