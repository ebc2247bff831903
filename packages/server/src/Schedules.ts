/**
 * Schedules: create, read, pause, resume, trigger, backfill and delete them, declare the one a workflow version
 * carries (its `trigger`), and fire the ones that are due.
 *
 * Firing: a replica takes a due schedule with a short lease (so one replica at a time handles its fire times),
 * starts a run for each fire time that has come — through `RunTransitions.start`, with the idempotency key
 * `schedule:<id>:<fire time>`, so that a fire time starts at most one run even when two replicas (or a replica that
 * died half-way and the one that took over) handle it — and moves `next_fire_at` past them. The overlap policy
 * decides what a fire time does while the previous run is still going. Fire times missed for longer than the
 * catch-up window (the servers were down) are skipped and counted, never started in a burst.
 *
 * Fire times are computed from `Clock` (tests drive them with `TestClock`); the lease expires by the database's
 * clock.
 */
import { InvalidRequest, ScheduleExists, ScheduleNotFound } from "@aiki/contract/Errors"
import type { IdempotencyKey, RunId, ScheduleId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { type Json, StartedRun } from "@aiki/contract/Models"
import { isTerminal, type RunState } from "@aiki/contract/RunState"
import {
  BackfillResult,
  type CreateSchedule,
  type OverlapPolicy,
  Schedule,
  scheduleDefaults,
  type ScheduleSpec,
  type Trigger
} from "@aiki/contract/Schedules"
import { Clock, Context, DateTime, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import type { Fragment } from "effect/sql/Statement"
import { v7 as uuidv7 } from "uuid"
import { countFireTimes, fireTimesBetween, firstFireTimeFrom, jitterOf, nextFireTime } from "./internal/fireTimes.ts"
import { RunTransitions } from "./RunTransitions.ts"
import { StartChecks } from "./StartChecks.ts"

/** How long a replica may take to handle a schedule's fire times before another one may. */
const leaseSeconds = 30
/** Fire times handled per schedule and tick at most (`allow_all` with a long catch-up window). */
const maxFiresPerTick = 100
/** Fire times a backfill may start at once. */
const maxBackfill = 1_000
/** Runs shown with a schedule. */
const lastRunsShown = 10

/** The start options of the runs a schedule starts. */
interface RunOptions {
  readonly priority?: number
  readonly concurrencyKey?: string
  readonly concurrencyLimit?: number
  readonly orderingKey?: string
  readonly rateLimitKey?: string
}

interface ScheduleRow {
  readonly id: string
  readonly workflow_name: string
  readonly workflow_version: string
  readonly spec: ScheduleSpec
  readonly payload: Json
  readonly run_options: RunOptions
  readonly overlap: OverlapPolicy
  readonly catch_up_window_ms: number
  readonly jitter_ms: number
  readonly paused: boolean
  readonly declared: boolean
  readonly next_fire_at: Date
  readonly buffered_fire_at: Date | null
  readonly last_fire_at: Date | null
  readonly last_run_id: string | null
  readonly skipped_count: number
  readonly created_at: Date
  readonly updated_at: Date
  readonly last_runs: ReadonlyArray<{ readonly run_id: string; readonly scheduled_for: string; readonly state: RunState }> | null
}

/** The settings a schedule is made of (the columns a create or a declaration writes). */
interface Settings {
  readonly spec: ScheduleSpec
  readonly payload: Json
  readonly runOptions: RunOptions
  readonly overlap: OverlapPolicy
  readonly catchUpWindowMs: number
  readonly jitterMs: number
}

const settingsOf = (input: Trigger): Settings => ({
  spec: input.spec,
  payload: input.payload ?? null,
  runOptions: {
    ...(input.priority !== undefined ? { priority: input.priority } : {}),
    ...(input.concurrencyKey !== undefined ? { concurrencyKey: input.concurrencyKey } : {}),
    ...(input.concurrencyLimit !== undefined ? { concurrencyLimit: input.concurrencyLimit } : {}),
    ...(input.orderingKey !== undefined ? { orderingKey: input.orderingKey } : {}),
    ...(input.rateLimitKey !== undefined ? { rateLimitKey: input.rateLimitKey } : {})
  },
  overlap: input.overlap ?? scheduleDefaults.overlap,
  catchUpWindowMs: input.catchUpWindowMs ?? scheduleDefaults.catchUpWindowMs,
  jitterMs: input.jitterMs ?? scheduleDefaults.jitterMs
})

const iso = (ms: number) => new Date(ms).toISOString()
const utc = (ms: number) => DateTime.makeUnsafe(ms)

/** The idempotency key of the run of a fire time: the same on every replica. */
export const fireKey = (scheduleId: string, fireMs: number) => `schedule:${scheduleId}:${iso(fireMs)}`

/** `a` compared with `b` as semantic versions (a prerelease sorts before its release). */
const compareVersions = (a: string, b: string): number => {
  const parse = (v: string) => {
    const [core = "", pre] = v.split(/-(.*)/s)
    return { parts: core.split(".").map(Number), pre }
  }
  const x = parse(a)
  const y = parse(b)
  for (let i = 0; i < 3; i++) {
    const d = (x.parts[i] ?? 0) - (y.parts[i] ?? 0)
    if (d !== 0) return d
  }
  if (x.pre === y.pre) return 0
  if (x.pre === undefined) return 1
  if (y.pre === undefined) return -1
  return x.pre < y.pre ? -1 : 1
}

const sameSettings = (row: ScheduleRow, version: string, settings: Settings) =>
  row.workflow_version === version && JSON.stringify(row.spec) === JSON.stringify(settings.spec) &&
  JSON.stringify(row.payload) === JSON.stringify(settings.payload) &&
  JSON.stringify(row.run_options) === JSON.stringify(settings.runOptions) && row.overlap === settings.overlap &&
  row.catch_up_window_ms === settings.catchUpWindowMs && row.jitter_ms === settings.jitterMs

export class Schedules extends Context.Service<Schedules, {
  /** `InvalidRequest` when its payload violates the schema registered for its version (every fire would). */
  readonly create: (input: CreateSchedule) => Effect.Effect<Schedule, ScheduleExists | InvalidRequest>
  /** Every schedule (or those of `workflowName`), by id. */
  readonly list: (workflowName?: WorkflowName) => Effect.Effect<ReadonlyArray<Schedule>>
  readonly get: (id: ScheduleId) => Effect.Effect<Schedule, ScheduleNotFound>
  readonly pause: (id: ScheduleId) => Effect.Effect<Schedule, ScheduleNotFound>
  /** Fires again from the next fire time after now; fire times while it was paused are not caught up. */
  readonly resume: (id: ScheduleId) => Effect.Effect<Schedule, ScheduleNotFound>
  /** Starts a run now, whatever the overlap policy; it counts as the schedule's latest run. */
  readonly trigger: (id: ScheduleId) => Effect.Effect<StartedRun, ScheduleNotFound>
  /** Starts the run of each fire time in `[from, to)` that has none (at most 1,000 fire times). */
  readonly backfill: (id: ScheduleId, from: DateTime.Utc, to: DateTime.Utc) => Effect.Effect<BackfillResult, ScheduleNotFound | InvalidRequest>
  readonly remove: (id: ScheduleId) => Effect.Effect<void, ScheduleNotFound>
  /**
   * Records the schedule a workflow version declares, as `<name>:trigger`: created the first time, updated when the
   * version declaring it is at least the one it has (the highest version declaring a trigger owns it). Whether it
   * is paused is the operators' to say, and stays.
   */
  readonly declare: (name: WorkflowName, version: WorkflowVersion, trigger: Trigger) => Effect.Effect<void>
  /** Handles the fire times that have come, on every due schedule this replica can lease; returns the runs started. */
  readonly fireDue: Effect.Effect<number>
}>()("@aiki/server/Schedules") {
  static readonly layer = Layer.effect(
    Schedules,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const transitions = yield* RunTransitions
      const checks = yield* StartChecks

      const columns = sql`s.id, s.workflow_name, s.workflow_version, s.spec, s.payload, s.run_options, s.overlap,
        s.catch_up_window_ms::float8 AS catch_up_window_ms, s.jitter_ms, s.paused, s.declared, s.next_fire_at,
        s.buffered_fire_at, s.last_fire_at, s.last_run_id, s.skipped_count::float8 AS skipped_count, s.created_at,
        s.updated_at`

      const lastRuns = sql`(SELECT jsonb_agg(jsonb_build_object('run_id', r.id, 'scheduled_for', r.scheduled_for,
          'state', r.state) ORDER BY r.scheduled_for DESC)
        FROM (SELECT id, scheduled_for, state FROM workflow_runs WHERE schedule_id = s.id
              ORDER BY scheduled_for DESC LIMIT ${lastRunsShown}) r) AS last_runs`

      const toSchedule = (row: ScheduleRow) => {
        const next: Array<number> = []
        if (!row.paused) {
          for (let t = row.next_fire_at.getTime(); next.length < 5; t = nextFireTime(row.spec, t)) next.push(t)
        }
        return new Schedule({
          id: row.id as ScheduleId,
          workflowName: row.workflow_name as WorkflowName,
          workflowVersion: row.workflow_version as WorkflowVersion,
          spec: row.spec,
          payload: row.payload,
          overlap: row.overlap,
          catchUpWindowMs: row.catch_up_window_ms,
          jitterMs: row.jitter_ms,
          ...row.run_options,
          paused: row.paused,
          declared: row.declared,
          nextFireTimes: next.map(utc),
          ...(row.last_fire_at !== null ? { lastFireAt: DateTime.fromDateUnsafe(row.last_fire_at) } : {}),
          ...(row.buffered_fire_at !== null ? { bufferedFireAt: DateTime.fromDateUnsafe(row.buffered_fire_at) } : {}),
          skippedCount: row.skipped_count,
          lastRuns: (row.last_runs ?? []).map((r) => ({
            runId: r.run_id as RunId,
            scheduledFor: DateTime.makeUnsafe(r.scheduled_for),
            state: r.state
          })),
          createdAt: DateTime.fromDateUnsafe(row.created_at),
          updatedAt: DateTime.fromDateUnsafe(row.updated_at)
        }, { disableChecks: true })
      }

      const find = (id: string) =>
        sql<ScheduleRow>`SELECT ${columns}, ${lastRuns} FROM schedules s WHERE s.id = ${id}`.pipe(
          Effect.map((rows) => rows[0]),
          Effect.orDie
        )

      const get = Effect.fn("Schedules.get")(function*(id: ScheduleId) {
        const row = yield* find(id)
        if (row === undefined) return yield* ScheduleNotFound.of(id)
        return toSchedule(row)
      })

      /** Inserts a schedule unless its id is taken; returns whether it did. */
      const insert = (id: string, name: string, version: string, settings: Settings, options: { paused: boolean; declared: boolean }) =>
        Effect.gen(function*() {
          const first = firstFireTimeFrom(settings.spec, (yield* Clock.currentTimeMillis) + 1)
          const rows = yield* sql`
            INSERT INTO schedules (id, workflow_name, workflow_version, spec, payload, run_options, overlap,
              catch_up_window_ms, jitter_ms, paused, declared, next_fire_at)
            VALUES (${id}, ${name}, ${version}, ${JSON.stringify(settings.spec)}::jsonb, ${JSON.stringify(settings.payload)}::json,
              ${JSON.stringify(settings.runOptions)}::jsonb, ${settings.overlap}, ${settings.catchUpWindowMs},
              ${settings.jitterMs}, ${options.paused}, ${options.declared}, ${iso(first)}::timestamptz)
            ON CONFLICT (id) DO NOTHING
            RETURNING id`.pipe(Effect.orDie)
          return rows.length > 0
        })

      const create = Effect.fn("Schedules.create")(function*(input: CreateSchedule) {
        const id = input.id ?? `s-${uuidv7({ msecs: yield* Clock.currentTimeMillis })}`
        const settings = settingsOf(input)
        const [checked] = yield* checks.check([{ workflowName: input.workflowName, workflowVersion: input.workflowVersion, payload: settings.payload }])
        if (checked instanceof InvalidRequest) return yield* checked
        const inserted = yield* insert(id, input.workflowName, input.workflowVersion, settings, {
          paused: input.paused ?? false,
          declared: false
        })
        if (!inserted) {
          return yield* new ScheduleExists({ scheduleId: id, message: `A schedule with id ${id} exists already` })
        }
        return yield* get(id as ScheduleId).pipe(Effect.orDie)
      })

      const list = Effect.fn("Schedules.list")(function*(workflowName?: WorkflowName) {
        const rows = yield* sql<ScheduleRow>`
          SELECT ${columns}, ${lastRuns} FROM schedules s
          ${workflowName === undefined ? sql`` : sql`WHERE s.workflow_name = ${workflowName}`}
          ORDER BY s.id`.pipe(Effect.orDie)
        return rows.map(toSchedule)
      })

      /** Changes a schedule's row and returns it as it now is. */
      const update = (id: ScheduleId, change: (sql: SqlClient.SqlClient) => Fragment) =>
        Effect.gen(function*() {
          const rows = yield* sql`UPDATE schedules SET ${change(sql)}, updated_at = now() WHERE id = ${id} RETURNING id`
            .pipe(Effect.orDie)
          if (rows.length === 0) return yield* ScheduleNotFound.of(id)
          return yield* get(id)
        })

      const pause = Effect.fn("Schedules.pause")((id: ScheduleId) => update(id, (sql) => sql`paused = true`))

      const resume = Effect.fn("Schedules.resume")(function*(id: ScheduleId) {
        const row = yield* find(id)
        if (row === undefined) return yield* ScheduleNotFound.of(id)
        if (!row.paused) return toSchedule(row)
        const next = nextFireTime(row.spec, yield* Clock.currentTimeMillis)
        return yield* update(id, (sql) => sql`paused = false, buffered_fire_at = NULL, next_fire_at = ${iso(next)}::timestamptz`)
      })

      const remove = Effect.fn("Schedules.remove")(function*(id: ScheduleId) {
        const rows = yield* sql`DELETE FROM schedules WHERE id = ${id} RETURNING id`.pipe(Effect.orDie)
        if (rows.length === 0) return yield* ScheduleNotFound.of(id)
      })

      /** Starts the run of fire time `fireMs` (or finds the one it has); returns its id and whether it is new. */
      const startRun = (row: ScheduleRow, fireMs: number, key: string = fireKey(row.id, fireMs)) =>
        transitions.start({
          workflowName: row.workflow_name as WorkflowName,
          workflowVersion: row.workflow_version as WorkflowVersion,
          payload: row.payload,
          idempotencyKey: key as IdempotencyKey,
          schedule: { id: row.id as ScheduleId, fireTime: iso(fireMs) },
          ...row.run_options
        }).pipe(
          Effect.map((started) => ({ id: started.id, created: started.created, started })),
          // The fire time was started before with other settings (the schedule changed since): it has its run.
          Effect.catchTag("IdempotencyConflict", (conflict) =>
            Effect.succeed({
              id: conflict.existingRunId,
              created: false,
              started: undefined
            }))
        )

      const trigger = Effect.fn("Schedules.trigger")(function*(id: ScheduleId) {
        const row = yield* find(id)
        if (row === undefined) return yield* ScheduleNotFound.of(id)
        const now = yield* Clock.currentTimeMillis
        const run = yield* startRun(row, now, `schedule:${row.id}:manual:${iso(now)}`)
        yield* sql`UPDATE schedules SET last_run_id = ${run.id}, updated_at = now() WHERE id = ${id}`.pipe(Effect.orDie)
        return run.started ?? new StartedRun({ id: run.id, state: "pending", created: false })
      })

      const backfill = Effect.fn("Schedules.backfill")(function*(id: ScheduleId, from: DateTime.Utc, to: DateTime.Utc) {
        const row = yield* find(id)
        if (row === undefined) return yield* ScheduleNotFound.of(id)
        const [fromMs, toMs] = [DateTime.toEpochMillis(from), DateTime.toEpochMillis(to)]
        const invalid = (field: string, message: string) =>
          new InvalidRequest({ message, issues: [{ path: [field], message }] })
        if (toMs <= fromMs) return yield* invalid("to", "`to` must be after `from`")
        const { times, truncated } = fireTimesBetween(row.spec, fromMs, toMs, maxBackfill)
        if (truncated) {
          return yield* invalid("to", `the range holds more than ${maxBackfill} fire times; backfill it in parts`)
        }
        // Concurrent starts share the engine's group commits.
        const runs = yield* Effect.forEach(times, (t) => startRun(row, t), { concurrency: 16 })
        return new BackfillResult({
          fireTimes: times.length,
          started: runs.filter((r) => r.created).length,
          runIds: runs.map((r) => r.id)
        })
      })

      const declare = Effect.fn("Schedules.declare")(function*(name: WorkflowName, version: WorkflowVersion, trigger: Trigger) {
        const id = `${name}:trigger`
        const settings = settingsOf(trigger)
        if (yield* insert(id, name, version, settings, { paused: false, declared: true })) return
        const row = yield* find(id)
        if (row === undefined || !row.declared) {
          return yield* Effect.logWarning(`Schedule ${id} exists and was not declared by ${name}; its trigger is not recorded`)
        }
        if (compareVersions(version, row.workflow_version) < 0 || sameSettings(row, version, settings)) return
        // Fire times computed for the old spec do not hold for a new one: it fires from its next time after now.
        const next = JSON.stringify(row.spec) === JSON.stringify(settings.spec)
          ? row.next_fire_at.toISOString()
          : iso(nextFireTime(settings.spec, yield* Clock.currentTimeMillis))
        yield* sql`
          UPDATE schedules SET workflow_version = ${version}, spec = ${JSON.stringify(settings.spec)}::jsonb,
            payload = ${JSON.stringify(settings.payload)}::json, run_options = ${JSON.stringify(settings.runOptions)}::jsonb,
            overlap = ${settings.overlap}, catch_up_window_ms = ${settings.catchUpWindowMs}, jitter_ms = ${settings.jitterMs},
            next_fire_at = ${next}::timestamptz, updated_at = now()
          WHERE id = ${id}`.pipe(Effect.orDie)
      })

      /** Whether the schedule's latest run is still going. */
      const stillGoing = (runId: string | null) =>
        runId === null ? Effect.succeed(false) : sql<{ readonly state: RunState }>`
          SELECT state FROM workflow_runs WHERE id = ${runId}`.pipe(
          Effect.map((rows) => rows[0] !== undefined && !isTerminal(rows[0].state)),
          Effect.orDie
        )

      /** Handles the fire times of one leased schedule that have come by `now`; returns the runs started. */
      const fireSchedule = (row: ScheduleRow, now: number) =>
        Effect.gen(function*() {
          let lastRunId = row.last_run_id
          let going = yield* stillGoing(lastRunId)
          let buffered = row.buffered_fire_at?.getTime() ?? null
          let skipped = 0
          let started = 0
          let lastFire = row.last_fire_at?.getTime() ?? null
          const fire = (t: number) =>
            Effect.gen(function*() {
              const run = yield* startRun(row, t)
              lastRunId = run.id
              going = true
              if (run.created) started++
            })
          if (buffered !== null && !going) {
            yield* fire(buffered)
            buffered = null
          }
          let next = row.next_fire_at.getTime()
          // Fire times missed beyond the catch-up window are counted, not started.
          const windowStart = now - row.catch_up_window_ms
          if (next < windowStart) {
            skipped += countFireTimes(row.spec, next, windowStart)
            next = firstFireTimeFrom(row.spec, windowStart)
          }
          for (let handled = 0; next <= now && handled < maxFiresPerTick; handled++) {
            if (now < next + jitterOf(row.id, next, row.jitter_ms)) break
            if (!going || row.overlap === "allow_all") {
              yield* fire(next)
            } else {
              switch (row.overlap) {
                case "skip":
                  skipped++
                  break
                case "buffer_one":
                  if (buffered !== null) skipped++
                  buffered = next
                  break
                case "cancel_previous":
                  yield* transitions.cancel(lastRunId as RunId).pipe(Effect.ignore)
                  yield* fire(next)
                  break
              }
            }
            lastFire = next
            next = nextFireTime(row.spec, next)
          }
          yield* sql`
            UPDATE schedules SET next_fire_at = ${iso(next)}::timestamptz,
              buffered_fire_at = ${buffered === null ? null : iso(buffered)}::timestamptz,
              last_fire_at = ${lastFire === null ? null : iso(lastFire)}::timestamptz, last_run_id = ${lastRunId}::uuid,
              skipped_count = skipped_count + ${skipped}, lease_until = NULL, updated_at = now()
            WHERE id = ${row.id}`.pipe(Effect.orDie)
          return started
        })

      const fireDue = Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const due = yield* sql<ScheduleRow>`
          WITH due AS (
            SELECT id FROM schedules
            WHERE NOT paused AND (next_fire_at <= ${iso(now)}::timestamptz OR buffered_fire_at IS NOT NULL)
              AND (lease_until IS NULL OR lease_until < now())
            ORDER BY next_fire_at LIMIT 100
            FOR UPDATE SKIP LOCKED
          )
          UPDATE schedules s SET lease_until = now() + make_interval(secs => ${leaseSeconds})
          FROM due WHERE s.id = due.id
          RETURNING ${columns}`.pipe(Effect.orDie)
        const started = yield* Effect.forEach(due, (row) =>
          fireSchedule(row, now).pipe(
            // A schedule that failed is left to its lease: another tick (or replica) handles it again.
            Effect.catchCause((cause) =>
              Effect.as(Effect.logError(`Schedule ${row.id} could not fire`, cause), 0)
            )
          ))
        return started.reduce((a, b) => a + b, 0)
      }).pipe(Effect.withSpan("Schedules.fireDue"))

      return Schedules.of({ create, list, get, pause, resume, trigger, backfill, remove, declare, fireDue })
    })
  )
}
