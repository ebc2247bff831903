/**
 * A worker serving every example's workflows until SIGTERM/SIGINT: `AIKI_URL`, `AIKI_API_KEY`, `REDIS_URL`
 * (absent: the HTTP subscriber), `WORKER_ID`. The docker-compose example worker runs this.
 */
import { client, worker } from "@aiki/sdk"
import { Worker } from "@aiki/sdk/effect"
import { Fiber, Layer } from "effect"
import { effectWorkflows, promiseWorkflows } from "./catalog.ts"

const redisUrl = process.env["REDIS_URL"]
const aiki = await client({
  baseUrl: process.env["AIKI_URL"] ?? "http://localhost:9090",
  ...(process.env["AIKI_API_KEY"] !== undefined ? { apiKey: process.env["AIKI_API_KEY"] } : {}),
  ...(redisUrl !== undefined ? { redis: { url: redisUrl } } : {})
})
const id = process.env["WORKER_ID"] ?? `examples-${process.pid}`
const w = await worker(aiki, { id })
for (const workflow of promiseWorkflows) w.workflowRegistry.add(workflow)
const effectWorker = aiki.runtime.runFork(Layer.launch(Worker.layer({ id: `${id}-effect`, workflows: effectWorkflows })))
const stop = () => {
  void w.stop()
  void aiki.runtime.runPromise(Fiber.interrupt(effectWorker))
}
process.once("SIGTERM", stop)
process.once("SIGINT", stop)
await w.start()
await aiki.runtime.runPromise(Fiber.await(effectWorker))
await aiki.close()
