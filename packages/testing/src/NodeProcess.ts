/**
 * Programs as operators run them: a Node script in a child process, configured by its environment only, killed
 * when the test's scope closes.
 */
import { Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"

export interface Exited {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
}

export interface Running {
  readonly child: ChildProcess
  readonly output: () => string
  readonly exited: Promise<Exited>
}

/**
 * Starts `script` with `args` and exactly `env` (plus PATH), in `cwd` (default: this process's); the process is
 * killed when the scope closes.
 */
export const spawnNode = (
  script: string,
  env: Record<string, string>,
  args: ReadonlyArray<string> = [],
  options: { readonly cwd?: string } = {}
) =>
  Effect.acquireRelease(
    Effect.sync((): Running => {
      const child = spawn(process.execPath, [script, ...args], {
        env: { PATH: process.env["PATH"] ?? "", ...env },
        ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stdout = ""
      let stderr = ""
      child.stdout!.on("data", (chunk) => (stdout += chunk))
      child.stderr!.on("data", (chunk) => (stderr += chunk))
      const exited = new Promise<Exited>((resolve) =>
        child.once("exit", (code, signal) => resolve({ code, signal, stdout, stderr }))
      )
      return { child, exited, output: () => stdout + stderr }
    }),
    ({ child }) => Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
  )

/**
 * Waits until `url` answers 200 (the server is up), or the process exits, for a minute at most: a server started
 * from the TypeScript sources while the rest of the suite runs beside it on two cores once did not answer within
 * the 20 s this used to allow.
 */
export const waitForHealth = (url: string, running: Running, init: RequestInit = {}) =>
  Effect.promise(async () => {
    const deadline = Date.now() + 60_000
    while (Date.now() < deadline) {
      if (running.child.exitCode !== null) throw new Error(`server exited early:\n${running.output()}`)
      try {
        const response = await fetch(url, init)
        if (response.ok) return
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 100))
    }
    throw new Error(`server did not become healthy:\n${running.output()}`)
  })
