/**
 * `aiki schedules list | get | create | pause | resume | trigger | backfill | delete`: schedules that start runs
 * on a cron expression or an interval.
 */
import type { ScheduleId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { Json } from "@aiki/contract/Models"
import { OverlapPolicy, type Schedule, type ScheduleSpec } from "@aiki/contract/Schedules"
import { Console, DateTime, Duration, Effect, Option } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import * as Output from "../Output.ts"
import { client, withClient } from "../Root.ts"

class InvalidFlag extends Error {}

const scheduleId = Argument.String("id").pipe(Argument.withDescription("The schedule's id"))

const millis = (flag: string, text: string) =>
  Option.match(Duration.fromInput(text as Duration.Input), {
    onNone: () => Effect.fail(new InvalidFlag(`--${flag} is not a duration (e.g. "15 minutes"): ${text}`)),
    onSome: (duration) => Effect.succeed(Math.round(Duration.toMillis(duration)))
  })

const instant = (flag: string, text: string) =>
  Option.match(DateTime.make(text), {
    onNone: () => Effect.fail(new InvalidFlag(`--${flag} is not a date and time (e.g. 2025-01-31T00:00:00Z): ${text}`)),
    onSome: (at) => Effect.succeed(DateTime.toUtc(at))
  })

const describeSpec = (spec: ScheduleSpec) =>
  "everyMs" in spec
    ? `every ${Duration.format(Duration.millis(spec.everyMs))}`
    : `${spec.cron}${spec.timezone !== undefined ? ` (${spec.timezone})` : ""}`

const show = (schedule: Schedule) =>
  [
    `${Output.bold("Schedule")}   ${schedule.id}${schedule.declared ? Output.dim(" (declared by the workflow)") : ""}`,
    `${Output.bold("Workflow")}   ${schedule.workflowName}@${schedule.workflowVersion}`,
    `${Output.bold("Fires")}      ${describeSpec(schedule.spec)}, overlap ${schedule.overlap}${schedule.paused ? `, ${Output.state("paused")}` : ""}`,
    `${Output.bold("Next")}       ${schedule.nextFireTimes.slice(0, 3).map(Output.time).join(", ") || "-"}`,
    `${Output.bold("Skipped")}    ${schedule.skippedCount}`,
    `${Output.bold("Payload")}    ${JSON.stringify(schedule.payload)}`,
    ...(schedule.lastRuns.length > 0
      ? [
        "",
        Output.table(["RUN", "FOR", "STATE"], schedule.lastRuns.map((r) => [r.runId, Output.time(r.scheduledFor), Output.state(r.state)]))
      ]
      : [])
  ].join("\n")

const list = Command.make("list", {
  workflow: Flag.String("workflow").pipe(Flag.withDescription("Only the schedules of this workflow"), Flag.optional)
}, ({ workflow }) =>
  withClient((api, json) =>
    Effect.gen(function*() {
      const schedules = yield* api.schedules.list({
        query: Option.match(workflow, { onNone: () => ({}), onSome: (w) => ({ workflow: w as WorkflowName }) })
      })
      if (json) return yield* Output.json(schedules)
      if (schedules.length === 0) return yield* Console.log(Output.dim("No schedules"))
      yield* Console.log(Output.table(
        ["ID", "WORKFLOW", "FIRES", "NEXT", "SKIPPED", "STATE"],
        schedules.map((s) => [
          s.id,
          `${s.workflowName}@${s.workflowVersion}`,
          describeSpec(s.spec),
          Output.time(s.nextFireTimes[0]),
          String(s.skippedCount),
          s.paused ? Output.state("paused") : Output.state("active")
        ])
      ))
    })
  )).pipe(Command.withDescription("List schedules with their next fire time"))

const get = Command.make("get", { id: scheduleId }, ({ id }) =>
  withClient((api, json) =>
    Effect.map(api.schedules.get({ params: { id: id as ScheduleId } }), (s) => json ? Output.json(s) : Console.log(show(s)))
      .pipe(Effect.flatten)
  )).pipe(Command.withDescription("Show a schedule: its next fire times, its latest runs, what it skipped"))

const create = Command.make("create", {
  name: Argument.String("name").pipe(Argument.withDescription("The workflow's name")),
  version: Argument.String("version").pipe(Argument.withDescription("The version its runs run, e.g. 1.0.0")),
  id: Flag.String("id").pipe(Flag.withDescription("The schedule's id (default: a new one)"), Flag.optional),
  cron: Flag.String("cron").pipe(Flag.withDescription("A cron expression, e.g. \"0 9 * * MON-FRI\""), Flag.optional),
  timezone: Flag.String("timezone").pipe(Flag.withDescription("The cron's time zone (default UTC)"), Flag.optional),
  every: Flag.String("every").pipe(Flag.withDescription("An interval instead of a cron, e.g. \"15 minutes\""), Flag.optional),
  payload: Flag.String("payload").pipe(Flag.withDescription("The runs' payload as JSON"), Flag.withDefault("null")),
  overlap: Flag.Literals("overlap", OverlapPolicy.literals).pipe(
    Flag.withDescription("While the previous run still goes (default skip)"),
    Flag.optional
  ),
  catchUpWindow: Flag.String("catch-up-window").pipe(
    Flag.withDescription("Fire times missed longer ago are skipped (default \"1 minute\")"),
    Flag.optional
  ),
  jitter: Flag.String("jitter").pipe(Flag.withDescription("Start each fire time up to this much later"), Flag.optional),
  paused: Flag.Boolean("paused").pipe(Flag.withDescription("Create it paused"), Flag.withDefault(false))
}, (flags) =>
  withClient((api, json) =>
    Effect.gen(function*() {
      const spec: ScheduleSpec = Option.isSome(flags.every)
        ? { everyMs: yield* millis("every", flags.every.value) }
        : Option.isSome(flags.cron)
        ? { cron: flags.cron.value, ...Option.match(flags.timezone, { onNone: () => ({}), onSome: (timezone) => ({ timezone }) }) }
        : yield* Effect.fail(new InvalidFlag("give --cron or --every"))
      const payload = yield* Effect.try({
        try: () => JSON.parse(flags.payload) as Json,
        catch: (error) => new InvalidFlag(`--payload is not valid JSON: ${error instanceof Error ? error.message : String(error)}`)
      })
      const schedule = yield* api.schedules.create({
        payload: {
          workflowName: flags.name as WorkflowName,
          workflowVersion: flags.version as WorkflowVersion,
          spec,
          payload,
          paused: flags.paused,
          ...Option.match(flags.id, { onNone: () => ({}), onSome: (id) => ({ id: id as ScheduleId }) }),
          ...Option.match(flags.overlap, { onNone: () => ({}), onSome: (overlap) => ({ overlap }) }),
          ...(Option.isSome(flags.catchUpWindow) ? { catchUpWindowMs: yield* millis("catch-up-window", flags.catchUpWindow.value) } : {}),
          ...(Option.isSome(flags.jitter) ? { jitterMs: yield* millis("jitter", flags.jitter.value) } : {})
        }
      })
      yield* json ? Output.json(schedule) : Console.log(show(schedule))
    })
  )).pipe(Command.withDescription("Create a schedule starting runs of a workflow version"))

/** A command acting on one schedule and showing it as it now is. */
const act = (name: string, description: string, action: (api: Effect.Success<typeof client>, id: ScheduleId) => Effect.Effect<Schedule, unknown>) =>
  Command.make(name, { id: scheduleId }, ({ id }) =>
    withClient((api, json) =>
      Effect.flatMap(action(api, id as ScheduleId), (s) => json ? Output.json(s) : Console.log(show(s)))
    )).pipe(Command.withDescription(description))

const pause = act("pause", "Stop starting runs until resumed", (api, id) => api.schedules.pause({ params: { id } }))
const resume = act(
  "resume",
  "Start runs again from the next fire time (missed ones are not caught up)",
  (api, id) => api.schedules.resume({ params: { id } })
)

const trigger = Command.make("trigger", { id: scheduleId }, ({ id }) =>
  withClient((api, json) =>
    Effect.gen(function*() {
      const run = yield* api.schedules.trigger({ params: { id: id as ScheduleId } })
      yield* json ? Output.json(run) : Console.log(`Started run ${run.id}`)
    })
  )).pipe(Command.withDescription("Start a run now"))

const backfill = Command.make("backfill", {
  id: scheduleId,
  from: Flag.String("from").pipe(Flag.withDescription("The first fire time's earliest instant (ISO 8601)")),
  to: Flag.String("to").pipe(Flag.withDescription("The end of the range, excluded (ISO 8601)"))
}, (flags) =>
  withClient((api, json) =>
    Effect.gen(function*() {
      const result = yield* api.schedules.backfill({
        params: { id: flags.id as ScheduleId },
        payload: { from: yield* instant("from", flags.from), to: yield* instant("to", flags.to) }
      })
      yield* json
        ? Output.json(result)
        : Console.log(`${result.fireTimes} fire times: ${result.started} runs started, ${result.fireTimes - result.started} had one`)
    })
  )).pipe(Command.withDescription("Start the runs of the fire times in a past range that have none (at most 1,000)"))

const remove = Command.make("delete", { id: scheduleId }, ({ id }) =>
  withClient((api, json) =>
    Effect.gen(function*() {
      yield* api.schedules.delete({ params: { id: id as ScheduleId } })
      yield* json ? Output.json({ deleted: id }) : Console.log(`Deleted schedule ${id} (its runs stay)`)
    })
  )).pipe(Command.withDescription("Delete a schedule; the runs it started stay"))

export const schedules = Command.make("schedules").pipe(
  Command.withDescription("Cron and interval schedules that start runs"),
  Command.withSubcommands([list, get, create, pause, resume, trigger, backfill, remove])
)
