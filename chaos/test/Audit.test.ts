/**
 * The verdict is only worth something if it can say no: each invariant is broken here on purpose, on records
 * shaped as the database returns them, and must be reported.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Audit from "../src/Audit.ts"
import { type Execution, expectedResult, taskNames } from "../src/ChaosWorkflow.ts"
import type { Kill } from "../src/Deployment.ts"

const [first, second, third] = taskNames as [string, string, string]

/** One completed run `n` (id `r<n>`) whose tasks each ran once, attempt 1 on `w1`, at 1000 + 100·i ms. */
const completedRun = (n: number) => {
  const runId = `r${n}`
  const records: Audit.Records = {
    runs: [{ id: runId, idempotencyKey: `chaos-${n}`, state: "completed", result: expectedResult(n), error: null }],
    tasks: taskNames.map((name) => ({ runId, name, state: "completed", completions: 1 })),
    attempts: taskNames.map((name, i) => ({
      runId,
      name,
      attempt: 1,
      startedAt: 1_000 + 100 * i,
      finishedAt: 1_050 + 100 * i,
      error: null
    })),
    expiries: []
  }
  const executions: Array<Execution> = taskNames.map((task, i) => ({
    at: 1_000 + 100 * i,
    runId,
    task,
    attempt: 1,
    workerId: "w1"
  }))
  return { records, executions, expected: [{ key: `chaos-${n}`, n, runId }] }
}

/**
 * Run 0 where `second` ran on `w1` from 1100 (attempt 1, closed by attempt 2 with LeaseLost at 5000) and again on
 * `w2` at 5000 (attempt 2, completed at 5050).
 */
const repeated = () => {
  const base = completedRun(0)
  const records: Audit.Records = {
    ...base.records,
    attempts: [
      ...base.records.attempts.filter((a) => a.name !== second),
      { runId: "r0", name: second, attempt: 1, startedAt: 1_100, finishedAt: 5_000, error: "LeaseLost" },
      { runId: "r0", name: second, attempt: 2, startedAt: 5_000, finishedAt: 5_050, error: null }
    ]
  }
  const executions = [...base.executions, { at: 5_000, runId: "r0", task: second, attempt: 2, workerId: "w2" }]
  return { ...base, records, executions }
}

const judge = (
  input: ReturnType<typeof completedRun>,
  kills: ReadonlyArray<Kill> = [],
  replicaOf: (workerId: string) => number | undefined = () => 0
) => Audit.judge({ ...input, kills, outageShadowMs: 500, replicaOf, origin: 0 })

