/**
 * A server program of the test's own (Redis, Postgres) that the test may crash and start again. Crashing is
 * SIGKILL of the process and of the processes it forked, so nothing is flushed and nothing is left holding its
 * port or its shared memory: what a power cut does to that program, and nothing else.
 */
import { Effect } from "effect"
import type { ChildProcess } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"

export interface CrashableProcess {
  /** Kills the program and its children (SIGKILL: a crash) and waits until they are gone. */
  readonly stop: Effect.Effect<void>
  /** Starts it again and waits until it answers. */
  readonly start: Effect.Effect<void>
}

/**
 * The processes whose parent is `pid`, read before the parent dies and they are re-parented. Linux `/proc`;
 * elsewhere none are found, and children that outlive their parent must notice it themselves.
 */
const childrenOf = (pid: number): ReadonlyArray<number> => {
  const children: Array<number> = []
  let entries: ReadonlyArray<string> = []
  try {
    entries = readdirSync("/proc")
  } catch {
    return children
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8")
      // `pid (comm) state ppid …`; comm may contain spaces and parentheses, so read after the last one.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
      if (ppid === pid) children.push(Number(entry))
    } catch {
      // gone meanwhile
    }
  }
  return children
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

const crash = (child: ChildProcess) =>
  Effect.promise(async () => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
    const orphans = childrenOf(child.pid)
    child.kill("SIGKILL")
    for (const pid of orphans) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // already gone
      }
    }
    await exited
    // The orphans are not our children, so there is no exit event to wait for.
    while (orphans.some(alive)) await new Promise((r) => setTimeout(r, 10))
  })

/**
 * A program for the current scope: `spawn` starts it, `ready` waits until it answers (and fails if it exited).
 * Started now; crashed when the scope closes.
 */
export const make = (options: {
  readonly spawn: () => ChildProcess
  readonly ready: (child: ChildProcess) => Effect.Effect<void>
}) =>
  Effect.gen(function*() {
    let child: ChildProcess | undefined
    const start = Effect.suspend(() => {
      child = options.spawn()
      return options.ready(child)
    })
    const stop = Effect.suspend(() => (child === undefined ? Effect.void : crash(child)))
    // Crashed on close even when the first start fails half-way (a server that started but never answered).
    yield* Effect.addFinalizer(() => stop)
    yield* start
    return { start, stop } satisfies CrashableProcess
  })
