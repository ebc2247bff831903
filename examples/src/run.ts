/**
 * `pnpm example NAME`: starts a worker for the examples and one run of NAME against the Aiki server at
 * `AIKI_URL` (default http://localhost:9090; `AIKI_API_KEY`, and `REDIS_URL` for Redis Streams), prints each task
 * as it progresses and the result, then stops the worker.
 */
import { client, worker } from "@aiki/sdk"
import { AikiClient, Worker } from "@aiki/sdk/effect"
import { Effect, Fiber, Layer, Stream } from "effect"
import { effectWorkflows, examples, promiseWorkflows } from "./catalog.ts"

const name = process.argv[2]
const example = examples.find((e) => e.name === name)
if (example === undefined) {
  process.stderr.write(
    `usage: pnpm example NAME\n\n${examples.map((e) => `  ${e.name.padEnd(26)}${e.description}`).join("\n")}\n`
  )
  process.exit(2)
}

const redisUrl = process.env["REDIS_URL"]
const aiki = await client({
  baseUrl: process.env["AIKI_URL"] ?? "http://localhost:9090",
  ...(process.env["AIKI_API_KEY"] !== undefined ? { apiKey: process.env["AIKI_API_KEY"] } : {}),
  ...(redisUrl !== undefined ? { redis: { url: redisUrl } } : {})
})

const w = await worker(aiki, { id: `example-${process.pid}`, maxConcurrentWorkflowRuns: 10 })
for (const workflow of promiseWorkflows) w.workflowRegistry.add(workflow)
const running = w.start()
// Effect workflows run on an Effect worker over the same client.
const effectWorker = aiki.runtime.runFork(
  Layer.launch(Worker.layer({ id: `example-effect-${process.pid}`, workflows: effectWorkflows }))
)

try {
  const handle = await example.start(aiki)
  console.log(`Started ${example.name} run ${handle.id}`)
  // Follow the run's tasks live while waiting for it.
  const progress = aiki.runtime.runFork(
    Effect.flatMap(AikiClient, (a) =>
      Stream.runForEach(a.api.runs.events({ params: { id: handle.id as never }, query: {} }).pipe(Stream.unwrap), (update) =>
        Effect.sync(() => {
          if (update._tag === "Task") {
            const attempt = update.task.attempts.length
            console.log(`  ${update.task.name.padEnd(22)} ${update.task.state}${attempt > 1 ? ` (attempt ${attempt})` : ""}`)
          } else console.log(`  run: ${update.run.state}`)
        })))
  )
  const result = await handle.waitForCompletion({ timeoutMs: 60_000 })
  await aiki.runtime.runPromise(Fiber.await(progress))
  console.log("Result:", JSON.stringify(result, null, 2))
} catch (error) {
  console.error(`The run did not complete: ${error instanceof Error ? error.message : String(error)}`)
  process.exitCode = 1
} finally {
  await w.stop()
  await running
  await aiki.runtime.runPromise(Fiber.interrupt(effectWorker))
  await aiki.close()
}
