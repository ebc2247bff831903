/**
 * Child workflows, end to end: a real server process and real worker processes (promise and Effect workers), over
 * Postgres and Redis. A child's result and its typed error reach the parent; the parent waits parked
 * (`awaiting_child`, no worker) and is woken however the child ends; cancelling a parent cascades to its
 * grandchildren within a second (an abandoned child runs on); a child outlives its parent's worker being SIGKILLed.
 * Each test may take a minute on a loaded machine (worker processes, CLI processes); alone they take seconds.
 */
import type { RunId } from "@aiki/contract/Ids"
import { eventually } from "@aiki/testing/eventually"
import { spawnNode } from "@aiki/testing/NodeProcess"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { AikiClient } from "../src/AikiClient.ts"
import * as Children from "./fixtures/children.ts"
import * as AikiServer from "./support/AikiServer.ts"
import * as WorkerProcess from "./support/WorkerProcess.ts"

class Server extends Context.Service<Server, AikiServer.AikiServer & { readonly sideEffectsFile: string }>()(
  "test/Server"
) {}

const TestLayer = Layer.unwrap(Effect.gen(function*() {
  const server = yield* AikiServer.make()
  const sideEffectsFile = join(mkdtempSync(join(tmpdir(), "aiki-children-")), "side-effects.log")
  return AikiClient.layer({ baseUrl: server.baseUrl }).pipe(
    Layer.provideMerge(Layer.succeed(Server, { ...server, sideEffectsFile }))
  )
}))

/** The server with one worker process serving every test of the file (starting a worker takes seconds). */
const SharedWorkerLayer = Layer.effectDiscard(Effect.suspend(() => worker("children-shared"))).pipe(
  Layer.provideMerge(TestLayer)
)

const worker = (id: string, env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const server = yield* Server
    return yield* WorkerProcess.start({
      AIKI_URL: server.baseUrl,
      REDIS_URL: AikiServer.redisUrl,
      WORKER_ID: id,
      SIDE_EFFECTS_FILE: server.sideEffectsFile,
      HEARTBEAT_MS: "400",
      CLAIM_MIN_IDLE_MS: "1500",
      ...env
    })
  })

const sideEffects = (runId: string) => Effect.map(Server, (server) => WorkerProcess.sideEffects(server.sideEffectsFile, runId))

const cli = fileURLToPath(new URL("../../cli/src/main.ts", import.meta.url))

/** Runs one `aiki` command against this file's server; its standard output. */
const aikiCli = (args: ReadonlyArray<string>, url: string) =>
  Effect.scoped(Effect.gen(function*() {
    const run = yield* spawnNode(cli, { NO_COLOR: "1", AIKI_URL: url }, args)
    const exited = yield* Effect.promise(() => run.exited)
    assert.strictEqual(exited.code, 0, exited.stderr)
    return exited.stdout
  }))

const childrenOf = (id: RunId) => Effect.flatMap(AikiClient, (aiki) => aiki.api.runs.children({ params: { id } }))
const transitionsOf = (id: RunId) => Effect.flatMap(AikiClient, (aiki) => aiki.api.runs.transitions({ params: { id } }))

/** Waits until `id` has a child in `state` (the only one, or the one of `workflow`), and returns it. */
const childIn = (id: RunId, state: string, workflow?: string) =>
  eventually(Effect.gen(function*() {
    const children = yield* childrenOf(id)
    const child = children.find((c) => workflow === undefined || c.workflowName === workflow)
    assert.strictEqual(child?.state, state, `no child of ${id} is ${state} yet`)
    return child!
  }))

