/**
 * Replay semantics, pinned. Each golden journal (`golden/*.json`, recorded by real runs and never rewritten) must
 * replay, offline, with today's code, to the result its run recorded, without running any task. The journals hold
 * the shapes whose replay depends on the order outcomes arrived in — `Promise.all` and `Promise.race` of chains,
 * `Effect.all` with concurrency — values thrown that are not Errors, and a journal recorded before outcome orders
 * existed (replay semantics version 1). A change to the engine that alters what an old run does fails here.
 */
import { Task, WorkflowRun } from "@aiki/contract/Models"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { readdirSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import type { TaskAddress } from "@aiki/contract/Ids"
import { hash } from "../src/internal/json.ts"
import * as Replay from "../src/Replay.ts"
import * as Fixtures from "./fixtures/golden.ts"

const directory = fileURLToPath(new URL("./golden/", import.meta.url))

const load = (file: string) => {
  const golden = JSON.parse(readFileSync(`${directory}${file}`, "utf8")) as { run: unknown; journal: unknown }
  return {
    run: Schema.decodeUnknownSync(WorkflowRun)(golden.run),
    journal: Schema.decodeUnknownSync(Schema.Array(Task))(golden.journal)
  }
}

const workflowOf = (run: WorkflowRun) => {
  const workflow = Fixtures.all.find((w) => w.name === run.workflowName && w.version === run.workflowVersion)
  if (workflow === undefined) throw new Error(`no fixture workflow ${run.workflowName}@${run.workflowVersion}`)
  return workflow
}

describe("replay", () => {
  for (const file of readdirSync(directory).filter((f) => f.endsWith(".json"))) {
    it.effect(`replays ${file} to the result its run recorded, running nothing`, () =>
      Effect.gen(function*() {
        const recorded = load(file)
        Fixtures.executed.length = 0
        const outcome = yield* Replay.run(workflowOf(recorded.run), recorded)
        assert.deepStrictEqual(outcome, { _tag: "Completed", result: recorded.run.result ?? null })
        assert.deepStrictEqual(Fixtures.executed, [])
      }))
  }

  it.effect("delivers recorded outcomes in their recorded order: in call order, two chains depart from the journal", () =>
    Effect.gen(function*() {
      const recorded = load("golden-parallel-chains.json")
      // The second chain's first task finished first when recorded: the journal says so.
      assert.deepStrictEqual(recorded.journal.map((t): Array<unknown> => [t.name, t.outcomeOrder]), [
        ["chain-a", 1],
        ["chain-b", 0],
        ["chain-d", 2],
        ["chain-c", 3]
      ])
      // Replayed with version 1 semantics (outcomes in call order, as before outcome orders existed), the chains
      // make their second calls the other way round: the very failure replay semantics version 2 fixed.
      const asVersion1 = new WorkflowRun({ ...recorded.run, replayVersion: 1 })
      const outcome = yield* Replay.run(workflowOf(recorded.run), { ...recorded, run: asVersion1 })
      assert.strictEqual(outcome._tag, "NonDeterministic")
    }))

  it.effect("finds a journal the code no longer matches, offline", () =>
    Effect.gen(function*() {
      const recorded = load("golden-sequential.json")
      // The same journal under another workflow's code: its first call is another task.
      const other = Fixtures.parallelChains.effect
      const outcome = yield* Replay.run(other, {
        run: new WorkflowRun({ ...recorded.run, workflowName: other.name }),
        journal: recorded.journal
      })
      assert.strictEqual(outcome._tag, "NonDeterministic")
      if (outcome._tag === "NonDeterministic") assert.include(outcome.message, "step-one")
    }))

  it.effect("stops where the journal ends: a run in flight replays to Waiting", () =>
    Effect.gen(function*() {
      const recorded = load("golden-sequential.json")
      Fixtures.executed.length = 0
      const outcome = yield* Replay.run(workflowOf(recorded.run), { ...recorded, journal: recorded.journal.slice(0, 2) })
      assert.deepStrictEqual(outcome, { _tag: "Waiting" })
      assert.deepStrictEqual(Fixtures.executed, [])
    }))

  describe("patches", () => {
    const recorded = () => load("golden-patch-and-timeout.json")

    /** The journal a run records under the code before the change: no marker, the old path's calls. */
    const recordedBeforeThePatch = () => {
      const { journal, run } = recorded()
      const [one, , wait, after] = journal
      const payload = `${one!.result as string} patched=false timedOut=true`
      const oldAfter = new Task({
        ...after!,
        address: `after-patch:${hash(payload)}:0` as TaskAddress,
        sequence: 2,
        payload,
        result: `after-patch(${payload})`
      })
      return { run, journal: [one!, new Task({ ...wait!, sequence: 1 }), oldAfter] }
    }

    it.effect("a run recorded under the changed code replays with patched() true, its marker found where it was", () =>
      Effect.gen(function*() {
        const outcome = yield* Replay.run(Fixtures.patchAndTimeout.effect, recorded())
        assert.deepStrictEqual(outcome, { _tag: "Completed", result: "after-patch(step-one(order-11) patched=true timedOut=true)" })
      }))

    it.effect("a run that passed the point under the code before replays with patched() false, deterministically", () =>
      Effect.gen(function*() {
        Fixtures.executed.length = 0
        const outcome = yield* Replay.run(Fixtures.patchAndTimeout.effect, recordedBeforeThePatch())
        assert.deepStrictEqual(outcome, { _tag: "Completed", result: "after-patch(step-one(order-11) patched=false timedOut=true)" })
        assert.deepStrictEqual(Fixtures.executed, [])
      }))

    it.effect("deprecatePatch replays the runs that recorded the marker", () =>
      Effect.gen(function*() {
        const outcome = yield* Replay.run(Fixtures.patchDeprecated.effect, recorded())
        assert.deepStrictEqual(outcome, { _tag: "Completed", result: "after-patch(step-one(order-11) patched=true timedOut=true)" })
      }))

    it.effect("without patched(), the changed code is non-deterministic for the run recorded before it", () =>
      Effect.gen(function*() {
        // The patched code's new path replayed against the old journal departs from it: what `patched` prevents.
        const outcome = yield* Replay.run(Fixtures.patchDeprecated.effect, recordedBeforeThePatch())
        assert.strictEqual(outcome._tag, "NonDeterministic")
      }))
  })
})
