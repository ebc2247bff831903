/**
 * The benchmark's worker process: concurrency 50, Redis Streams, otherwise the SDK's default settings (heartbeat,
 * lease, liveness, idle stream entries taken over). `WORKER_ID` names it; `WORKFLOW` is the one workflow
 * it serves, so that each phase's workers serve only what that phase measures. On SIGTERM it stops and prints its
 * peak RSS.
 */
import { client, worker } from "@aiki/sdk"
import { takeover, thousandTasks, threeNoops } from "./workflow.ts"

const workflows = { [threeNoops.name]: threeNoops, [thousandTasks.name]: thousandTasks, [takeover.name]: takeover }

let peakRss = process.memoryUsage.rss()
const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage.rss())), 50)
const aiki = await client({ baseUrl: process.env["AIKI_URL"]!, redis: { url: process.env["REDIS_URL"]! } })
const w = await worker(aiki, {
  id: process.env["WORKER_ID"] ?? "bench-worker",
  maxConcurrentWorkflowRuns: 50,
  subscriber: { type: "redis_streams", blockTimeMs: 1_000 }
})
w.workflowRegistry.add(workflows[process.env["WORKFLOW"] ?? threeNoops.name]!)
process.once("SIGTERM", () => void w.stop())
await w.start()
clearInterval(sampler)
await aiki.close()
process.stdout.write(`${JSON.stringify({ peakRssBytes: peakRss })}\n`)