layer(SharedWorkerLayer, { excludeTestServices: true, timeout: 120_000 })("child workflows", (it) => {
  it.effect("a child's result reaches its parent, which waited parked in awaiting_child and was woken by the child's end", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const parent = yield* aiki.start(Children.doublingParent.effect, { value: 21, ms: 1_500 })
      assert.deepStrictEqual(yield* parent.result({ timeoutMs: 60_000 }), { doubled: 42 })
      const [child, ...others] = yield* parent.children
      assert.lengthOf(others, 0)
      assert.strictEqual(child!.parentRunId, parent.id)
      assert.strictEqual(child!.workflowName, "doubling-child")
      assert.strictEqual(child!.parentClosePolicy, "cancel")
      assert.strictEqual(child!.state, "completed")
      const moves = (yield* transitionsOf(parent.id)).filter((t) => t.taskAddress === undefined)
      assert.isTrue(moves.some((t) => t.toState === "awaiting_child"), "the parent parked awaiting its child")
      assert.isTrue(moves.some((t) => t.fromState === "awaiting_child" && t.reason === "child_ended"), "the child's end woke it")
      // The journal holds the child's start and its end; the status names nothing awaited any more.
      const journal = yield* aiki.api.runs.tasks({ params: { id: parent.id } })
      assert.deepStrictEqual(journal.map((t) => [t.name, t.state]), [["aiki.child", "completed"], ["aiki.child.result", "completed"]])
      assert.deepStrictEqual(journal[0]!.result, { runId: child!.id })
      assert.isUndefined((yield* parent.status).awaitingChildren)
      // `aiki runs get` shows the children of a parent and the parent of a child.
      const server = yield* Server
      const shownParent = yield* aikiCli(["runs", "get", parent.id], server.baseUrl)
      assert.match(shownParent, new RegExp(`CHILD\\s+WORKFLOW\\s+STATE[\\s\\S]*${child!.id}\\s+doubling-child@1\\.0\\.0\\s+completed`))
      assert.match(yield* aikiCli(["runs", "get", child!.id], server.baseUrl), new RegExp(`Parent\\s+${parent.id}`))
    }).pipe(Effect.scoped), 90_000)

  it.effect("a child's typed error reaches an Effect parent decoded; a promise child's failure wakes its parent with its details", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const rejected = yield* aiki.start(Children.EffectParent, -5)
      const accepted = yield* aiki.start(Children.EffectParent, 7)
      const caught = yield* aiki.start(Children.catchingParent.effect, { ms: 1_000 })
      assert.strictEqual(yield* rejected.result({ timeoutMs: 60_000 }), "rejected negative -5 true")
      assert.strictEqual(yield* accepted.result({ timeoutMs: 60_000 }), "accepted 7")
      assert.deepStrictEqual(yield* caught.result({ timeoutMs: 60_000 }), {
        state: "failed",
        name: "RangeError",
        message: "the child gave up",
        data: { code: "E_CHILD" }
      })
      const [child] = yield* childrenOf(caught.id)
      assert.strictEqual(child!.state, "failed")
      const moves = (yield* transitionsOf(caught.id)).filter((t) => t.taskAddress === undefined)
      assert.isTrue(moves.some((t) => t.fromState === "awaiting_child" && t.reason === "child_ended"))
    }).pipe(Effect.scoped), 90_000)

  it.effect("a child's end reaches a parent kept on its worker by other work, before that work ends", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const parent = yield* aiki.start(Children.busyParent.effect, { taskMs: 6_000 })
      assert.deepStrictEqual(yield* parent.result({ timeoutMs: 60_000 }), { doubled: 10, order: ["child", "task"] })
    }).pipe(Effect.scoped), 90_000)

  it.effect("cancelling a child wakes its parked parent, which sees it cancelled", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const parent = yield* aiki.start(Children.patientParent.effect, null)
      const child = yield* childIn(parent.id, "awaiting_event")
      yield* eventually(Effect.gen(function*() {
        const status = yield* parent.status
        assert.strictEqual(status.state, "awaiting_child")
        assert.deepStrictEqual(status.awaitingChildren, [child.id])
      }))
      yield* aiki.handle(Children.waitingChild.effect, child.id).cancel
      assert.strictEqual(yield* parent.result({ timeoutMs: 60_000 }), "child cancelled")
    }).pipe(Effect.scoped), 90_000)

  it.effect("cancelling a parent cancels its child and grandchild within a second; an abandoned child runs on", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const top = yield* aiki.start(Children.cascadeTop.effect, null)
      const middle = yield* childIn(top.id, "awaiting_child", "cascade-middle")
      const grandchild = yield* childIn(middle.id, "awaiting_event")
      const abandoned = yield* childIn(top.id, "awaiting_event", "waiting-child")
      assert.strictEqual(abandoned.parentClosePolicy, "abandon")
      yield* top.cancel
      const cancelledAt = (yield* transitionsOf(top.id)).find((t) => t.toState === "cancelled")!.at
      const grandchildCancelled = yield* eventually(Effect.gen(function*() {
        const moves = yield* transitionsOf(grandchild.id)
        const cancelled = moves.find((t) => t.toState === "cancelled")
        assert.isDefined(cancelled, "the grandchild is not cancelled yet")
        return cancelled!
      }))
      assert.strictEqual(grandchildCancelled.reason, "parent_cancelled")
      const lag = Number(grandchildCancelled.at.epochMilliseconds) - Number(cancelledAt.epochMilliseconds)
      assert.isBelow(lag, 1_000, `the grandchild was cancelled ${lag} ms after the top run`)
      assert.strictEqual((yield* aiki.handle(Children.cascadeMiddle.effect, middle.id).status).state, "cancelled")
      yield* Effect.sleep("1 second")
      assert.strictEqual((yield* aiki.handle(Children.waitingChild.effect, abandoned.id).status).state, "awaiting_event")
      yield* aiki.handle(Children.waitingChild.effect, abandoned.id).cancel
    }).pipe(Effect.scoped), 90_000)
})

// A server of its own: no other worker may take the parent from the one the test kills.
layer(TestLayer, { excludeTestServices: true, timeout: 120_000 })("child workflows and crashes", (it) => {

  it.effect("a child outlives its parent's worker being SIGKILLed; the parent completes on another worker, the child started once", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const a = yield* worker("children-doomed", { PARENT_STEP_MS: "60000" })
      const parent = yield* aiki.start(Children.survivingParent.effect, { value: 4 })
      const child = yield* childIn(parent.id, "completed")
      yield* eventually(Effect.gen(function*() {
        assert.include((yield* sideEffects(parent.id)).map(([what]) => what), "parent-step")
      }))
      yield* WorkerProcess.signal(a, "SIGKILL")
      yield* worker("children-rescuer", { PARENT_STEP_MS: "0" })
      assert.deepStrictEqual(yield* parent.result({ timeoutMs: 60_000 }), { doubled: 8, by: "children-rescuer" })
      const children = yield* childrenOf(parent.id)
      assert.deepStrictEqual(children.map((c) => c.id), [child.id])
      assert.deepStrictEqual((yield* sideEffects(child.id)).map(([what]) => what), ["child-ran"])
      const journal = yield* aiki.api.runs.tasks({ params: { id: parent.id } })
      assert.deepStrictEqual(journal.find((t) => t.name === "aiki.child")!.attempts.length, 1)
    }).pipe(Effect.scoped), 90_000)
})
