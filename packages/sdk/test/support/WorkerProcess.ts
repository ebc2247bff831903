/**
 * Worker processes for the durability tests: the fixture worker (`fixtures/worker.ts`) in a child process that a
 * test can SIGKILL, SIGSTOP/SIGCONT (a zombie) or stop gracefully with SIGTERM.
 */
import { type Running, spawnNode } from "@aiki/testing/NodeProcess"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

const fixture = fileURLToPath(new URL("../fixtures/worker.ts", import.meta.url))

export const start = (env: Record<string, string>) => spawnNode(fixture, env)

export const signal = (worker: Running, name: NodeJS.Signals) => Effect.sync(() => worker.child.kill(name))

/** The side effects recorded so far, as `[runId, what, workerId]` lines. */
export const sideEffects = (file: string, runId: string): Array<Array<string>> => {
  let text = ""
  try {
    text = readFileSync(file, "utf8")
  } catch {
    return []
  }
  return text.split("\n").filter((line) => line.startsWith(`${runId} `)).map((line) => line.split(" ").slice(1))
}
