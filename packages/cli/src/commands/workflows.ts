/**
 * `aiki workflows start NAME VERSION --payload JSON`: start a run (and with `--wait`, follow it to its end).
 */
import type { IdempotencyKey, RunId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { Json } from "@aiki/contract/Models"
import { Console, Effect, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as Output from "../Output.ts"
import { client, settings } from "../Root.ts"
import { follow } from "./runs.ts"

class InvalidPayload extends Error {}

const parsePayload = (text: string) =>
  Effect.try({
    try: () => JSON.parse(text) as Json,
    catch: (error) => new InvalidPayload(`--payload is not valid JSON: ${error instanceof Error ? error.message : String(error)}`)
  })

const start = Command.make("start", {
  name: Argument.String("name").pipe(Argument.withDescription("The workflow's name")),
  version: Argument.String("version").pipe(Argument.withDescription("The version to run, e.g. 1.0.0")),
  payload: Flag.String("payload").pipe(Flag.withDescription("The run's payload as JSON"), Flag.withDefault("null")),
  idempotencyKey: Flag.String("idempotency-key").pipe(
    Flag.withDescription("Starting again with this key and payload returns the same run"),
    Flag.optional
  ),
  wait: Flag.Boolean("wait").pipe(Flag.withDescription("Follow the run until it finishes"), Flag.withDefault(false)),
  priority: Flag.Int("priority").pipe(Flag.withDescription("1 (lowest) to 10 (highest); default the version's"), Flag.optional),
  concurrencyKey: Flag.String("concurrency-key").pipe(
    Flag.withDescription("Runs with this key share the version's concurrency limit"),
    Flag.optional
  ),
  orderingKey: Flag.String("ordering-key").pipe(
    Flag.withDescription("Runs with this key run one at a time, in start order"),
    Flag.optional
  ),
  timeout: Flag.Int("timeout").pipe(
    Flag.withDescription("Execution timeout in ms: the run fails (timed_out) if not finished by then; default the version's"),
    Flag.optional
  ),
  scheduleToStartTimeout: Flag.Int("schedule-to-start-timeout").pipe(
    Flag.withDescription("The run fails (schedule_to_start_timed_out) if no worker claimed it within this many ms"),
    Flag.optional
  )
}, (flags) =>
  Effect.gen(function*() {
    const { json, url } = yield* settings
    let started: RunId | undefined
    yield* Output.guard(url, Effect.gen(function*() {
      const payload = yield* parsePayload(flags.payload)
      const api = yield* client
      const run = yield* api.workflows.start({
        params: { name: flags.name as WorkflowName, version: flags.version as WorkflowVersion },
        payload: {
          payload,
          ...Option.match(flags.idempotencyKey, { onNone: () => ({}), onSome: (k) => ({ idempotencyKey: k as IdempotencyKey }) }),
          ...Option.match(flags.priority, { onNone: () => ({}), onSome: (priority) => ({ priority }) }),
          ...Option.match(flags.concurrencyKey, { onNone: () => ({}), onSome: (concurrencyKey) => ({ concurrencyKey }) }),
          ...Option.match(flags.orderingKey, { onNone: () => ({}), onSome: (orderingKey) => ({ orderingKey }) }),
          ...Option.match(flags.timeout, { onNone: () => ({}), onSome: (executionTimeoutMs) => ({ executionTimeoutMs }) }),
          ...Option.match(flags.scheduleToStartTimeout, {
            onNone: () => ({}),
            onSome: (scheduleToStartTimeoutMs) => ({ scheduleToStartTimeoutMs })
          })
        }
      })
      started = run.id
      // With --wait the run is printed once it ends (--json) or drawn live with its id (a terminal); in a pipe or a
      // log the id would otherwise only show at the end, if at all.
      if (!flags.wait || (!json && process.stdout.isTTY !== true)) {
        yield* json ? Output.json(run) : Console.log(`Started run ${run.id} (${run.created ? "new" : "existing"}, ${run.state})`)
        if (!json && run.warning !== undefined) yield* Console.error(Output.yellow(`warning: ${run.warning}`))
      }
    }))
    if (flags.wait && started !== undefined) yield* follow(started)
  })).pipe(Command.withDescription("Start a run of a workflow version"))

const list = Command.make("list", {}, () =>
  Effect.gen(function*() {
    const { json, url } = yield* settings
    yield* Output.guard(url, Effect.gen(function*() {
      const api = yield* client
      const known = yield* api.workflows.list()
      if (json) return yield* Output.json(known)
      if (known.length === 0) return yield* Console.log(Output.dim("No worker has registered a workflow yet"))
      yield* Console.log(Output.table(
        ["NAME", "VERSION", "LAST REGISTERED"],
        known.map((w) => [w.name, w.version, Output.time(w.lastRegisteredAt)])
      ))
    }))
  })).pipe(Command.withDescription("List the workflow versions workers have registered"))

export const workflows = Command.make("workflows").pipe(
  Command.withDescription("List workflow versions and start runs"),
  Command.withSubcommands([list, start])
)
