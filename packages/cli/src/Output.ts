/**
 * How the CLI speaks: tables and colour for people (colour only on a terminal, never with `NO_COLOR`), one JSON
 * document for scripts (`--json`), and errors as one readable line on stderr with a non-zero exit code.
 */
import type { Task, WorkflowRun } from "@aiki/contract/Models"
import { Console, DateTime, Effect, Predicate } from "effect"

const colourful = process.stdout.isTTY === true && process.env["NO_COLOR"] === undefined
const paint = (code: number) => (text: string) => (colourful ? `\u001b[${code}m${text}\u001b[0m` : text)
export const bold = paint(1)
export const dim = paint(2)
const red = paint(31)
const green = paint(32)
export const yellow = paint(33)
const blue = paint(34)

/** A state, coloured by what it means. */
export const state = (value: string) => {
  switch (value) {
    case "completed":
      return green(value)
    case "failed":
    case "cancelled":
      return red(value)
    case "running":
      return blue(value)
    default:
      return yellow(value)
  }
}

/** Aligned columns; `width` counts visible characters (colour codes do not count). */
export const table = (headers: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>) => {
  const visible = (s: string) => s.replace(/\u001b\[\d+m/g, "").length
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => visible(r[i] ?? ""))))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((c, i) => c + " ".repeat(Math.max(0, widths[i]! - visible(c)))).join("  ").trimEnd()
  return [bold(line(headers)), ...rows.map(line)].join("\n")
}

export const time = (value: DateTime.Utc | undefined) => (value === undefined ? "-" : DateTime.formatIso(value))

export const json = (value: unknown) => Console.log(JSON.stringify(value, null, 2))

export const runSummary = (run: WorkflowRun) =>
  [
    `${bold("Run")}        ${run.id}`,
    `${bold("Workflow")}   ${run.workflowName}@${run.workflowVersion}`,
    `${bold("State")}      ${state(run.state)}${run.leaseOwner !== undefined && run.state === "running" ? ` (on ${run.leaseOwner})` : ""}${
      run.failureReason !== undefined ? ` (${run.failureReason})` : ""
    }`,
    ...(run.deadlineAt !== undefined && run.finishedAt === undefined ? [`${bold("Deadline")}   ${time(run.deadlineAt)}`] : []),
    ...(run.lapses !== undefined && run.finishedAt === undefined ? [`${bold("Lapses")}     ${yellow(String(run.lapses))} in a row`] : []),
    ...(run.waitingFor !== undefined ? [`${bold("Waiting")}    ${yellow(run.waitingFor.message)}`] : []),
    ...(run.priority !== undefined && run.priority !== 5 ? [`${bold("Priority")}   ${run.priority}`] : []),
    ...(run.scheduleId !== undefined ? [`${bold("Schedule")}   ${run.scheduleId} (for ${time(run.scheduledFor)})`] : []),
    ...(run.attempt !== undefined && run.attempt > 1 ? [`${bold("Attempt")}    ${run.attempt}`] : []),
    ...(run.startWarning !== undefined ? [`${bold("Warning")}    ${yellow(run.startWarning)}`] : []),
    ...(run.parentRunId !== undefined
      ? [`${bold("Parent")}     ${run.parentRunId}${run.parentClosePolicy === "abandon" ? dim(" (abandoned if it is cancelled)") : ""}`]
      : []),
    ...(run.awaitingChildren !== undefined ? [`${bold("Awaiting")}   ${yellow(run.awaitingChildren.join(", "))}`] : []),
    `${bold("Created")}    ${time(run.createdAt)}`,
    ...(run.finishedAt !== undefined ? [`${bold("Finished")}   ${time(run.finishedAt)}`] : []),
    `${bold("Payload")}    ${JSON.stringify(run.payload)}`,
    ...(run.result !== undefined ? [`${bold("Result")}     ${JSON.stringify(run.result)}`] : []),
    ...(run.error !== undefined ? [`${bold("Error")}      ${red(`${run.error.name}: ${run.error.message}`)}`] : [])
  ].join("\n")

/** A run's children, one row each. */
export const childRows = (children: ReadonlyArray<WorkflowRun>) =>
  children.map((child) => [child.id, `${child.workflowName}@${child.workflowVersion}`, state(child.state), time(child.createdAt)])

export const taskRows = (tasks: ReadonlyArray<Task>) =>
  tasks.map((task) => [
    task.name,
    state(task.state),
    String(task.attempts.length),
    task.error === undefined
      ? (task.result === undefined ? "" : dim(JSON.stringify(task.result).slice(0, 60)))
      : red(`${task.error.name === "TaskTimedOut" ? "timed out: " : ""}${task.error.message}`)
  ])

/** One line that says what went wrong, for any failure the CLI meets. */
export const describeFailure = (error: unknown, url: string): string => {
  if (Predicate.hasProperty(error, "_tag")) {
    switch (error._tag) {
      case "HttpClientError": {
        const reason = Predicate.hasProperty(error, "reason") && Predicate.hasProperty(error.reason, "_tag")
          ? error.reason
          : undefined
        if (reason !== undefined && reason._tag === "TransportError") {
          const cause = Predicate.hasProperty(reason, "cause") ? reason.cause : undefined
          const detail = cause instanceof Error && cause.cause instanceof Error ? cause.cause.message : String(cause)
          return `cannot reach Aiki at ${url}: ${detail}`
        }
        break
      }
      case "InvalidRequest":
      case "RunNotFound":
      case "Unauthorized":
      case "Forbidden":
      case "IdempotencyConflict":
      case "EventConflict":
      case "InvalidTransition":
      case "WorkerNotFound":
      case "ScheduleNotFound":
      case "ScheduleExists":
        return Predicate.hasProperty(error, "message") ? String(error.message) : String(error._tag)
    }
  }
  if (error instanceof Error) return error.message
  return String(error)
}

/** Runs a command's work; a failure becomes one line on stderr and exit code 1. */
export const guard = <A, E, R>(url: string, effect: Effect.Effect<A, E, R>) =>
  effect.pipe(
    Effect.catch((error) =>
      Effect.sync(() => {
        process.stderr.write(`aiki: ${describeFailure(error, url).replace(/\s+/g, " ").trim()}\n`)
        process.exitCode = 1
      })
    )
  )
