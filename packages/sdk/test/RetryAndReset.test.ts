/**
 * Retrying and resetting runs by hand, and workflow attempts counted by the server: a real server process, real
 * worker processes (one SIGKILLed mid-attempt), real Postgres and Redis.
 */
import { assert, layer } from "@effect/vitest"
import { eventually } from "@aiki/testing/eventually"
import { Context, Effect, Layer, Schema } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { AikiClient } from "../src/AikiClient.ts"
import { client } from "../src/index.ts"
import * as Workflow from "../src/Workflow.ts"
import * as Retries from "./fixtures/retries.ts"
import * as AikiServer from "./support/AikiServer.ts"
import * as WorkerProcess from "./support/WorkerProcess.ts"

class Server extends Context.Service<Server, AikiServer.AikiServer & { readonly dir: string }>()("test/Server") {}

const TestLayer = Layer.unwrap(Effect.gen(function*() {
  // A short lease grace: the takeover test need not wait out the server's start.
  const server = yield* AikiServer.make({ LEASE_GRACE_MS: "0" })
  const dir = mkdtempSync(join(tmpdir(), "aiki-retry-"))
  return AikiClient.layer({ baseUrl: server.baseUrl }).pipe(Layer.provideMerge(Layer.succeed(Server, { ...server, dir })))
}))

const worker = (id: string, env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const server = yield* Server
    return yield* WorkerProcess.start({
      AIKI_URL: server.baseUrl,
      REDIS_URL: AikiServer.redisUrl,
      WORKER_ID: id,
      SIDE_EFFECTS_FILE: join(server.dir, "side-effects.log"),
      HEARTBEAT_MS: "400",
      CLAIM_MIN_IDLE_MS: "1000",
      LIVENESS_MS: "2000",
      ...env
    })
  })

/** What the run's tasks did, in order (`[what, worker]`). */
const sideEffects = (runId: string) =>
  Effect.map(Server, (server) => WorkerProcess.sideEffects(join(server.dir, "side-effects.log"), runId))

/** A version no worker serves. */
const neverServed = Workflow.make("never-served", "1.0.0", { payload: Schema.Null, success: Schema.Null, run: () => Effect.succeed(null) })

const gateFile = (name: string) => Effect.map(Server, (server) => join(server.dir, name))
const open = (file: string) => Effect.sync(() => writeFileSync(file, "open"))

