/**
 * Prometheus metrics, named as operators of Aiki expect them (`aiki_workflows_started_total`, …). Run and task
 * counters follow the changes this server commits (`RunEvents`); worker gauges are read from the database on a
 * timer, so every replica reports the same fleet.
 */
import { Effect, Layer, Metric, Schedule, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { RunEvents } from "./RunEvents.ts"
import { ServerConfig } from "./ServerConfig.ts"

export const workflowsStarted = Metric.counter("aiki_workflows_started_total", { description: "Workflow runs started" })
export const workflowsCompleted = Metric.counter("aiki_workflows_completed_total", {
  description: "Workflow runs completed"
})
export const workflowsFailed = Metric.counter("aiki_workflows_failed_total", { description: "Workflow runs failed" })
export const workflowsCancelled = Metric.counter("aiki_workflows_cancelled_total", {
  description: "Workflow runs cancelled"
})
export const workflowDuration = Metric.histogram("aiki_workflow_duration_seconds", {
  description: "Time from start to a terminal state",
  boundaries: Metric.exponentialBoundaries({ start: 0.005, factor: 2, count: 20 })
})
export const tasksStarted = Metric.counter("aiki_tasks_started_total", { description: "Task attempts started" })
export const tasksCompleted = Metric.counter("aiki_tasks_completed_total", { description: "Tasks completed" })
export const tasksFailed = Metric.counter("aiki_tasks_failed_total", { description: "Task attempts failed" })
export const tasksRetried = Metric.counter("aiki_tasks_retried_total", { description: "Task attempts to be retried" })
export const workersActive = Metric.gauge("aiki_workers_active", { description: "Workers with a recent heartbeat" })
export const workersHeartbeatAge = Metric.gauge("aiki_workers_heartbeat_age_seconds", {
  description: "Seconds since each recent worker's last heartbeat"
})

const observeEvents = Effect.gen(function*() {
  const events = yield* RunEvents
  yield* events.stream.pipe(
    Stream.runForEach((event) => {
      switch (event._tag) {
        case "RunChanged": {
          const { previous, run } = event
          if (previous === null) return Metric.update(workflowsStarted, 1)
          switch (run.state) {
            case "completed":
            case "failed":
            case "cancelled": {
              const counter = run.state === "completed"
                ? workflowsCompleted
                : run.state === "failed"
                ? workflowsFailed
                : workflowsCancelled
              const seconds = (Number(run.updatedAt.epochMilliseconds) - Number(run.createdAt.epochMilliseconds)) / 1000
              return Effect.andThen(Metric.update(counter, 1), Metric.update(workflowDuration, seconds))
            }
            default:
              return Effect.void
          }
        }
        case "TaskChanged": {
          switch (event.task.state) {
            case "running":
              return Metric.update(tasksStarted, 1)
            case "completed":
              return Metric.update(tasksCompleted, 1)
            case "failed":
              return Metric.update(tasksFailed, 1)
            case "retrying":
              return Effect.andThen(Metric.update(tasksFailed, 1), Metric.update(tasksRetried, 1))
            case "pending":
              return Effect.void
          }
        }
      }
    })
  )
})

const sampleWorkers = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const config = yield* ServerConfig
  const rows = yield* sql<{ readonly id: string; readonly age: number }>`
    SELECT id, EXTRACT(EPOCH FROM (now() - last_heartbeat_at))::float8 AS age FROM workers
    WHERE last_heartbeat_at > now() - make_interval(secs => ${config.workerStaleAfterMs / 1000})`
  yield* Metric.update(workersActive, rows.length)
  yield* Effect.forEach(rows, (row) =>
    Metric.update(Metric.withAttributes(workersHeartbeatAge, { worker_id: row.id }), row.age), { discard: true })
})

/** Keeps the metrics current for as long as the layer is alive. */
export const layer = Layer.effectDiscard(Effect.gen(function*() {
  yield* Effect.forkScoped(observeEvents)
  yield* sampleWorkers.pipe(
    Effect.catchCause((cause) => Effect.logWarning("Cannot sample worker metrics", cause)),
    Effect.repeat(Schedule.spaced("5 seconds")),
    Effect.forkScoped
  )
}))
