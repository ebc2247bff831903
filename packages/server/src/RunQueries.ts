/**
 * Read-only questions about runs across workflows, for operators and the dashboard: a filtered, searchable list,
 * counts by state, and a feed of which runs change. Nothing here writes; every change to a run goes through the
 * stores that own it.
 */
import type { RunId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { RunActivity, RunCounts, RunPage, type StateCounts, WorkflowRunCounts } from "@aiki/contract/Models"
import { RunState } from "@aiki/contract/RunState"
import { Context, DateTime, Duration, Effect, Layer, Stream } from "effect"
import { SqlClient } from "effect/sql"
import { type RunRow, toRun } from "./internal/rows.ts"
import { RunNotifications } from "./RunNotifications.ts"

/** Which runs: every filter is optional and they combine with AND. */
export interface RunFilter {
  readonly workflowName?: WorkflowName | undefined
  readonly workflowVersion?: WorkflowVersion | undefined
  /** Started at or after this instant. */
  readonly from?: DateTime.Utc | undefined
  /** Started before this instant. */
  readonly to?: DateTime.Utc | undefined
}

export interface ListAllRunsInput extends RunFilter {
  readonly state?: RunState | undefined
  /** A run id, or an idempotency key (exact match). */
  readonly query?: string | undefined
  /** @default 50 */
  readonly limit?: number | undefined
  readonly cursor?: RunId | undefined
}

/** How long run changes are gathered into one `Changed` event. */
const coalesceWindow = Duration.millis(250)
/** How often an idle activity stream says it is alive. */
const pingEvery = Duration.seconds(15)

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/**
 * The smallest UUIDv7 of an instant: run ids are UUIDv7s whose first 48 bits are the start time in milliseconds,
 * so a time range is an id range and uses the primary key.
 */
const firstIdAt = (instant: DateTime.Utc): string => {
  const hex = Math.max(0, DateTime.toEpochMillis(instant)).toString(16).padStart(12, "0").slice(-12)
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-0000-0000-000000000000`
}

const zeroCounts = (): { -readonly [S in RunState]: number } =>
  Object.fromEntries(RunState.literals.map((state) => [state, 0])) as { [S in RunState]: number }

export class RunQueries extends Context.Service<RunQueries, {
  /** Runs of every workflow, newest first, one page at a time. */
  readonly list: (input: ListAllRunsInput) => Effect.Effect<RunPage>
  /** How many runs match `filter`, by state. */
  readonly counts: (filter: RunFilter) => Effect.Effect<RunCounts>
  /** Each workflow version (registered, or with runs) and its runs by state, by name then version. */
  readonly workflowCounts: Effect.Effect<ReadonlyArray<WorkflowRunCounts>>
  /** Which runs change state from now on, whichever replica committed the change. */
  readonly activity: Stream.Stream<RunActivity>
}>()("@aiki/server/RunQueries") {
  static readonly layer = Layer.effect(
    RunQueries,
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const notifications = yield* RunNotifications

      const where = (filter: RunFilter & { readonly state?: RunState | undefined; readonly query?: string | undefined }) =>
        sql.and([
          sql`TRUE`,
          ...(filter.workflowName === undefined ? [] : [sql`workflow_name = ${filter.workflowName}`]),
          ...(filter.workflowVersion === undefined ? [] : [sql`workflow_version = ${filter.workflowVersion}`]),
          ...(filter.state === undefined ? [] : [sql`state = ${filter.state}`]),
          ...(filter.from === undefined ? [] : [sql`id >= ${firstIdAt(filter.from)}::uuid`]),
          ...(filter.to === undefined ? [] : [sql`id < ${firstIdAt(filter.to)}::uuid`]),
          ...(filter.query === undefined || filter.query.length === 0 ? [] : [
            uuidPattern.test(filter.query)
              ? sql`(id = ${filter.query.toLowerCase()}::uuid OR idempotency_key = ${filter.query})`
              : sql`idempotency_key = ${filter.query}`
          ])
        ])

      const list = Effect.fn("RunQueries.list")(function*(input: ListAllRunsInput) {
        const limit = input.limit ?? 50
        const rows = yield* sql<RunRow>`
          SELECT * FROM workflow_runs
          WHERE ${where(input)} ${input.cursor === undefined ? sql`` : sql`AND id < ${input.cursor}`}
          ORDER BY id DESC
          LIMIT ${limit + 1}`.pipe(Effect.orDie)
        const page = rows.slice(0, limit).map(toRun)
        const last = page[page.length - 1]
        return new RunPage({
          runs: page,
          ...(rows.length > limit && last !== undefined ? { nextCursor: last.id } : {})
        })
      })

      const counts = Effect.fn("RunQueries.counts")(function*(filter: RunFilter) {
        const rows = yield* sql<{ readonly state: RunState; readonly n: number }>`
          SELECT state, count(*)::int AS n FROM workflow_runs WHERE ${where(filter)} GROUP BY state`.pipe(Effect.orDie)
        const byState = zeroCounts()
        for (const row of rows) byState[row.state] = row.n
        return new RunCounts({ total: rows.reduce((sum, row) => sum + row.n, 0), byState })
      })

      const workflowCounts = sql<{
        readonly workflow_name: string
        readonly workflow_version: string
        readonly state: RunState | null
        readonly n: number
      }>`
        SELECT k.workflow_name, k.workflow_version, r.state, COALESCE(r.n, 0) AS n
        FROM (
          SELECT workflow_name, version AS workflow_version FROM workflow_versions
          UNION SELECT DISTINCT workflow_name, workflow_version FROM workflow_runs
        ) k
        LEFT JOIN (
          SELECT workflow_name, workflow_version, state, count(*)::int AS n
          FROM workflow_runs GROUP BY workflow_name, workflow_version, state
        ) r USING (workflow_name, workflow_version)
        ORDER BY k.workflow_name, k.workflow_version`.pipe(
        Effect.orDie,
        Effect.map((rows) => {
          const versions = new Map<string, { name: string; version: string; byState: { [S in RunState]: number } }>()
          for (const row of rows) {
            const id = `${row.workflow_name}@${row.workflow_version}`
            const entry = versions.get(id) ??
              { name: row.workflow_name, version: row.workflow_version, byState: zeroCounts() }
            versions.set(id, entry)
            if (row.state !== null) entry.byState[row.state] = row.n
          }
          return [...versions.values()].map((entry) =>
            new WorkflowRunCounts({
              name: entry.name as WorkflowName,
              version: entry.version as WorkflowVersion,
              total: Object.values(entry.byState).reduce((sum, n) => sum + n, 0),
              byState: entry.byState satisfies StateCounts
            }, { disableChecks: true })
          )
        }),
        Effect.withSpan("RunQueries.workflowCounts")
      )

      const activity: Stream.Stream<RunActivity> = Stream.unwrap(Effect.gen(function*() {
        const subscription = yield* notifications.subscribe
        // Run-level changes only (a task's change does not move the run in a list), gathered so that a burst of
        // thousands of changes costs a few events.
        const changed = Stream.fromSubscription(subscription).pipe(
          Stream.filter((change) => change.task === null),
          Stream.groupedWithin(1_000, coalesceWindow),
          Stream.map((changes): RunActivity => ({
            _tag: "Changed",
            runIds: [...new Set(changes.map((change) => change.runId as RunId))]
          }))
        )
        const pings = Stream.tick(pingEvery).pipe(Stream.drop(1), Stream.map((): RunActivity => ({ _tag: "Ping" })))
        const connected: RunActivity = { _tag: "Connected" }
        return Stream.make(connected).pipe(Stream.concat(Stream.merge(changed, pings)))
      }))

      return RunQueries.of({ list, counts, workflowCounts, activity })
    })
  )
}
