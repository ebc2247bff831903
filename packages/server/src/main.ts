#!/usr/bin/env node
/**
 * `aiki-server`: the Aiki server configured from the environment. SIGTERM/SIGINT close it gracefully.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Effect, Exit, Layer, Option, Runtime } from "effect"
import * as Server from "./Server.ts"
import { ServerConfig } from "./ServerConfig.ts"

const announce = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* ServerConfig
  if (config.authOff) {
    yield* Effect.logWarning("AUTH=off: authentication is OFF, every caller is an admin. Do not expose this server.")
  }
  if (Option.isNone(config.redisUrl) && config.redisConnection.clusterNodes.length === 0) {
    yield* Effect.logWarning(
      "No REDIS_URL or REDIS_CLUSTER_NODES configured: runs are not published to Redis Streams; workers must use HTTP."
    )
  }
}))

const main = Layer.launch(announce.pipe(Layer.provideMerge(Server.layerFromEnv))).pipe(
  Effect.catchTag("ConfigError", (error) =>
    Effect.sync(() => {
      process.stderr.write(`aiki-server: invalid configuration: ${error.message.replace(/\s+/g, " ")}\n`)
      process.exitCode = 1
    }))
)

NodeRuntime.runMain(main, {
  // SIGTERM/SIGINT interrupt the server; once it has shut down gracefully that is a clean exit, not an error.
  teardown: (exit, onExit) =>
    Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)
})
