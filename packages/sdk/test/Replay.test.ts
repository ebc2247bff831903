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
})
