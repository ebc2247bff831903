/**
 * `aiki runs list | get | cancel | retry | reset | watch`: read and manage runs through the API.
 */
import type { EventName, RunId, TaskName, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { Json, RunUpdate, Task, WorkflowRun } from "@aiki/contract/Models"
import { RunState } from "@aiki/contract/RunState"
import { Console, Effect, Option, Stream } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as Output from "../Output.ts"
import { withClient } from "../Root.ts"

const runId = Argument.String("id").pipe(Argument.withDescription("The run's id"))

const list = Command.make("list", {
  workflow: Flag.String("workflow").pipe(Flag.withDescription("The workflow's name")),
  state: Flag.Literals("state", RunState.literals).pipe(Flag.withDescription("Only runs in this state"), Flag.optional),
  version: Flag.String("version").pipe(Flag.withDescription("Only runs of this version"), Flag.optional),
  limit: Flag.Int("limit").pipe(Flag.withDescription("Runs per page"), Flag.withDefault(20)),
  cursor: Flag.String("cursor").pipe(Flag.withDescription("The page after this cursor"), Flag.optional)
}, (flags) =>
  withClient((api, json) =>
    Effect.gen(function*() {
      const page = yield* api.workflows.runs({
        params: { name: flags.workflow as WorkflowName },
        query: {
          limit: flags.limit,
          ...Option.match(flags.state, { onNone: () => ({}), onSome: (state) => ({ state }) }),
          ...Option.match(flags.version, { onNone: () => ({}), onSome: (v) => ({ version: v as WorkflowVersion }) }),
          ...Option.match(flags.cursor, { onNone: () => ({}), onSome: (c) => ({ cursor: c as RunId }) })
        }
      })
      if (json) return yield* Output.json(page)
      if (page.runs.length === 0) return yield* Console.log(Output.dim(`No runs of ${flags.workflow}`))
      yield* Console.log(Output.table(
        ["ID", "VERSION", "STATE", "CREATED", "FINISHED"],
        page.runs.map((run) => [
          run.id,
          run.workflowVersion,
          `${Output.state(run.state)}${run.failureReason !== undefined ? ` (${run.failureReason})` : ""}`,
          Output.time(run.createdAt),
          Output.time(run.finishedAt)
        ])
      ))
      if (page.nextCursor !== undefined) yield* Console.log(Output.dim(`more: --cursor ${page.nextCursor}`))
    })
  )).pipe(Command.withDescription("List a workflow's runs, newest first"))

const get = Command.make("get", { id: runId }, ({ id }) =>
  withClient((api, json) =>
    Effect.gen(function*() {
      const run = yield* api.runs.status({ params: { id: id as RunId } })
      const tasks = yield* api.runs.tasks({ params: { id: run.id } })
      const children = yield* api.runs.children({ params: { id: run.id } })
      if (json) return yield* Output.json({ run, tasks, children })
      yield* Console.log(Output.runSummary(run))
      if (tasks.length > 0) {
        yield* Console.log(`\n${Output.table(["TASK", "STATE", "ATTEMPTS", "RESULT / ERROR"], Output.taskRows(tasks))}`)
      }
      if (children.length > 0) {
        yield* Console.log(`\n${Output.table(["CHILD", "WORKFLOW", "STATE", "CREATED"], Output.childRows(children))}`)
      }
    })
  )).pipe(Command.withDescription("Show a run with its tasks, its parent and its children"))

const cancel = Command.make("cancel", { id: runId }, ({ id }) =>
  withClient((api, json) =>
    Effect.gen(function*() {
      const run = yield* api.runs.cancel({ params: { id: id as RunId } })
      yield* json ? Output.json(run) : Console.log(`Run ${run.id} is ${Output.state(run.state)}`)
    })
  )).pipe(Command.withDescription("Cancel a run that has not finished"))

const retry = Command.make("retry", { id: runId }, ({ id }) =>
  withClient((api, json) =>
    Effect.gen(function*() {
      const run = yield* api.runs.retry({ params: { id: id as RunId } })
      yield* json ? Output.json(run) : Console.log(`Run ${run.id} is ${Output.state(run.state)} again (attempt ${run.attempt ?? 1})`)
    })
  )).pipe(Command.withDescription("Run a failed or cancelled run again: completed tasks are kept, the rest run again"))

const reset = Command.make("reset", {
  id: runId,
  sequence: Flag.Int("sequence").pipe(Flag.withDescription("The journal entry to go back to, by its sequence"), Flag.optional),
  task: Flag.String("task").pipe(Flag.withDescription("The task to go back to, by name"), Flag.optional),
  occurrence: Flag.Int("occurrence").pipe(Flag.withDescription("Which call of --task (0 the first)"), Flag.withDefault(0))
}, ({ id, occurrence, sequence, task }) =>
  withClient((api, json) =>
    Effect.gen(function*() {
      const to = Option.isSome(sequence)
        ? { sequence: sequence.value }
        : Option.isSome(task)
        ? { task: task.value as TaskName, occurrence }
        : {}
      const run = yield* api.runs.reset({ params: { id: id as RunId }, payload: to })
      yield* json ? Output.json(run) : Console.log(`Run ${run.id} is ${Output.state(run.state)} again from that entry (attempt ${run.attempt ?? 1})`)
    })
  )).pipe(Command.withDescription("Run a failed or cancelled run again from a task: it and every entry after it run again"))

const sendEvent = Command.make("send-event", {
  id: runId,
  name: Argument.String("name").pipe(Argument.withDescription("The event's name, as the workflow waits for it")),
  payload: Flag.String("payload").pipe(Flag.withDescription("The event's payload as JSON"), Flag.withDefault("null")),
  eventId: Flag.String("event-id").pipe(
    Flag.withDescription("The event's id: sending again with the same id stores nothing (idempotent)"),
    Flag.optional
  )
}, ({ eventId, id, name, payload }) =>
  withClient((api, json) =>
    Effect.gen(function*() {
      const parsed = yield* Effect.try({
        try: () => JSON.parse(payload) as Json,
        catch: (error) => new Error(`--payload is not valid JSON: ${error instanceof Error ? error.message : String(error)}`)
      })
      const sent = yield* api.runs.sendEvent({
        params: { id: id as RunId, name: name as EventName },
        payload: { payload: parsed, ...Option.match(eventId, { onNone: () => ({}), onSome: (eventId) => ({ eventId }) }) }
      })
      yield* json ? Output.json(sent) : Console.log(
        sent.duplicate === true
          ? `Event ${sent.eventId} was already sent to run ${id}: nothing new stored (run ${Output.state(sent.runState)})`
          : `Sent ${name} to run ${id} (now ${Output.state(sent.runState)})`
      )
    })
  )).pipe(Command.withDescription("Send an event to a run (for its waitForEvent)"))

/** Follows a run until it is final; prints its tasks as they change. Exit code 1 unless it completed. */
export const follow = (id: RunId) =>
  withClient((api, json) =>
    Effect.gen(function*() {
      const tasks = new Map<string, Task>()
      let run: WorkflowRun | undefined
      const live = process.stdout.isTTY === true && !json
      let drawn = 0
      const render = Effect.sync(() => {
        if (run === undefined) return
        const lines = [
          `${Output.bold(`${run.workflowName}@${run.workflowVersion}`)} ${run.id} ${Output.state(run.state)}`,
          ...[...tasks.values()].map((t) =>
            `  ${t.name.padEnd(24)} ${Output.state(t.state)}${t.attempts.length > 1 ? Output.dim(` attempt ${t.attempts.length}`) : ""}`
          )
        ]
        if (drawn > 0) process.stdout.write(`\u001b[${drawn}A\u001b[J`)
        process.stdout.write(`${lines.join("\n")}\n`)
        drawn = lines.length
      })
      const events = yield* api.runs.events({ params: { id }, query: {} })
      yield* events.pipe(
        Stream.runForEach((update: RunUpdate) =>
          Effect.gen(function*() {
            if (update._tag === "Run") run = update.run
            else tasks.set(update.task.address, update.task)
            if (json) return
            if (live) return yield* render
            yield* Console.log(
              update._tag === "Run"
                ? `run ${update.run.state}`
                : `task ${update.task.name} ${update.task.state}${update.task.attempts.length > 1 ? ` (attempt ${update.task.attempts.length})` : ""}`
            )
          })
        )
      )
      if (run === undefined) return
      if (json) yield* Output.json({ run, tasks: [...tasks.values()] })
      else if (run.result !== undefined) yield* Console.log(`${Output.bold("Result")} ${JSON.stringify(run.result)}`)
      else if (run.error !== undefined) yield* Console.log(`${Output.bold("Error")} ${run.error.name}: ${run.error.message}`)
      if (run.state !== "completed") process.exitCode = 1
    })
  )

const watch = Command.make("watch", { id: runId }, ({ id }) => follow(id as RunId)).pipe(
  Command.withDescription("Follow a run's tasks live until it finishes (exit 1 unless it completed)")
)

export const runs = Command.make("runs").pipe(
  Command.withDescription("List, inspect, follow, cancel, retry and reset runs"),
  Command.withSubcommands([list, get, cancel, retry, reset, watch, sendEvent])
)