layer(TestLayer, { excludeTestServices: true, timeout: 90_000 })("retry and reset by hand", (it) => {
  it.effect("a retried failed run replays its completed task and runs the failed one again, as the same run", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      yield* worker("retry-failed")
      const gate = yield* gateFile("failed.gate")
      const run = yield* aiki.start(Retries.gatedSteps.effect, { gate, mode: "throw" }, { idempotencyKey: "retry-failed" })
      const failure = yield* run.result({ timeoutMs: 30_000 }).pipe(Effect.flip)
      assert.strictEqual(failure._tag, "RunFailed")
      yield* open(gate)
      const retried = yield* run.retry
      assert.strictEqual(retried.state, "pending")
      assert.strictEqual(retried.attempt, 2)
      assert.isUndefined(retried.error)
      assert.strictEqual(yield* run.result({ timeoutMs: 30_000 }), "prepared passed")
      const effects = (yield* sideEffects(run.id)).map(([what]) => what)
      assert.deepStrictEqual(effects, ["prepare", "pass-gate", "pass-gate"])
      // The same run: its idempotency key still answers with it.
      const again = yield* aiki.start(Retries.gatedSteps.effect, { gate, mode: "throw" }, { idempotencyKey: "retry-failed" })
      assert.strictEqual(again.id, run.id)
      const trail = yield* aiki.api.runs.transitions({ params: { id: run.id } })
      const runMoves = trail.filter((t) => t.taskAddress === undefined).map((t) => `${t.fromState}>${t.toState}:${t.reason}`)
      assert.includeMembers(runMoves, ["running>failed:failed", "failed>pending:retried", "running>completed:completed"])
    }).pipe(Effect.scoped))

  it.effect("a retried cancelled run goes on from its journal", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      yield* worker("retry-cancelled")
      const gate = yield* gateFile("cancelled.gate")
      const run = yield* aiki.start(Retries.gatedSteps.effect, { gate, mode: "wait" })
      yield* eventually(Effect.gen(function*() {
        assert.include((yield* sideEffects(run.id)).map(([what]) => what), "pass-gate")
      }))
      // Retrying a run that is running is refused (409), and changes nothing.
      const refused = yield* run.retry.pipe(Effect.flip)
      assert.strictEqual(refused._tag, "InvalidTransition")
      assert.strictEqual((yield* run.status).state, "running")
      yield* run.cancel
      assert.strictEqual((yield* run.result().pipe(Effect.flip))._tag, "RunCancelled")
      yield* open(gate)
      // The promise API's handle, over the same implementation.
      const server = yield* Server
      const promiseClient = yield* Effect.acquireRelease(
        Effect.promise(() => client({ baseUrl: server.baseUrl })),
        (c) => Effect.promise(() => c.close())
      )
      const retried = yield* Effect.promise(() => Retries.gatedSteps.getHandle(promiseClient, run.id).retry())
      assert.strictEqual(retried.attempt, 2)
      assert.strictEqual(yield* run.result({ timeoutMs: 30_000 }), "prepared passed")
      assert.deepStrictEqual((yield* sideEffects(run.id)).map(([what]) => what), ["prepare", "pass-gate", "pass-gate"])
    }).pipe(Effect.scoped))

  it.effect("a reset discards the journal from a task on and runs the run again from there", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      yield* worker("resetter")
      const gate = yield* gateFile("reset.gate")
      const run = yield* aiki.start(Retries.gatedSteps.effect, { gate, mode: "throw" })
      assert.strictEqual((yield* run.result({ timeoutMs: 30_000 }).pipe(Effect.flip))._tag, "RunFailed")
      // A target that is not in the journal: 400 naming the field, nothing changed.
      const missing = yield* run.reset({ task: "no-such-task" }).pipe(Effect.flip)
      assert.strictEqual(missing._tag, "InvalidRequest")
      if (missing._tag === "InvalidRequest") assert.deepStrictEqual(missing.issues[0]?.path, ["task"])
      assert.strictEqual((yield* run.status).state, "failed")
      yield* open(gate)
      const reset = yield* run.reset({ task: "prepare" })
      assert.strictEqual(reset.state, "pending")
      assert.strictEqual(yield* run.result({ timeoutMs: 30_000 }), "prepared passed")
      // prepare ran again: its entry was discarded, not replayed.
      assert.deepStrictEqual((yield* sideEffects(run.id)).map(([what]) => what), ["prepare", "pass-gate", "prepare", "pass-gate"])
      const discarded = yield* aiki.api.runs.discarded({ params: { id: run.id } })
      assert.deepStrictEqual(discarded.map((d) => [d.reset, d.task.name, d.task.state]), [
        [1, "prepare", "completed"],
        [1, "pass-gate", "failed"]
      ])
      const tasks = yield* aiki.api.runs.tasks({ params: { id: run.id } })
      assert.deepStrictEqual(tasks.map((t) => [t.name, t.state, t.attempts.length]), [["prepare", "completed", 1], ["pass-gate", "completed", 1]])
      const trail = yield* aiki.api.runs.transitions({ params: { id: run.id } })
      assert.isTrue(trail.some((t) => t.fromState === "failed" && t.toState === "pending" && t.reason === "reset"))
    }).pipe(Effect.scoped))

  it.effect("a start of a version no worker registered is flagged on the handle and in the run's status", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const run = yield* aiki.start(neverServed, null)
      assert.include(run.warning, "No worker had registered never-served version 1.0.0")
      assert.strictEqual((yield* run.status).startWarning, run.warning)
    }))

  it.effect("workflow attempts are counted by the server: a takeover goes on from the attempt it was in", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const first = yield* worker("attempts-a", { HANG_ON_SECOND_TRY: "1" })
      const run = yield* aiki.start(Retries.failsEveryAttempt.effect, null)
      // Killed once the server knows try 2 began (a start travels lazily: a kill before it arrives would make the
      // next worker's try the same attempt, as documented).
      yield* eventually(Effect.gen(function*() {
        assert.include((yield* sideEffects(run.id)).map(([what, n]) => `${what} ${n}`), "try 2")
        const tasks = yield* aiki.api.runs.tasks({ params: { id: run.id } })
        assert.strictEqual(tasks[0]?.attempts.length, 2)
      }))
      assert.strictEqual((yield* run.status).attempt, 2)
      yield* WorkerProcess.signal(first, "SIGKILL")
      yield* worker("attempts-b")
      assert.strictEqual((yield* run.result({ timeoutMs: 60_000 }).pipe(Effect.flip))._tag, "RunFailed")
      // Attempt 2 was cut off and taken over (try 3), then attempt 3 (try 4): three workflow attempts in all. A
      // count that started over after the takeover would have made two more (tries 3, 4 and 5).
      const tries = (yield* sideEffects(run.id)).map(([what, n, by]) => `${what} ${n} ${by}`)
      assert.deepStrictEqual(tries, ["try 1 attempts-a", "try 2 attempts-a", "try 3 attempts-b", "try 4 attempts-b"])
      const status = yield* run.status
      assert.strictEqual(status.attempt, 3)
      assert.strictEqual(status.error?.message, "try 4 failed")
    }).pipe(Effect.scoped))
})
