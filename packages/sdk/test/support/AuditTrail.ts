/**
 * When runs ran, read from their audit trails (`GET /workflow-runs/:id/transitions`): from each grant to the
 * transition that followed it. The trail is stamped as each transition is written, so a run granted because
 * another's end freed its slot starts after that end.
 */
import type { RunId } from "@aiki/contract/Ids"
import type { Transition } from "@aiki/contract/Models"
import { Effect } from "effect"
import { AikiClient } from "../../src/AikiClient.ts"

export interface Span {
  readonly id: RunId
  readonly from: number
  readonly to: number
}

const ms = (t: Transition) => Number(t.at.epochMilliseconds)

/** Each time each run was running, from its audit trail (a run still running has no span yet). */
export const runningSpans = (runIds: ReadonlyArray<RunId>) =>
  Effect.gen(function*() {
    const aiki = yield* AikiClient
    const spans = yield* Effect.forEach(runIds, (id) =>
      aiki.api.runs.transitions({ params: { id } }).pipe(Effect.map((trail) => {
        const run = trail.filter((t) => t.taskAddress === undefined)
        return run.flatMap((t, i): Array<Span> =>
          t.toState === "running" && run[i + 1] !== undefined ? [{ id, from: ms(t), to: ms(run[i + 1]!) }] : []
        )
      })), { concurrency: 5 })
    return spans.flat()
  })

/** The most spans open at once (one ending when another starts does not overlap it). */
export const mostAtOnce = (spans: ReadonlyArray<{ readonly from: number; readonly to: number }>) => {
  const edges = spans.flatMap((s) => [[s.from, 1], [s.to, -1]] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1])
  let open = 0
  let most = 0
  for (const [, delta] of edges) most = Math.max(most, (open += delta))
  return most
}
