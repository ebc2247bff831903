#!/usr/bin/env node
/**
 * `aiki-server migrate`: applies pending database migrations and exits (the server also applies them at start).
 */
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import * as Database from "./Database.ts"
import { ServerConfig } from "./ServerConfig.ts"

const main = Effect.gen(function*() {
  const applied = yield* Database.migrate
  yield* Effect.logInfo(
    applied.length === 0 ? "Database is up to date" : `Applied ${applied.map(([id, name]) => `${id}_${name}`).join(", ")}`
  )
}).pipe(
  Effect.provide(Database.layerPool.pipe(Layer.provide(ServerConfig.layerConfigForMigrations))),
  Effect.catchTag("ConfigError", (error) =>
    Effect.sync(() => {
      process.stderr.write(`aiki-server migrate: invalid configuration: ${error.message.replace(/\s+/g, " ")}\n`)
      process.exitCode = 1
    }))
)

NodeRuntime.runMain(main)
