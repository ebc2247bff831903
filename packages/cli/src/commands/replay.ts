/**
 * `aiki replay`: checks a code change against recorded runs before it is deployed. It reads a workflow's runs from
 * a server (their journals included), replays each one offline against the workflows of a module as they are now
 * (`Replay.run`: no task runs, nothing is written), and reports every run the new code would make
 * non-deterministic. Exit code 1 when there is one, so a CI pipeline can refuse the deploy.
 *
 * Runs are pinned to their version: a run is replayed against the module's workflow of the same name and version,
 * and runs of versions the module does not define are counted as skipped (the new code never executes them).
 */
import type { RunId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { WorkflowRun } from "@aiki/contract/Models"
import { isTerminal } from "@aiki/contract/RunState"
import * as Replay from "@aiki/sdk/Replay"
import { Console, DateTime, Effect, Option, References } from "effect"
import { Command, Flag } from "effect/cli"
import * as Output from "../Output.ts"
import { withClient } from "../Root.ts"
import * as WorkflowModule from "../WorkflowModule.ts"

/** One replayed run, as reported. */
interface Checked {
  readonly runId: string
  readonly version: string
  readonly state: string
  readonly outcome: Replay.ReplayOutcome["_tag"]
  readonly message?: string
}

export const replay = Command.make("replay", {
  workflow: Flag.String("workflow").pipe(Flag.withDescription("The workflow whose recorded runs to replay")),
  version: Flag.String("version").pipe(Flag.withDescription("Only runs of this version"), Flag.optional),
  since: Flag.String("since").pipe(
    Flag.withDescription("Only runs started at or after this time (ISO 8601, e.g. 2026-11-01T00:00:00Z)"),
    Flag.optional
  ),
  limit: Flag.Int("limit").pipe(Flag.withDescription("Replay at most this many runs, newest first"), Flag.withDefault(1_000)),
  workflows: Flag.String("workflows").pipe(Flag.withDescription("The module exporting `workflows`: the code to check"))
}, (flags) =>
  withClient((api, json) =>
    Effect.gen(function*() {
      const module = yield* WorkflowModule.load(flags.workflows)
      const versions = new Map(module.filter((w) => w.name === flags.workflow).map((w) => [w.version as string, w]))
      if (versions.size === 0) {
        return yield* Effect.fail(new Error(`${flags.workflows} defines no workflow ${flags.workflow}`))
      }
      const since = Option.isNone(flags.since) ? undefined : DateTime.make(flags.since.value)
      if (since !== undefined && Option.isNone(since)) {
        return yield* Effect.fail(new Error(`--since is not a time: ${Option.getOrThrow(flags.since)}`))
      }
      const runs: Array<WorkflowRun> = []
      let cursor: RunId | undefined
      while (runs.length < flags.limit) {
        const page = yield* api.runs.list({
          query: {
            workflow: flags.workflow as WorkflowName,
            limit: Math.min(500, flags.limit - runs.length),
            ...Option.match(flags.version, { onNone: () => ({}), onSome: (v) => ({ version: v as WorkflowVersion }) }),
            ...(since !== undefined && Option.isSome(since) ? { from: DateTime.toUtc(since.value) } : {}),
            ...(cursor !== undefined ? { cursor } : {})
          }
        })
        runs.push(...page.runs)
        if (page.nextCursor === undefined || page.runs.length === 0) break
        cursor = page.nextCursor as RunId
      }
      const checked: Array<Checked> = []
      let skipped = 0
      for (const run of runs) {
        const workflow = versions.get(run.workflowVersion)
        if (workflow === undefined) {
          skipped++
          continue
        }
        const journal = yield* api.runs.tasks({ params: { id: run.id } })
        // Workflows loaded from a module run on WorkflowRun alone, as `aiki dev` serves them.
        // The engine's own warnings (a run failing as non-deterministic) would only repeat the report.
        const outcome = yield* (Replay.run(workflow, { run, journal }) as Effect.Effect<Replay.ReplayOutcome>).pipe(
          Effect.provideService(References.MinimumLogLevel, "None")
        )
        checked.push({
          runId: run.id,
          version: run.workflowVersion,
          state: run.state,
          outcome: outcome._tag,
          ...(outcome._tag === "NonDeterministic" ? { message: outcome.message } : {})
        })
      }
      const broken = checked.filter((c) => c.outcome === "NonDeterministic")
      if (broken.length > 0) process.exitCode = 1
      if (json) return yield* Output.json({ replayed: checked.length, skipped, nonDeterministic: broken, runs: checked })
      if (checked.length > 0) {
        yield* Console.log(Output.table(
          ["RUN", "VERSION", "STATE", "REPLAY"],
          checked.map((c) => [c.runId, c.version, Output.state(c.state), c.outcome === "NonDeterministic" ? "NON-DETERMINISTIC" : c.outcome.toLowerCase()])
        ))
      }
      for (const c of broken) yield* Console.log(`\n${Output.bold(c.runId)}${isTerminal(c.state as WorkflowRun["state"]) ? "" : " (in flight)"}: ${c.message}`)
      const versionsShown = [...versions.keys()].join(", ")
      yield* Console.log(
        `\nReplayed ${checked.length} run(s) of ${flags.workflow} (${versionsShown}) against ${flags.workflows}` +
          (skipped > 0 ? `; skipped ${skipped} of other versions` : "") +
          (broken.length > 0 ? `: ${broken.length} would be non-deterministic` : ": all deterministic")
      )
    })
  )).pipe(Command.withDescription(
    "Replay a workflow's recorded runs against a module's code, offline; exit 1 if any would be non-deterministic"
  ))
