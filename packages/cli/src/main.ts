#!/usr/bin/env node
/**
 * `aiki`: the command line of Aiki. See `aiki --help`.
 */
import { version } from "@aiki/contract/Version"
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Effect, Exit, Runtime } from "effect"
import { Command } from "effect/cli"
import { replay } from "./commands/replay.ts"
import { runs } from "./commands/runs.ts"
import { schedules } from "./commands/schedules.ts"
import { commands as serverCommands } from "./commands/server.ts"
import { workflows } from "./commands/workflows.ts"
import { aiki } from "./Root.ts"

aiki.pipe(
  Command.withSubcommands([...serverCommands, runs, schedules, workflows, replay]),
  Command.run({ version }),
  Effect.provide(NodeServices.layer),
  (program) =>
    NodeRuntime.runMain(program, {
      // Ctrl-C or SIGTERM ends long-running commands (server, dev, watch) cleanly: exit 0 once they stopped.
      teardown: (exit, onExit) =>
        Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)
          ? onExit(Number(process.exitCode ?? 0))
          : Exit.isSuccess(exit)
          ? onExit(Number(process.exitCode ?? 0))
          : Runtime.defaultTeardown(exit, onExit)
    })
)