describe("Audit", () => {
  it("finds nothing wrong with a run that completed exactly, each task once", () => {
    const verdict = judge(completedRun(7))
    assert.deepStrictEqual(verdict.violations, [])
    assert.strictEqual(verdict.exact, 1)
    assert.strictEqual(verdict.executions, 3)
    assert.strictEqual(verdict.reExecutions, 0)
  })

  it("reports a wrong result, a failed run, a run never started and one missing from the database", () => {
    const wrong = completedRun(1)
    const failed = completedRun(2)
    const verdict = Audit.judge({
      expected: [...wrong.expected, ...failed.expected, { key: "chaos-3", n: 3, runId: undefined }, { key: "chaos-4", n: 4, runId: "r4" }],
      records: {
        runs: [
          { ...wrong.records.runs[0]!, result: { n: 1, value: 0 } },
          { ...failed.records.runs[0]!, state: "failed", result: null, error: { message: "boom" } }
        ],
        tasks: [],
        attempts: [],
        expiries: []
      },
      executions: [...wrong.executions, ...failed.executions],
      kills: [],
      outageShadowMs: 500,
      replicaOf: () => 0,
      origin: 0
    })
    assert.strictEqual(verdict.completed, 1)
    assert.strictEqual(verdict.exact, 0)
    assert.strictEqual(verdict.failed, 1)
    assert.strictEqual(verdict.unfinished, 2)
    assert.match(verdict.violations.join("\n"), /chaos-1 \(r1\): result .* expected/)
    assert.match(verdict.violations.join("\n"), /chaos-2 \(r2\): failed: .*boom/)
    assert.match(verdict.violations.join("\n"), /chaos-3: never started/)
    assert.match(verdict.violations.join("\n"), /chaos-4 \(r4\): started but not in the database/)
  })

  it("reports a task completed twice and an execution whose attempt the database lost", () => {
    const run = completedRun(0)
    const verdict = judge({
      ...run,
      records: {
        ...run.records,
        tasks: run.records.tasks.map((t) => (t.name === third ? { ...t, completions: 2 } : t)),
        attempts: run.records.attempts.filter((a) => a.name !== first)
      }
    })
    assert.strictEqual(verdict.tasksCompletedTwice, 1)
    assert.match(verdict.violations.join("\n"), /task add-three of run r0: completed 2 times/)
    assert.match(verdict.violations.join("\n"), /add-one of run r0: attempt 1 on w1 .* the database has no such attempt and no kill/)
  })

  it("justifies a repeat when the worker running it was SIGKILLed while it was in flight", () => {
    const verdict = judge(repeated(), [{ kind: "worker", target: "w1", at: 1_200, back: 1_200 }])
    assert.deepStrictEqual(verdict.violations, [])
    assert.strictEqual(verdict.reExecutions, 1)
    assert.strictEqual(verdict.justified.worker, 1)
  })

  it("does not justify a repeat by the kill of another worker, a kill before it started, or a Redis restart", () => {
    const verdict = judge(repeated(), [
      { kind: "worker", target: "w2", at: 1_200, back: 1_200 },
      { kind: "worker", target: "w1", at: 1_050, back: 1_050 },
      { kind: "redis", target: "redis", at: 1_000, back: 6_000 }
    ])
    assert.strictEqual(verdict.unjustified, 1)
    assert.match(verdict.violations.join("\n"), /attempt 1 on w1 .* ran again as attempt 2 on w2 .* no kill explains it/)
  })

  it("does not justify repeating an attempt that had completed, whatever was killed afterwards", () => {
    const run = repeated()
    const verdict = judge({
      ...run,
      records: {
        ...run.records,
        attempts: run.records.attempts.map((a) =>
          a.name === second && a.attempt === 1 ? { ...a, finishedAt: 1_150, error: null } : a
        )
      }
    }, [{ kind: "worker", target: "w1", at: 1_200, back: 1_200 }])
    assert.strictEqual(verdict.unjustified, 1)
  })

  it("justifies a repeat by an outage of its worker's server or of Postgres, up to the shadow after it", () => {
    const late = { kind: "server", target: "server-0", at: 4_000, back: 4_600 } as const
    assert.strictEqual(judge(repeated(), [late]).justified.server, 1)
    // Its worker talks to replica 1: the crash of replica 0 does not explain it.
    assert.strictEqual(judge(repeated(), [late], () => 1).unjustified, 1)
    assert.strictEqual(judge(repeated(), [{ kind: "postgres", target: "postgres", at: 500, back: 600 }]).justified.postgres, 1)
    // Over before the attempt started, shadow included.
    assert.strictEqual(judge(repeated(), [{ kind: "postgres", target: "postgres", at: 100, back: 500 }]).unjustified, 1)
  })

  it("names a lease that lapsed while its worker lived when nothing was killed", () => {
    const run = repeated()
    const verdict = judge({
      ...run,
      records: { ...run.records, expiries: [{ runId: "r0", workerId: "w1", at: 4_900, reason: "lease_expired" }] }
    })
    assert.match(verdict.violations.join("\n"), /took the run from w1 at 4\.900s, lease_expired, while it was alive/)
  })

  it("accepts an execution whose start never reached the server when its worker was killed, and its repeat", () => {
    // Attempt 1 ran on w1, which was killed before its start was sent; w2 ran attempt 1 again and completed it.
    const base = completedRun(0)
    const run = {
      ...base,
      executions: [...base.executions.map((e) => e.task === second ? { ...e, at: 1_080 } : e), {
        at: 3_000,
        runId: "r0",
        task: second,
        attempt: 1,
        workerId: "w2"
      }],
      records: {
        ...base.records,
        attempts: base.records.attempts.map((a) => a.name === second ? { ...a, startedAt: 3_000, finishedAt: 3_050 } : a)
      }
    }
    const verdict = judge(run, [{ kind: "worker", target: "w1", at: 1_100, back: 1_100 }])
    assert.deepStrictEqual(verdict.violations, [])
    assert.strictEqual(verdict.justified.worker, 1)
    // Without the kill, the repeat is a finding.
    assert.strictEqual(judge(run).unjustified, 1)
  })
})
