/**
 * Values the server refuses to store for good end the run clearly and at once, instead of being retried forever:
 * a workflow result or a task result larger than `MAX_PAYLOAD_BYTES` fails the run (the task) with an error that
 * says what was too large, after a single claim.
 */
import { assert, layer } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { AikiClient } from "../src/AikiClient.ts"
import * as Task from "../src/Task.ts"
import * as Worker from "../src/Worker.ts"
import * as Workflow from "../src/Workflow.ts"
import * as AikiServer from "./support/AikiServer.ts"

const maxPayloadBytes = 64 * 1024
const huge = "x".repeat(maxPayloadBytes + 1_000)

/** Returns more than the server stores. */
const HugeResult = Workflow.make("limits-huge-result", "1.0.0", {
  payload: Schema.Null,
  success: Schema.String,
  run: () => Effect.succeed(huge)
})

const HugeTask = Task.make("huge-task", { payload: Schema.Null, success: Schema.String, run: () => Effect.succeed(huge) })

/** Its task returns more than the server stores; the workflow does not catch it. */
const HugeTaskResult = Workflow.make("limits-huge-task-result", "1.0.0", {
  payload: Schema.Null,
  success: Schema.String,
  run: () => HugeTask.start(null)
})

const TestLayer = Layer.unwrap(Effect.gen(function*() {
  const server = yield* AikiServer.make({ MAX_PAYLOAD_BYTES: String(maxPayloadBytes) })
  const client = AikiClient.layer({ baseUrl: server.baseUrl })
  const worker = Worker.layer({ id: "limits-worker", workflows: [HugeResult, HugeTaskResult], subscriber: { type: "http", blockTimeMs: 500 } })
  return worker.pipe(Layer.provideMerge(client))
}))

layer(TestLayer, { excludeTestServices: true, timeout: 60_000 })("limits", (it) => {
  it.effect("fails a run whose result is too large to store, saying so, after one claim", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const run = yield* aiki.start(HugeResult, null)
      const error = yield* run.result({ timeoutMs: 10_000 }).pipe(Effect.flip)
      assert.strictEqual(error._tag, "RunFailed")
      const status = yield* run.status
      assert.strictEqual(status.error?.name, "ResultTooLarge")
      assert.include(status.error?.message, `The result of run ${run.id} is ${huge.length + 2} bytes`)
      const trail = yield* aiki.api.runs.transitions({ params: { id: run.id } })
      assert.strictEqual(trail.filter((t) => t.toState === "running").length, 1)
    }))

  it.effect("fails a task whose result is too large to store for good (no retry), and the run with it", () =>
    Effect.gen(function*() {
      const aiki = yield* AikiClient
      const run = yield* aiki.start(HugeTaskResult, null)
      yield* run.result({ timeoutMs: 10_000 }).pipe(Effect.flip)
      const [task] = yield* aiki.api.runs.tasks({ params: { id: run.id } })
      assert.strictEqual(task!.state, "failed")
      assert.strictEqual(task!.attempts.length, 1)
      assert.strictEqual(task!.error?.name, "ResultTooLarge")
      assert.include(task!.error?.message, "The result of task huge-task is")
      const status = yield* run.status
      assert.strictEqual(status.state, "failed")
      assert.include(status.error?.message, "The result of task huge-task is")
    }))
})
