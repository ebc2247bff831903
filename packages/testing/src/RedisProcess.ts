/**
 * A Redis server of the test's own, on a free port, that the test may stop and start again for real (the shared
 * Redis must stay up for the other test files). It keeps nothing on disk, so a restart comes back empty. It can
 * serve TLS only and require an ACL user, as operators run Redis.
 */
import { Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import { Redis } from "ioredis"
import * as CrashableProcess from "./CrashableProcess.ts"
import { freePort } from "./freePort.ts"
import type { SelfSignedCertificate } from "./SelfSignedCertificate.ts"

/** How a test client reaches a Redis of its own. */
export interface ClientOptions {
  readonly host: string
  readonly port: number
  readonly tls?: { readonly ca: Buffer }
  readonly username?: string
  readonly password?: string
}

/** Waits until a client with `options` gets an answer to PING (or `child`, when given, exits). */
export const waitUntilUp = (options: ClientOptions, child?: ChildProcess) =>
  Effect.promise(async () => {
    for (let i = 0; i < 100; i++) {
      if (child !== undefined && child.exitCode !== null) {
        throw new Error(`redis-server on port ${options.port} exited with code ${child.exitCode}`)
      }
      const client = new Redis({ ...options, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
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
    throw new Error(`redis-server on port ${options.port} did not start`)
  })

/** `stop` kills the server (SIGKILL: nothing is flushed, like a crash); `start` brings it back on the same port, empty. */
export interface RedisProcess extends CrashableProcess.CrashableProcess {
  readonly url: string
  readonly port: number
}

export interface RedisProcessOptions {
  /** Serve TLS only (no plain port) with this certificate; clients must trust it. */
  readonly tls?: SelfSignedCertificate
  /** An ACL user (with every permission) that clients must log in as; the default user is disabled. */
  readonly user?: { readonly name: string; readonly password: string }
  /** More `redis-server` arguments. */
  readonly args?: ReadonlyArray<string>
}

/** Starts a private redis-server for the current scope. */
export const makeWith = (options: RedisProcessOptions) =>
  Effect.gen(function*() {
    const port = yield* Effect.promise(freePort)
    const { tls, user } = options
    const args = [
      "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
      ...(tls === undefined
        ? ["--port", String(port)]
        : ["--port", "0", "--tls-port", String(port), "--tls-cert-file", tls.certFile, "--tls-key-file", tls.keyFile,
          "--tls-ca-cert-file", tls.certFile, "--tls-auth-clients", "no"]),
      ...(user === undefined ? [] : ["--user", "default", "off", "--user", user.name, "on", `>${user.password}`, "~*", "&*", "+@all"]),
      ...(options.args ?? [])
    ]
    const client: ClientOptions = {
      host: "127.0.0.1",
      port,
      ...(tls === undefined ? {} : { tls: { ca: readFileSync(tls.certFile) } }),
      ...(user === undefined ? {} : { username: user.name, password: user.password })
    }
    const server = yield* CrashableProcess.make({
      spawn: () => spawn("redis-server", args, { stdio: "ignore" }),
      ready: (child) => waitUntilUp(client, child)
    })
    return { url: `${tls === undefined ? "redis" : "rediss"}://127.0.0.1:${port}`, port, ...server } satisfies RedisProcess
  })

/** Starts a private, plain redis-server for the current scope. */
export const make = makeWith({})
