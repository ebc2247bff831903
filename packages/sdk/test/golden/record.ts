/**
 * Records the golden journals: runs each fixture workflow of `fixtures/golden.ts` on a real server and worker and
 * writes its run and journal to `golden/<workflow>.json`. Not part of the test suite; run it only to add a golden
 * file (never to refresh one: a golden journal is a record of the past that today's code must keep replaying).
 *
 *   GOLDEN_DELAY_SCALE=1 node packages/sdk/test/golden/record.ts [workflow-name…]
 */
import { Effect, Layer, Schema } from "effect"
import { writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Task, WorkflowRun } from "@aiki/contract/Models"
import { AikiClient } from "../../src/AikiClient.ts"
import * as Worker from "../../src/Worker.ts"
import * as Fixtures from "../fixtures/golden.ts"
import * as AikiServer from "../support/AikiServer.ts"

const payloads: Record<string, unknown> = {
  "golden-parallel-chains": "order-7",
  "golden-race": "order-8",
  "golden-effect-chains": "order-9",
  "golden-non-error-throws": null,
  "golden-sequential": "order-10",
  "golden-patch-and-timeout": "order-11",
  "golden-children": "order-11"
}

const wanted = process.argv.slice(2)
const program = Effect.gen(function*() {
  const aiki = yield* AikiClient
  for (const workflow of Fixtures.all) {
    if (wanted.length > 0 && !wanted.includes(workflow.name)) continue
    const handle = yield* aiki.start(workflow as never, payloads[workflow.name] as never)
    yield* handle.result({ timeoutMs: 30_000 }).pipe(Effect.ignore)
    const run = yield* aiki.api.runs.status({ params: { id: handle.id } })
    const journal = yield* aiki.api.runs.tasks({ params: { id: handle.id } })
    const file = fileURLToPath(new URL(`./${workflow.name}.json`, import.meta.url))
    const golden = {
      recordedWith: "@aiki/sdk replay semantics version " + (run.replayVersion ?? "?"),
      run: Schema.encodeSync(WorkflowRun)(run),
      journal: Schema.encodeSync(Schema.Array(Task))(journal)
    }
    writeFileSync(file, `${JSON.stringify(golden, null, 2)}\n`)
    console.log(`${workflow.name}: ${run.state} → ${file}`)
  }
})

const Live = Layer.unwrap(Effect.gen(function*() {
  const server = yield* AikiServer.make()
  const client = AikiClient.layer({ baseUrl: server.baseUrl, redis: { url: AikiServer.redisUrl } })
  return Worker.layer({ id: "golden-recorder", workflows: [...Fixtures.all, ...Fixtures.childWorkflows], subscriber: { type: "redis_streams", blockTimeMs: 100 } })
    .pipe(Layer.provideMerge(client))
}))

await Effect.runPromise(program.pipe(Effect.provide(Live), Effect.scoped))
