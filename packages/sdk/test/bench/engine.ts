/**
 * `pnpm bench:engine`: the worker's execution engine alone (`RunExecution.execute`), with no server, no network
 * and no other process: the bench's three no-op tasks per run (promise API), 50 runs at once, every write answered
 * at once. It prints the CPU time per run of eight rounds of `BENCH_ENGINE_RUNS` (10,000) runs and their minimum,
 * which swings far less than `pnpm bench`'s figures on a shared machine. Steadier still on one core:
 * `taskset -c 1 pnpm bench:engine`.
 */
import type { Lease, Write, WriteResult } from "@aiki/contract/Models"
import { Deferred, Effect, Exit } from "effect"
import { task, workflow } from "../../src/index.ts"
import { execute } from "../../src/internal/RunExecution.ts"
import type { WriteBatcher } from "../../src/internal/WriteBatcher.ts"

const runs = Number(process.env["BENCH_ENGINE_RUNS"] ?? 10_000)
const rounds = 8

const noop = (name: string) => task({ name, run: ({ payload }: { payload: number }) => payload })
const [first, second, third] = [noop("first"), noop("second"), noop("third")]
const threeNoops = workflow({ name: "bench-three-noops" }).v("1.0.0", {
  async run(ctx, payload: number) {
    const a = await first.start(ctx, { payload })
    const b = await second.start(ctx, { payload: a + 1 })
    return await third.start(ctx, { payload: b + 1 })
  }
})

let writes = 0
const written = Exit.succeed<WriteResult>({ _tag: "Written" })
const answered: WriteBatcher = {
  submit: (_: Write, observe?: (answer: Exit.Exit<WriteResult>) => void) =>
    Effect.sync(() => {
      writes++
      const answer = Deferred.makeUnsafe<WriteResult>()
      Deferred.doneUnsafe(answer, written)
      observe?.(written)
      return answer
    })
}

const serverTime = new Date()
const leaseOf = (i: number) => ({
  run: {
    id: `00000000-0000-7000-8000-${String(i).padStart(12, "0")}`,
    workflowName: threeNoops.name,
    workflowVersion: threeNoops.version,
    state: "running",
    payload: i,
    leaseEpoch: 1,
    replayVersion: 2
  },
  leaseEpoch: 1,
  journal: [],
  serverTime: { epochMilliseconds: serverTime.getTime() }
}) as unknown as Lease

const round = (count: number) =>
  Effect.forEach(
    Array.from({ length: count }, (_, i) => i),
    (i) => execute(threeNoops.effect, leaseOf(i), answered, { suspendAfterMs: 5_000, maxPayloadBytes: 1 << 20 }),
    { concurrency: 50 }
  )

const main = Effect.gen(function*() {
  yield* round(2_000) // warm-up
  const perRun: Array<number> = []
  for (let r = 0; r < rounds; r++) {
    writes = 0
    const before = process.cpuUsage()
    const ends = yield* round(runs)
    const cpu = process.cpuUsage(before)
    const completed = ends.filter((end) => end === "completed").length
    if (completed !== runs) return yield* Effect.die(new Error(`${runs - completed} of ${runs} runs did not complete`))
    perRun.push((cpu.user + cpu.system) / runs)
  }
  console.log(`The worker's engine alone: ${runs} runs × ${rounds} rounds, 3 no-op tasks each, ${writes / runs} writes per run`)
  console.log(`  CPU µs per run: ${perRun.map((us) => us.toFixed(0)).join(" ")}; minimum ${Math.min(...perRun).toFixed(0)}`)
})

Effect.runPromise(main)
