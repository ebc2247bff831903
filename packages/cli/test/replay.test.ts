/**
 * `aiki replay` as a CI pipeline runs it: runs of `checkout` are recorded by `aiki dev` serving the code as it was
 * (one completed, one in flight at an event), then replayed offline against two candidate changes: a refactor
 * that keeps the calls in order passes (exit 0), a reordering is flagged for both runs (exit 1, each run named).
 * Also `runs send-event --event-id`: a second send with the id stores nothing.
 */
import { freePort } from "@aiki/testing/freePort"
import { spawnNode, waitForHealth } from "@aiki/testing/NodeProcess"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { fileURLToPath } from "node:url"

const cli = fileURLToPath(new URL("../src/main.ts", import.meta.url))
const fixture = (shape: string) => fileURLToPath(new URL(`./fixtures/checkout-${shape}.ts`, import.meta.url))

const aiki = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  Effect.scoped(Effect.gen(function*() {
    const run = yield* spawnNode(cli, { NO_COLOR: "1", ...env }, args)
    return yield* Effect.promise(() => run.exited)
  }))

describe("aiki replay", () => {
  it.live("passes a change that keeps recorded runs deterministic and flags one that reorders their calls", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(freePort)
      const url = `http://localhost:${port}`
      const env = { AIKI_URL: url }
      const dev = yield* spawnNode(cli, { NO_COLOR: "1" }, ["dev", "--memory", "--port", String(port), "--workflows", fixture("recorded")])
      yield* waitForHealth(`${url}/health`, dev)
      // Recording is not under test: plain HTTP, as an application would.
      const start = (order: string) =>
        Effect.promise(() =>
          fetch(`${url}/workflows/checkout/versions/1.0.0/start`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ payload: order })
          }).then((r) => r.json() as Promise<{ id: string }>).then((r) => r.id)
        )
      const done = yield* start("o-1")
      const inFlight = yield* start("o-2")
      const state = (id: string) =>
        Effect.promise(() =>
          fetch(`${url}/workflow-runs/${id}/status`).then((r) => r.json() as Promise<{ state: string }>).then((r) => r.state)
        )
      for (const id of [done, inFlight]) {
        for (let i = 0; i < 100 && (yield* state(id)) !== "awaiting_event"; i++) yield* Effect.sleep("200 millis")
        assert.strictEqual(yield* state(id), "awaiting_event")
      }
      const sent = yield* aiki(["runs", "send-event", done, "packed", "--event-id", "pack-1"], env)
      assert.strictEqual(sent.code, 0, sent.stderr)
      const resent = yield* aiki(["runs", "send-event", done, "packed", "--event-id", "pack-1"], env)
      assert.include(resent.stdout, "Event pack-1 was already sent")
      for (let i = 0; i < 100 && (yield* state(done)) !== "completed"; i++) yield* Effect.sleep("200 millis")
      assert.strictEqual(yield* state(done), "completed")

      const passes = yield* aiki(["replay", "--workflow", "checkout", "--workflows", fixture("refactored")], env)
      assert.strictEqual(passes.code, 0, passes.stdout + passes.stderr)
      assert.include(passes.stdout, "Replayed 2 run(s) of checkout (1.0.0)")
      assert.include(passes.stdout, "all deterministic")

      const flagged = yield* aiki(["--json", "replay", "--workflow", "checkout", "--workflows", fixture("reordered")], env)
      assert.strictEqual(flagged.code, 1, flagged.stdout + flagged.stderr)
      const report = JSON.parse(flagged.stdout) as { replayed: number; nonDeterministic: Array<{ runId: string; message: string }> }
      assert.strictEqual(report.replayed, 2)
      assert.sameMembers(report.nonDeterministic.map((r) => r.runId), [done, inFlight])
      assert.include(report.nonDeterministic[0]!.message, "charge")
      const human = yield* aiki(["replay", "--workflow", "checkout", "--workflows", fixture("reordered")], env)
      assert.strictEqual(human.code, 1)
      assert.include(human.stdout, `${inFlight} (in flight)`)
      assert.include(human.stdout, "2 would be non-deterministic")

      // Only runs started since: none after now, so nothing to flag.
      const since = yield* aiki(["replay", "--workflow", "checkout", "--since", "2999-01-01T00:00:00Z", "--workflows", fixture("reordered")], env)
      assert.strictEqual(since.code, 0, since.stdout + since.stderr)
      assert.include(since.stdout, "Replayed 0 run(s)")
    }).pipe(Effect.scoped), 90_000)
})
