/**
 * A Redis server of the test's own, on a free port, that the test may stop and start again for real (the shared
 * Redis must stay up for the other test files). It keeps nothing on disk, so a restart comes back empty.
 */
import { Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { Redis } from "ioredis"
import { freePort } from "./freePort.ts"

const waitUntilUp = (port: number) =>
  Effect.promise(async () => {
    for (let i = 0; i < 100; i++) {
      const client = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
      client.on("error", () => {})
      try {
        await client.connect()
        await client.ping()
        client.disconnect()
        return
      } catch {
        client.disconnect()
        await new Promise((r) => setTimeout(r, 50))
      }
    }
    throw new Error(`redis-server on port ${port} did not start`)
  })

export interface RedisProcess {
  readonly url: string
  readonly port: number
  /** Kills the server (SIGKILL: nothing is flushed, like a crash). */
  readonly stop: Effect.Effect<void>
  /** Starts it again on the same port, empty. */
  readonly start: Effect.Effect<void>
}

/** Starts a private redis-server for the current scope. */
export const make = Effect.gen(function*() {
  const port = yield* Effect.promise(freePort)
  let child: ChildProcess | undefined
  const start = Effect.suspend(() => {
    child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: "ignore"
    })
    return waitUntilUp(port)
  })
  const stop = Effect.promise(() =>
    new Promise<void>((resolve) => {
      if (child === undefined || child.exitCode !== null) return resolve()
      child.once("exit", () => resolve())
      child.kill("SIGKILL")
    })
  )
  yield* Effect.acquireRelease(start, () => stop)
  return { url: `redis://127.0.0.1:${port}`, port, stop, start } satisfies RedisProcess
})
