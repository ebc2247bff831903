/**
 * Replays a recorded run against a workflow's code as it is now, offline: the recorded outcomes are delivered in
 * their recorded order, as a worker would after a takeover, but no task runs, nothing waits and nothing is sent to
 * a server. It tells whether today's code would carry the run on (`Completed`, `Failed`, or `Waiting` for work
 * the journal does not hold yet) or would depart from it (`NonDeterministic`) — a check to run before deploying a
 * change, and how the replay semantics are pinned by golden journals in Aiki's own tests.
 *
 * @example
 * ```ts
 * const lease = yield* api.execution.claim(…)  // or a run and its tasks read from the API
 * const outcome = yield* Replay.run(OrderProcessing, { run, journal })
 * if (outcome._tag === "NonDeterministic") console.error(outcome.message)
 * ```
 */
import type { LeaseEpoch } from "@aiki/contract/Ids"
import { type ErrorDetails, type Json, Lease, type Task, type WorkflowRun, type Write, type WriteResult } from "@aiki/contract/Models"
import * as DateTime from "effect/DateTime"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import { execute } from "./internal/RunExecution.ts"
import type { WriteBatcher } from "./internal/WriteBatcher.ts"
import type * as Workflow from "./Workflow.ts"

/** What replaying a run with today's code leads to. */
export type ReplayOutcome =
  | { readonly _tag: "Completed"; readonly result: Json }
  | { readonly _tag: "Failed"; readonly error: ErrorDetails }
  /** Every recorded outcome was delivered; the code now waits for work the journal does not hold yet. */
  | { readonly _tag: "Waiting" }
  | { readonly _tag: "NonDeterministic"; readonly message: string }

/** Replays `recorded` (a run and its journal) with `workflow`'s current code. */
export const run = <W extends Workflow.Any>(
  workflow: W,
  recorded: { readonly run: WorkflowRun; readonly journal: ReadonlyArray<Task> }
): Effect.Effect<ReplayOutcome, never, Workflow.Services<W>> =>
  Effect.gen(function*() {
    // What the execution would have written; only how the run ends matters here.
    const written: Array<Write> = []
    const writes: WriteBatcher = {
      submit: (write) =>
        Effect.gen(function*() {
          written.push(write)
          const answer = yield* Deferred.make<WriteResult>()
          yield* Deferred.succeed(answer, { _tag: "Written" })
          return answer
        })
    }
    const now = yield* DateTime.now
    const lease = new Lease({
      run: recorded.run,
      leaseEpoch: Math.max(1, recorded.run.leaseEpoch) as LeaseEpoch,
      leaseExpiresAt: now,
      journal: recorded.journal,
      serverTime: now
    }, { disableChecks: true })
    const end = yield* execute(workflow, lease, writes, {
      suspendAfterMs: Number.POSITIVE_INFINITY,
      maxPayloadBytes: Number.POSITIVE_INFINITY,
      replayOnly: true
    })
    const final = written.findLast((w) => w._tag === "CompleteRun" || w._tag === "FailRun")
    if (end === "waiting" || final === undefined) return { _tag: "Waiting" } as const
    if (final._tag === "CompleteRun") return { _tag: "Completed", result: final.result } as const
    if (final._tag === "FailRun" && final.error.name === "NonDeterminismError") {
      return { _tag: "NonDeterministic", message: final.error.message } as const
    }
    return { _tag: "Failed", error: final._tag === "FailRun" ? final.error : { name: "Error", message: "unknown" } } as const
  }) as Effect.Effect<ReplayOutcome, never, Workflow.Services<W>>
