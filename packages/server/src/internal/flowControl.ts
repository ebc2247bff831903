/**
 * Flow control as a group decides it: whether a claimed run may start now or must wait (its concurrency key or
 * workflow is at its limit, an older run with its ordering key has not finished, its rate-limit bucket is full, or
 * its debounce delay has not passed), offering a waiting run again, and replacing a debounced run's payload.
 *
 * The counts a claim is decided against are read after the group locked its runs, under transaction-scoped
 * advisory locks on the limited keys (taken in one sorted order, after the run locks), so two groups on two
 * replicas never both grant the last slot of a key. Ordering needs no lock: only the oldest unfinished run of a key
 * may run, and the run lock already makes its grant unique.
 *
 * A run that must wait stays `pending` and says why (`waiting_*`): it has no stream entry and no poll takes it, so
 * it holds no worker. When a run that held a slot ends, `FlowControl` offers the next waiting run of its key (a new
 * stream entry, in the transaction that clears its wait); a periodic sweep offers what a crash left waiting.
 */
import type { WaitingReason } from "@aiki/contract/FlowControl"
import type { FlowPolicy } from "@aiki/contract/FlowControl"
import type { RunId } from "@aiki/contract/Ids"
import { type Json, StartedRun } from "@aiki/contract/Models"
import { isTerminal } from "@aiki/contract/RunState"
import { DateTime, Duration, Effect } from "effect"
import type { SqlClient } from "effect/sql"
import type { Ledger, LedgerRun, TransitionRecord } from "./Ledger.ts"

/** A run's flow control as its group read it with its lock. */
export interface RunFlow {
  readonly priority: number
  readonly concurrencyKey: string | null
  readonly concurrencyLimit: number | null
  readonly orderingKey: string | null
  readonly rateLimitKey: string | null
  readonly debounceKey: string | null
  readonly waitingReason: WaitingReason | null
  /** It has no `waiting_until`, or that time has come (by the database's clock). */
  readonly waitingDue: boolean
  /** A worker was granted it before (it counts as started for rate limits). */
  readonly started: boolean
}

/** A run's flow control columns. */
export interface FlowColumns {
  readonly priority: number
  readonly concurrency_key: string | null
  readonly concurrency_limit: number | null
  readonly ordering_key: string | null
  readonly rate_limit_key: string | null
  readonly debounce_key: string | null
  readonly waiting_reason: WaitingReason | null
}

/** The flow columns `lockRuns` reads beside the control columns. */
export interface RunFlowRow extends FlowColumns {
  readonly waiting_due: boolean
  readonly started: boolean
}

export const flowOf = (row: RunFlowRow): RunFlow => ({
  priority: row.priority,
  concurrencyKey: row.concurrency_key,
  concurrencyLimit: row.concurrency_limit,
  orderingKey: row.ordering_key,
  rateLimitKey: row.rate_limit_key,
  debounceKey: row.debounce_key,
  waitingReason: row.waiting_reason,
  waitingDue: row.waiting_due,
  started: row.started
})

/** A change to what a run waits for, or to a debounced run's payload. */
export interface FlowPatch {
  /** Set (the run waits), or `null` (it no longer does). */
  waiting?: { readonly reason: WaitingReason; readonly message: string; readonly untilMs: number | null } | null
  /** The rate-limit bucket a granted run counts in. */
  rateLimitKey?: string
  /** A debounced run's new payload, and when it may start: `delayMs` from now, at most `maxDelayMs` after it was created. */
  debounce?: { readonly payload: Json; readonly delayMs: number; readonly maxDelayMs: number | null }
}

const key = (a: string, b: string) => `${a}\u001f${b}`
export const versionKey = (name: string, version: string) => `${name}@${version}`

/** What one group knows about flow control: the versions' limits, counts under their locks, and its own changes. */
export class FlowLedger {
  /** Declared limits, by `name@version`. */
  policies: ReadonlyMap<string, FlowPolicy> = new Map()
  /** The database's clock when the counts were read. */
  nowMs = 0
  readonly runningByKey = new Map<string, number>()
  readonly runningByWorkflow = new Map<string, number>()
  /** The oldest unfinished run of each ordering key. */
  readonly heads = new Map<string, string>()
  /** Start times (ms, ascending) within the period of each rate-limit bucket. */
  readonly starts = new Map<string, Array<number>>()
  readonly patches = new Map<string, FlowPatch>()
  /** Runs offered again: announced as pending, for pollers. */
  readonly offered = new Set<string>()

