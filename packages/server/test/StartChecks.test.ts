/**
 * Starts checked before anything is written: a payload that violates the JSON Schema a worker registered for its
 * version is a 400 naming the field (one start, or one start of a batch), and a version no worker registered is
 * started but flagged, in the answer and in the run's status.
 */
import type { WorkerId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { InvalidRequest } from "@aiki/contract/Errors"
import { type Json, StartedRun } from "@aiki/contract/Models"
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import * as StartChecks from "../src/StartChecks.ts"
import * as TestServer from "./support/TestServer.ts"

const name = "checked-order" as WorkflowName
const version = "1.0.0" as WorkflowVersion

const payloadSchema = {
  type: "object",
  properties: {
    amount: { type: "number" },
    customer: { type: "object", properties: { email: { type: "string" } }, required: ["email"] }
  },
  required: ["amount", "customer"]
}

// The same behaviour on Postgres and on PGlite (the embedded mode runs the same migrations and SQL).
for (const database of ["postgres", "embedded"] as const) {
layer(TestServer.layer({ database }), { excludeTestServices: true })(`start checks (${database})`, (it) => {
  it.effect("a payload that violates the registered schema is a 400 naming the field, and nothing is written", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      yield* api.execution.register({ params: { id: "checker" as WorkerId }, payload: { workflows: [{ name, version, payloadSchema }] } })
      const start = (payload: unknown) => api.workflows.start({ params: { name, version }, payload: { payload: payload as never } })
      const wrongType = yield* start({ amount: "12", customer: { email: "a@b.c" } }).pipe(Effect.flip)
      assert.strictEqual(wrongType._tag, "InvalidRequest")
      if (wrongType._tag === "InvalidRequest") {
        assert.deepStrictEqual(wrongType.issues.map((i) => i.path), [["payload", "amount"]])
        assert.include(wrongType.message, "payload.amount")
      }
      const missing = yield* start({ amount: 12, customer: {} }).pipe(Effect.flip)
      assert.strictEqual(missing._tag, "InvalidRequest")
      if (missing._tag === "InvalidRequest") assert.deepStrictEqual(missing.issues.map((i) => i.path), [["payload", "customer", "email"]])
      assert.strictEqual((yield* api.workflows.runs({ params: { name }, query: {} })).runs.length, 0)

      const good = yield* start({ amount: 12, customer: { email: "a@b.c" } })
      assert.isTrue(good.created)
      assert.isUndefined(good.warning)
      assert.isUndefined((yield* api.runs.status({ params: { id: good.id } })).startWarning)

      // In a batch each start is answered on its own: the bad one refused, its neighbour started.
      const { results } = yield* api.workflows.startMany({
        payload: { runs: [
          { workflowName: name, workflowVersion: version, payload: { amount: 1 } },
          { workflowName: name, workflowVersion: version, payload: { amount: 2, customer: { email: "x@y.z" } } }
        ] }
      })
      assert.instanceOf(results[0], InvalidRequest)
      assert.deepStrictEqual((results[0] as InvalidRequest).issues.map((i) => i.path), [["payload", "customer"]])
      assert.instanceOf(results[1], StartedRun)
      assert.strictEqual((yield* api.workflows.runs({ params: { name }, query: {} })).runs.length, 2)

      // A schedule whose payload every fire would start is checked when it is created.
      const schedule = yield* api.schedules.create({
        payload: { workflowName: name, workflowVersion: version, spec: { everyMs: 60_000 }, payload: { amount: "no" } }
      }).pipe(Effect.flip)
      assert.strictEqual(schedule._tag, "InvalidRequest")
      if (schedule._tag === "InvalidRequest") assert.deepStrictEqual(schedule.issues.map((i) => i.path), [["payload", "amount"], ["payload", "customer"]])
      assert.strictEqual((yield* api.schedules.list({ query: {} })).length, 0)
    }))

  it.effect("a version no worker registered is started, flagged in the answer and in the run's status", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const started = yield* api.workflows.start({
        params: { name: "nope" as WorkflowName, version: "9.9.9" as WorkflowVersion },
        payload: { payload: {} }
      })
      assert.isTrue(started.created)
      assert.include(started.warning, "No worker had registered nope version 9.9.9")
      const run = yield* api.runs.status({ params: { id: started.id } })
      assert.strictEqual(run.state, "pending")
      assert.strictEqual(run.startWarning, started.warning)
      // A registered version is not flagged.
      const registered = yield* api.workflows.start({ params: { name, version }, payload: { payload: { amount: 1, customer: { email: "e" } } } })
      assert.isUndefined(registered.warning)
    }))

  it.effect("a registered version's schema is read once a second at most; a version registered at last is seen at once", () =>
    Effect.gen(function*() {
      const api = yield* (yield* TestServer.TestServer).client()
      const cached = "cached-schema" as WorkflowName
      const register = (payloadSchema: Json) =>
        api.execution.register({ params: { id: "checker" as WorkerId }, payload: { workflows: [{ name: cached, version, payloadSchema }] } })
      const start = { workflowName: cached, workflowVersion: version, payload: { amount: 1 } }
      const outcome = (checked: ReadonlyArray<StartChecks.Checked | InvalidRequest>) => {
        const [first] = checked
        return first instanceof InvalidRequest ? "refused" : first?.warning === undefined ? "accepted" : "warned"
      }
      yield* Effect.gen(function*() {
        const checks = yield* StartChecks.make
        assert.strictEqual(outcome(yield* checks.check([start])), "warned")
        // Not registered yet is read again every time: the registration counts at once.
        yield* register({ type: "object", properties: { amount: { type: "number" } } })
        assert.strictEqual(outcome(yield* checks.check([start])), "accepted")
        // A schema registered anew applies once the one read has aged a second, not before.
        yield* register({ type: "object", properties: { amount: { type: "string" } } })
        assert.strictEqual(outcome(yield* checks.check([start])), "accepted")
        yield* TestClock.adjust(StartChecks.schemaTtlMs - 1)
        assert.strictEqual(outcome(yield* checks.check([start])), "accepted")
        yield* TestClock.adjust(1)
        assert.strictEqual(outcome(yield* checks.check([start])), "refused")
      }).pipe(Effect.provide(TestClock.layer()))
    }))
})
}
