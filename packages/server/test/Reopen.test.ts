/**
 * Retry and reset by hand through the API, at the protocol level (on Postgres and PGlite): a failed run reopened as
 * the same run with its journal, its workflow attempt counted; a reset moving entries from a point on to the
 * run's discarded history and releasing the events they received; workflow attempts a worker counts with
 * `BeginAttempt`; typed refusals.
 */
import type { AikiClient } from "@aiki/contract/Client"
import type { EventName, LeaseEpoch, RunId, TaskAddress, TaskName, WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { Write } from "@aiki/contract/Models"
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import * as TestServer from "./support/TestServer.ts"

const name = "reopened" as WorkflowName
const version = "1.0.0" as WorkflowVersion
const worker = "reopen-worker" as WorkerId

const grant = (api: AikiClient, id: RunId) =>
  api.execution.claim({ params: { id: worker }, payload: { runIds: [id], replayVersion: 2 } }).pipe(
    Effect.map((claims) => {
      assert.isDefined(claims.leases[0], `run ${id} was not granted: ${claims.refused[0]?.message}`)
      return claims.leases[0]!
    })
  )

const writeAll = (api: AikiClient, writes: ReadonlyArray<Write>) =>
  api.execution.write({ params: { id: worker }, payload: { writes } }).pipe(Effect.map((r) => r.results.map((w) => w._tag)))

const entry = (runId: RunId, leaseEpoch: LeaseEpoch, sequence: number, task: string, attempt = 1) => ({
  runId,
  leaseEpoch,
  address: `${task}:${sequence}:0` as TaskAddress,
  attempt
})

for (const database of ["postgres", "embedded"] as const) {
layer(TestServer.layer({ database }), { excludeTestServices: true })(`reopen (${database})`, (it) => {
  it.effect("retries a failed run as the same run, counts attempts, and resets it to an entry", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      yield* api.execution.register({ params: { id: worker }, payload: { workflows: [{ name, version }] } })
      const { id } = yield* api.workflows.start({ params: { name, version }, payload: { payload: {} } })
      yield* api.runs.sendEvent({ params: { id, name: "go" as EventName }, payload: { payload: { n: 1 } } })
      const first = yield* grant(api, id)
      const e = first.leaseEpoch
      const [a, wait, c] = [entry(id, e, 0, "a"), entry(id, e, 1, "aiki.event"), entry(id, e, 2, "c")]
      assert.deepStrictEqual(
        yield* writeAll(api, [
          { _tag: "StartTask", ...a, sequence: 0, name: "a" as TaskName, payload: null },
          { _tag: "FinishTask", ...a, elapsedMs: 1, outcome: { _tag: "Completed", result: "A" }, outcomeOrder: 0 },
          { _tag: "StartTask", ...wait, sequence: 1, name: "aiki.event" as TaskName, payload: { name: "go" } },
          { _tag: "ReceiveEvent", ...wait, name: "go" as EventName },
          { _tag: "StartTask", ...c, sequence: 2, name: "c" as TaskName, payload: null },
          { _tag: "FinishTask", ...c, elapsedMs: 1, outcome: { _tag: "Failed", error: { name: "Error", message: "c broke" } }, outcomeOrder: 1 },
          { _tag: "FailRun", runId: id, leaseEpoch: e, error: { name: "Error", message: "c broke" } }
        ]),
        ["Written", "Written", "Written", "EventReceived", "Written", "Written", "Written"]
      )

      const retried = yield* api.runs.retry({ params: { id } })
      assert.strictEqual(retried.state, "pending")
      assert.strictEqual(retried.attempt, 2)
      assert.strictEqual(retried.policyAttempt, 1)
      assert.isUndefined(retried.error)
      assert.isUndefined(retried.finishedAt)
      const refused = yield* api.runs.retry({ params: { id } }).pipe(Effect.flip)
      assert.strictEqual(refused._tag, "InvalidTransition")
      // A write of the lease that failed the run changes nothing now.
      assert.deepStrictEqual(yield* writeAll(api, [{ _tag: "FailRun", runId: id, leaseEpoch: e, error: { name: "E", message: "late" } }]), ["LeaseLost"])

      // The worker is given the journal as it was and the attempt; its policy's next attempt is counted on the run.
      const second = yield* grant(api, id)
      assert.strictEqual(second.journal.length, 3)
      assert.strictEqual(second.run.attempt, 2)
      const held = { runId: id, leaseEpoch: second.leaseEpoch }
      assert.deepStrictEqual(yield* writeAll(api, [{ _tag: "BeginAttempt", ...held, attempt: 2 }, { _tag: "BeginAttempt", ...held, attempt: 2 }]), ["Written", "Written"])
      const counted = yield* api.runs.status({ params: { id } })
      assert.deepStrictEqual([counted.attempt, counted.policyAttempt], [3, 2])
      yield* writeAll(api, [{ _tag: "FailRun", ...held, error: { name: "Error", message: "again" } }])

      // A reset to the event wait: it and what follows leave the journal for the run's history, and the event it
      // received waits for the wait made again.
      const missing = yield* api.runs.reset({ params: { id }, payload: { sequence: 9 } }).pipe(Effect.flip)
      assert.strictEqual(missing._tag, "InvalidRequest")
      if (missing._tag === "InvalidRequest") assert.deepStrictEqual(missing.issues[0]?.path, ["sequence"])
      const reset = yield* api.runs.reset({ params: { id }, payload: { task: "aiki.event" as TaskName } })
      assert.deepStrictEqual([reset.state, reset.attempt, reset.policyAttempt], ["pending", 4, 1])
      const tasks = yield* api.runs.tasks({ params: { id } })
      assert.deepStrictEqual(tasks.map((t) => [t.name, t.state]), [["a", "completed"]])
      const discarded = yield* api.runs.discarded({ params: { id } })
      assert.deepStrictEqual(discarded.map((d) => [d.reset, d.task.sequence, d.task.name, d.task.state, d.task.attempts.length]), [
        [1, 1, "aiki.event", "running", 1],
        [1, 2, "c", "failed", 1]
      ])
      const third = yield* grant(api, id)
      const again = entry(id, third.leaseEpoch, 1, "aiki.event")
      assert.deepStrictEqual(
        yield* writeAll(api, [
          { _tag: "StartTask", ...again, sequence: 1, name: "aiki.event" as TaskName, payload: { name: "go" } },
          { _tag: "ReceiveEvent", ...again, name: "go" as EventName }
        ]),
        ["Written", "EventReceived"]
      )
      const trail = yield* api.runs.transitions({ params: { id } })
      assert.deepStrictEqual(
        trail.filter((t) => t.taskAddress === undefined && t.toState === "pending").map((t) => `${t.fromState ?? ""}>${t.reason}`),
        [">started", "failed>retried", "failed>reset"]
      )
    }))

  it.effect("a reopened run's timeouts start again, as long as they were, and its failure reason is cleared", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const sql = yield* SqlClient.SqlClient
      const { id } = yield* api.workflows.start({
        params: { name, version },
        payload: { payload: {}, executionTimeoutMs: 60_000, scheduleToStartTimeoutMs: 30_000 }
      })
      yield* api.runs.cancel({ params: { id } })
      // As if it had been cancelled long after its deadlines passed, by the server.
      yield* sql`UPDATE workflow_runs SET created_at = created_at - interval '1 hour', deadline_at = deadline_at - interval '1 hour',
        start_deadline_at = start_deadline_at - interval '1 hour', failure_reason = 'timed_out' WHERE id = ${id}`
      const retried = yield* api.runs.retry({ params: { id } })
      assert.isUndefined(retried.failureReason)
      const now = Date.now()
      const inMs = (at: typeof retried.deadlineAt) => Number(at!.epochMilliseconds) - now
      assert.approximately(inMs(retried.deadlineAt), 60_000, 10_000)
      assert.approximately(inMs(retried.startDeadlineAt), 30_000, 10_000)
    }))
})
}
