/**
 * A chaos worker process, configured by its environment: `AIKI_URL`, `REDIS_URL` (absent: the HTTP subscriber),
 * `WORKER_ID`, `MAX_RUNS`, `HEARTBEAT_MS`, `CLAIM_MIN_IDLE_MS`, and for the tasks `SIDE_EFFECTS_FILE` and
 * `TASK_MS`. The harness kills it with SIGKILL; SIGTERM stops it gracefully.
 */
import { client, worker } from "@aiki/sdk"
import { chaosThreeSteps } from "./ChaosWorkflow.ts"

const env = (name: string) => {
  const value = process.env[name]
  if (value === undefined) throw new Error(`${name} is required`)
  return value
}
const redisUrl = process.env["REDIS_URL"]

const aiki = await client({ baseUrl: env("AIKI_URL"), ...(redisUrl !== undefined ? { redis: { url: redisUrl } } : {}) })
const w = await worker(aiki, {
  id: env("WORKER_ID"),
  maxConcurrentWorkflowRuns: Number(env("MAX_RUNS")),
  subscriber: redisUrl !== undefined
    ? { type: "redis_streams", claimMinIdleTimeMs: Number(env("CLAIM_MIN_IDLE_MS")), blockTimeMs: 500 }
    : { type: "http", blockTimeMs: 2_000 },
  workflowRun: { heartbeatIntervalMs: Number(env("HEARTBEAT_MS")) },
  gracefulShutdownTimeoutMs: 2_000
})
w.workflowRegistry.add(chaosThreeSteps)
process.once("SIGTERM", () => void w.stop())
await w.start()
await aiki.close()