  policyOf(run: LedgerRun): FlowPolicy | undefined {
    return this.policies.get(versionKey(run.workflowName, run.workflowVersion))
  }

  patch(run: LedgerRun, patch: FlowPatch) {
    this.patches.set(run.id, { ...this.patches.get(run.id), ...patch })
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Changes

/** Offers a waiting run again: its wait is cleared and it gets a stream entry. */
export interface Offer {
  readonly _tag: "Offer"
  readonly runId: RunId
  outcome: boolean | undefined
}
export const Offer = (runId: RunId): Offer => ({ _tag: "Offer", runId, outcome: undefined })

/** Replaces the payload of the debounced run `runId` (if it still has not started) and pushes its start back. */
export interface Debounce {
  readonly _tag: "Debounce"
  readonly runId: RunId
  readonly key: string
  readonly payload: Json
  readonly delayMs: number
  readonly maxDelayMs: number | null
  /** Left `undefined` when the run started meanwhile (or is gone): start a new one instead. */
  outcome: StartedRun | undefined
}
export const Debounce = (
  runId: RunId,
  input: { readonly key: string; readonly payload: Json; readonly delayMs: number; readonly maxDelayMs: number | null }
): Debounce => ({ _tag: "Debounce", runId, ...input, outcome: undefined })

// ---------------------------------------------------------------------------------------------------------------
// Decisions

/** What a claimed pending run must wait for, if anything. */
export interface Hold {
  readonly reason: WaitingReason
  readonly message: string
}

const limitOf = (run: LedgerRun, policy: FlowPolicy | undefined) => run.flow.concurrencyLimit ?? policy?.concurrencyLimit

const bucketOf = (run: LedgerRun) => run.flow.rateLimitKey ?? ""

const describeBucket = (bucket: string) => bucket === "" ? "" : ` for key ${bucket}`

/**
 * Whether the pending run `run` must wait rather than be granted now; when it must, the wait is recorded on it.
 * Checked in order: its debounce delay, its turn (ordering key), its key's and its workflow's concurrency, its
 * rate-limit bucket.
 */
export const holdBack = (ledger: Ledger, run: LedgerRun): Hold | undefined => {
  const flow = ledger.flow
  const policy = flow.policyOf(run)
  const hold = (reason: WaitingReason, message: string, untilMs: number | null = null): Hold => {
    flow.patch(run, { waiting: { reason, message, untilMs } })
    return { reason, message }
  }
  if (run.flow.waitingReason === "debounce" && !run.flow.waitingDue) {
    // Its wait (and the time it ends) is recorded already.
    return { reason: "debounce", message: `Run ${run.id} is debounced (key ${run.flow.debounceKey}) and may not start yet` }
  }
  const { concurrencyKey, orderingKey } = run.flow
  if (orderingKey !== null) {
    const head = flow.heads.get(key(run.workflowName, orderingKey))
    if (head !== undefined && head !== run.id) {
      return hold("ordering", `waiting for run ${head} (ordering key ${orderingKey}) to finish`)
    }
  }
  const limit = limitOf(run, policy)
  if (concurrencyKey !== null && limit !== undefined) {
    const running = flow.runningByKey.get(key(run.workflowName, concurrencyKey)) ?? 0
    if (running >= limit) {
      return hold("concurrency_limit", `waiting for concurrency key ${concurrencyKey} (${running}/${limit} running)`)
    }
  }
  if (policy?.workflowLimit !== undefined) {
    const running = flow.runningByWorkflow.get(run.workflowName) ?? 0
    if (running >= policy.workflowLimit) {
      return hold("workflow_limit", `waiting for a slot of workflow ${run.workflowName} (${running}/${policy.workflowLimit} running)`)
    }
  }
  if (policy?.rateLimit !== undefined && !run.flow.started) {
    const { limit: max, periodMs } = policy.rateLimit
    const starts = flow.starts.get(key(run.workflowName, bucketOf(run))) ?? []
    if (starts.length >= max) {
      // The start that frees a place in the window is the one `max` places back from the newest.
      const untilMs = starts[starts.length - max]! + periodMs
      const period = Duration.format(Duration.millis(periodMs))
      return hold(
        "rate_limit",
        `rate limited: ${max} runs started per ${period}${describeBucket(bucketOf(run))}; next start at ${
          DateTime.formatIso(DateTime.makeUnsafe(untilMs))
        }`,
        untilMs
      )
    }
  }
  return undefined
}

/** A granted pending run takes its places: in its key's and workflow's counts, in its rate-limit bucket. */
export const admit = (ledger: Ledger, run: LedgerRun) => {
  const flow = ledger.flow
  const policy = flow.policyOf(run)
  if (run.flow.concurrencyKey !== null) {
    const k = key(run.workflowName, run.flow.concurrencyKey)
    flow.runningByKey.set(k, (flow.runningByKey.get(k) ?? 0) + 1)
  }
  flow.runningByWorkflow.set(run.workflowName, (flow.runningByWorkflow.get(run.workflowName) ?? 0) + 1)
  if (policy?.rateLimit !== undefined && !run.flow.started) {
    const k = key(run.workflowName, bucketOf(run))
    flow.starts.set(k, [...(flow.starts.get(k) ?? []), flow.nowMs])
    if (run.flow.rateLimitKey === null) flow.patch(run, { rateLimitKey: "" })
  }
  if (run.flow.waitingReason !== null) flow.patch(run, { waiting: null })
}

export const offer = (ledger: Ledger, change: Offer) => {
  const run = ledger.runs.get(change.runId)
  change.outcome = false
  if (run === undefined || run.state !== "pending" || run.flow.waitingReason === null) return
  if (run.flow.waitingReason === "debounce" && !run.flow.waitingDue) return
  ledger.flow.patch(run, { waiting: null })
  // Not a transition, but the run row is written with the group (its outbox row goes with it).
  ledger.patch(run, {})
  ledger.runnable.add(run.id)
  ledger.flow.offered.add(run.id)
  change.outcome = true
}

export const debounce = (ledger: Ledger, change: Debounce) => {
  const run = ledger.runs.get(change.runId)
  if (run === undefined || run.state !== "pending" || run.flow.started || run.flow.debounceKey !== change.key) return
  ledger.flow.patch(run, {
    debounce: { payload: change.payload, delayMs: change.delayMs, maxDelayMs: change.maxDelayMs },
    waiting: {
      reason: "debounce",
      message: `debounced (key ${change.key}): starts once no start replaced it for ${Duration.format(Duration.millis(change.delayMs))}`,
      untilMs: null
    }
  })
  change.outcome = new StartedRun({ id: run.id as RunId, state: "pending", created: false, debounced: true })
}

// ---------------------------------------------------------------------------------------------------------------
// Reading and writing

/** What the group must count before deciding its claims, and the keys it must lock for that. */
const needs = (ledger: Ledger, claimed: ReadonlyArray<LedgerRun>) => {
  const concurrency = new Map<string, { name: string; key: string }>()
  const workflows = new Set<string>()
  const ordering = new Map<string, { name: string; key: string }>()
  const rates = new Map<string, { name: string; bucket: string; period_ms: number }>()
  for (const run of claimed) {
    const policy = ledger.flow.policyOf(run)
    if (run.flow.concurrencyKey !== null && limitOf(run, policy) !== undefined) {
      concurrency.set(key(run.workflowName, run.flow.concurrencyKey), { name: run.workflowName, key: run.flow.concurrencyKey })
    }
    if (policy?.workflowLimit !== undefined) workflows.add(run.workflowName)
    if (run.flow.orderingKey !== null) {
      ordering.set(key(run.workflowName, run.flow.orderingKey), { name: run.workflowName, key: run.flow.orderingKey })
    }
    if (policy?.rateLimit !== undefined && !run.flow.started) {
      rates.set(key(run.workflowName, bucketOf(run)), {
        name: run.workflowName,
        bucket: bucketOf(run),
        period_ms: policy.rateLimit.periodMs
      })
    }
  }
  const locks = [
    ...[...concurrency.keys()].map((k) => `c\u001f${k}`),
    ...[...workflows].map((name) => `w\u001f${name}`),
    ...[...rates.keys()].map((k) => `r\u001f${k}`)
  ]
  return { concurrency: [...concurrency.values()], workflows: [...workflows], ordering: [...ordering.values()], rates: [...rates.values()], locks }
}

const counted = (need: ReturnType<typeof needs>) => need.locks.length > 0 || need.ordering.length > 0

/**
 * Whether claiming the pending runs `claimed` is decided against counts (`loadFlow` reads and locks something): false
 * when none of them is subject to a limit, an ordering key or a rate limit. Their policies must be in the ledger.
 */
export const underFlowControl = (ledger: Ledger, claimed: ReadonlyArray<LedgerRun>) => counted(needs(ledger, claimed))

/**
 * Reads what the group's claims of pending runs are decided against. Nothing is read (and nothing locked) when
 * none of them is subject to flow control.
 */
export const loadFlow = (sql: SqlClient.SqlClient, ledger: Ledger, claimed: ReadonlyArray<LedgerRun>) =>
  Effect.gen(function*() {
    const need = needs(ledger, claimed)
    if (!counted(need)) return
    if (need.locks.length > 0) {
      // Sorted by the lock's own number, so every group takes them in one order (after its run locks).
      yield* sql`
        SELECT count(pg_advisory_xact_lock(h)) FROM (
          SELECT DISTINCT hashtextextended(value, 0) AS h FROM jsonb_array_elements_text(${JSON.stringify(need.locks)}::jsonb)
          ORDER BY h
        ) AS locks`
    }
    // A statement of its own: its snapshot is taken after the locks were granted, so it sees every grant before.
    const [row] = yield* sql<{
      readonly now_ms: string
      readonly by_key: ReadonlyArray<{ readonly name: string; readonly key: string; readonly running: number }> | null
      readonly by_workflow: ReadonlyArray<{ readonly name: string; readonly running: number }> | null
      readonly heads: ReadonlyArray<{ readonly name: string; readonly key: string; readonly id: string }> | null
      readonly starts: ReadonlyArray<{ readonly name: string; readonly bucket: string; readonly at: ReadonlyArray<number> | null }> | null
    }>`
      SELECT (extract(epoch FROM now()) * 1000)::bigint::text AS now_ms,
        (SELECT jsonb_agg(c) FROM (
          SELECT k.name, k.key, (SELECT count(*) FROM workflow_runs r
            WHERE r.workflow_name = k.name AND r.concurrency_key = k.key AND r.state = 'running')::int AS running
          FROM jsonb_to_recordset(${JSON.stringify(need.concurrency)}::jsonb) AS k(name text, key text)) c) AS by_key,
        (SELECT jsonb_agg(w) FROM (
          SELECT k.name, (SELECT count(*) FROM workflow_runs r WHERE r.workflow_name = k.name AND r.state = 'running')::int
            AS running
          FROM jsonb_array_elements_text(${JSON.stringify(need.workflows)}::jsonb) AS k(name)) w) AS by_workflow,
        (SELECT jsonb_agg(h) FROM (
          SELECT k.name, k.key, o.id FROM jsonb_to_recordset(${JSON.stringify(need.ordering)}::jsonb) AS k(name text, key text)
          JOIN LATERAL (SELECT r.id FROM workflow_runs r
            WHERE r.workflow_name = k.name AND r.ordering_key = k.key
              AND r.state IN ('pending', 'running', 'sleeping', 'awaiting_event', 'awaiting_child', 'awaiting_retry')
            ORDER BY r.id LIMIT 1) o ON true) h) AS heads,
        (SELECT jsonb_agg(s) FROM (
          SELECT k.name, k.bucket, (SELECT jsonb_agg((extract(epoch FROM r.started_at) * 1000)::bigint ORDER BY r.started_at)
            FROM workflow_runs r
            WHERE r.workflow_name = k.name AND r.rate_limit_key = k.bucket
              AND r.started_at > now() - make_interval(secs => k.period_ms / 1000.0)) AS at
          FROM jsonb_to_recordset(${JSON.stringify(need.rates)}::jsonb) AS k(name text, bucket text, period_ms int)) s) AS starts`
    const flow = ledger.flow
    flow.nowMs = Number(row?.now_ms ?? 0)
    for (const c of row?.by_key ?? []) flow.runningByKey.set(key(c.name, c.key), c.running)
    for (const w of row?.by_workflow ?? []) flow.runningByWorkflow.set(w.name, w.running)
    for (const h of row?.heads ?? []) flow.heads.set(key(h.name, h.key), h.id)
    for (const s of row?.starts ?? []) flow.starts.set(key(s.name, s.bucket), [...(s.at ?? [])].map(Number))
  })

/**
 * Writes the group's flow changes (waits set or cleared, debounced payloads, rate-limit buckets) and announces the
 * runs offered again, so that pollers wake up. Nothing is sent when the group changed none.
 */
export const writeFlow = (sql: SqlClient.SqlClient, ledger: Ledger) => {
  const flow = ledger.flow
  if (flow.patches.size === 0) return Effect.void
  const rows = [...flow.patches].map(([id, patch]) => ({
    id,
    set_waiting: patch.waiting !== undefined,
    waiting_reason: patch.waiting?.reason ?? null,
    waiting_message: patch.waiting?.message ?? null,
    waiting_until_ms: patch.waiting?.untilMs ?? null,
    rate_limit_key: patch.rateLimitKey ?? null,
    payload: patch.debounce === undefined ? null : JSON.stringify(patch.debounce.payload),
    delay_ms: patch.debounce?.delayMs ?? null,
    max_delay_ms: patch.debounce?.maxDelayMs ?? null
  }))
  return sql`
    WITH updated AS (
      UPDATE workflow_runs r SET
        waiting_reason = CASE WHEN p.set_waiting THEN p.waiting_reason ELSE r.waiting_reason END,
        waiting_message = CASE WHEN p.set_waiting THEN p.waiting_message ELSE r.waiting_message END,
        waiting_until = CASE
          WHEN p.delay_ms IS NOT NULL THEN LEAST(now() + make_interval(secs => p.delay_ms / 1000.0),
            r.created_at + make_interval(secs => COALESCE(p.max_delay_ms, p.delay_ms + 1e12) / 1000.0))
          WHEN p.set_waiting THEN to_timestamp(p.waiting_until_ms / 1000.0)
          ELSE r.waiting_until END,
        rate_limit_key = COALESCE(p.rate_limit_key, r.rate_limit_key),
        payload = COALESCE(p.payload::json, r.payload),
        updated_at = now(), revision = r.revision + 1
      FROM jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) AS p(
        id uuid, set_waiting boolean, waiting_reason text, waiting_message text, waiting_until_ms double precision,
        rate_limit_key text, payload text, delay_ms double precision, max_delay_ms double precision)
      WHERE r.id = p.id
      RETURNING r.id
    )
    SELECT count(pg_notify('aiki_runs', json_build_object('runId', id, 'task', NULL, 'state', 'pending')::text))
    FROM updated WHERE id::text IN (SELECT value FROM jsonb_array_elements_text(${JSON.stringify([...flow.offered])}::jsonb))`
}

/** A slot a run gave back (it stopped running), or a turn it passed on (it finished), for `FlowControl` to offer. */
export interface Freed {
  readonly workflowName: string
  readonly workflowVersion: string
  /** The run stopped running: it gave back a slot of its workflow (and of its concurrency key, if it has one). */
  readonly slot: boolean
  readonly concurrencyKey: string | null
  /** Set when the run finished and had an ordering key: the next run of that key may go. */
  readonly orderingKey: string | null
}

/** What the group's committed transitions gave back. */
export const freedBy = (ledger: Ledger, transitions: ReadonlyArray<TransitionRecord>): ReadonlyArray<Freed> =>
  transitions.flatMap((t) => {
    if (t.taskAddress !== null) return []
    const run = ledger.runs.get(t.runId)
    if (run === undefined) return []
    const leftRunning = t.from === "running" && t.to !== "running"
    const finished = isTerminal(t.to as LedgerRun["state"]) && run.flow.orderingKey !== null
    if (!leftRunning && !finished) return []
    return [{
      workflowName: run.workflowName,
      workflowVersion: run.workflowVersion,
      slot: leftRunning,
      concurrencyKey: leftRunning ? run.flow.concurrencyKey : null,
      orderingKey: finished ? run.flow.orderingKey : null
    }]
  })
