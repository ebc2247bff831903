/**
 * `aiki server` (production, configured from the environment), `aiki migrate`, and `aiki dev`: the embedded dev
 * mode — the real server on PGlite (no Postgres, no Redis, no configuration) and a real worker serving the
 * workflows of a module, in one process.
 */
import * as Database from "@aiki/server/Database"
import * as Server from "@aiki/server/Server"
import { ServerConfig } from "@aiki/server/ServerConfig"
import { AikiClient, Worker } from "@aiki/sdk/effect"
import { Console, Effect, Layer, Option, Redacted } from "effect"
import { Command, Flag } from "effect/cli"
import { resolve } from "node:path"
import * as Output from "../Output.ts"
import * as WorkflowModule from "../WorkflowModule.ts"

/** One line for a bad configuration, as `aiki-server` does. */
const configError = (error: { readonly message: string }) =>
  Effect.sync(() => {
    process.stderr.write(`aiki: invalid configuration: ${error.message.replace(/\s+/g, " ")}\n`)
    process.exitCode = 1
  })

const server = Command.make("server", {}, () =>
  Layer.launch(Server.layerFromEnv).pipe(
    Effect.catchTag("ConfigError", configError)
  )).pipe(Command.withDescription("Run the Aiki server, configured from the environment (PORT, DATABASE_URL, …)"))

const migrate = Command.make("migrate", {}, () =>
  Effect.gen(function*() {
    const applied = yield* Database.migrate
    yield* Console.log(applied.length === 0 ? "Database is up to date" : `Applied ${applied.map(([id, name]) => `${id}_${name}`).join(", ")}`)
  }).pipe(
    Effect.provide(Database.layerPool.pipe(Layer.provide(ServerConfig.layerConfigForMigrations))),
    Effect.catchTag("ConfigError", configError)
  )).pipe(Command.withDescription("Apply pending database migrations (DATABASE_URL) and exit"))

const dev = Command.make("dev", {
  port: Flag.Int("port").pipe(Flag.withDescription("HTTP port"), Flag.withDefault(9090)),
  dataDir: Flag.String("data-dir").pipe(Flag.withDescription("Where runs are kept between restarts"), Flag.withDefault(".aiki")),
  memory: Flag.Boolean("memory").pipe(Flag.withDescription("Keep nothing: a throwaway in-memory store"), Flag.withDefault(false)),
  workflows: Flag.String("workflows").pipe(
    Flag.withDescription("A module exporting `workflows` to serve with a worker in the same process"),
    Flag.optional
  )
}, (flags) =>
  Effect.gen(function*() {
    const served = Option.isSome(flags.workflows) ? yield* WorkflowModule.load(flags.workflows.value) : []
    const dataDir = flags.memory ? undefined : resolve(flags.dataDir, "pgdata")
    const baseUrl = `http://localhost:${flags.port}`
    const config = ServerConfig.layer({
      port: flags.port,
      host: "127.0.0.1",
      databaseUrl: Redacted.make(dataDir === undefined ? "pglite://memory" : `pglite://${dataDir}`),
      reaperIntervalMs: 1_000,
      // The dev mode listens on 127.0.0.1 only and needs no setup: no keys, deliberately.
      authOff: true
    })
    const serverLayer = Server.layerEmbedded({ dataDir }).pipe(Layer.provide(config))
    // The worker stands on the server, so it starts after it and stops (handing its runs back) before it.
    // Workflows loaded from a module cannot ask for services the CLI does not have: they run on WorkflowRun alone.
    const worker = Worker.layer({
      id: "aiki-dev",
      workflows: served,
      subscriber: { type: "http", blockTimeMs: 20_000 },
      workflowRun: { heartbeatIntervalMs: 5_000 },
      gracefulShutdownTimeoutMs: 2_000
    }) as Layer.Layer<never, never, AikiClient>
    const workerLayer = served.length === 0 ? Layer.empty : worker.pipe(Layer.provide(AikiClient.layer({ baseUrl })))
    // The commands suggested below reach this server as they are typed only on the default port.
    const url = flags.port === 9090 ? "" : ` --url ${baseUrl}`
    const banner = Layer.effectDiscard(Console.log([
      "",
      `${Output.bold("Aiki dev server")}  ${baseUrl}   (open it for the dashboard; API docs ${baseUrl}/docs)`,
      `${Output.bold("Storage")}          ${dataDir ?? "in memory (--memory): nothing is kept"}`,
      `${Output.bold("Worker")}           ${served.length === 0 ? "none (--workflows MODULE serves a module's workflows)" : served.map((w) => `${w.name}@${w.version}`).join(", ")}`,
      "",
      "Try, in another terminal:",
      `  pnpm aiki${url} workflows start order-processing 1.0.0 --wait --payload '{"orderId":"o-1","email":"you@example.com","items":[{"sku":"a","quantity":1,"price":9.5}]}'`,
      `  pnpm aiki${url} runs list --workflow order-processing`,
      "",
      "Ctrl-C stops everything.",
      ""
    ].join("\n")))
    yield* Layer.launch(Layer.mergeAll(workerLayer, banner).pipe(Layer.provideMerge(serverLayer)))
  })).pipe(Command.withDescription("Run Aiki with no setup: the server on embedded Postgres, and a worker for --workflows"))

export const commands = [server, migrate, dev] as const
