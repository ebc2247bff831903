/**
 * Every run, newest first: filters (workflow, version, state, start time), search by run id or idempotency key,
 * counts by state, pages. Live: the list and counts refresh when the server reports runs changing.
 */
import { type RunId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { RunCounts, RunPage, WorkflowRunCounts } from "@aiki/contract/Models"
import { RunState } from "@aiki/contract/RunState"
import { DateTime, Option, Schema } from "effect"
import { useEffect, useRef, useState } from "preact/hooks"
import { type Failure, follow, request } from "../Api.ts"
import { FailureNote, StateBadge, Table } from "../components/Bits.tsx"
import { duration, millis, time } from "../format.ts"
import { href, navigate } from "../Router.ts"

const decodeName = Schema.decodeUnknownOption(WorkflowName)
const decodeVersion = Schema.decodeUnknownOption(WorkflowVersion)
const decodeState = Schema.decodeUnknownOption(RunState)

/** A `datetime-local` value (the reader's zone) as an instant. */
const instant = (value: string | null) => {
  if (value === null || value === "") return undefined
  const date = new Date(value)
  return Number.isNaN(date.getTime()) ? undefined : DateTime.makeUnsafe(date)
}

/** The filters in the address bar, as the API's typed query. */
const filtersOf = (query: URLSearchParams) => {
  const workflow = Option.getOrUndefined(decodeName(query.get("workflow") ?? ""))
  const version = Option.getOrUndefined(decodeVersion(query.get("version") ?? ""))
  const from = instant(query.get("from"))
  const to = instant(query.get("to"))
  return {
    ...(workflow !== undefined ? { workflow } : {}),
    ...(version !== undefined ? { version } : {}),
    ...(from !== undefined ? { from } : {}),
    ...(to !== undefined ? { to } : {})
  }
}

const pageSize = 25

export const RunsPage = ({ query }: { readonly query: URLSearchParams }) => {
  const [page, setPage] = useState<RunPage | undefined>()
  const [counts, setCounts] = useState<RunCounts | undefined>()
  const [workflows, setWorkflows] = useState<ReadonlyArray<WorkflowRunCounts>>([])
  const [failure, setFailure] = useState<Failure | undefined>()
  const [cursors, setCursors] = useState<ReadonlyArray<RunId>>([])
  const [live, setLive] = useState(false)
  const [now, setNow] = useState(() => Date.now())
  const key = query.toString()
  const filters = filtersOf(query)
  const state = Option.getOrUndefined(decodeState(query.get("state") ?? ""))
  const search = query.get("q") ?? ""
  const cursor = cursors[cursors.length - 1]

  const load = async () => {
    const [listed, counted] = await Promise.all([
      request((api) =>
        api.runs.list({
          query: {
            ...filters,
            ...(state !== undefined ? { state } : {}),
            ...(search !== "" ? { q: search } : {}),
            limit: pageSize,
            ...(cursor !== undefined ? { cursor } : {})
          }
        })
      ),
      request((api) => api.runs.counts({ query: filters }))
    ])
    setNow(Date.now())
    if (listed.ok) setPage(listed.value)
    if (counted.ok) setCounts(counted.value)
    setFailure(!listed.ok ? listed.failure : !counted.ok ? counted.failure : undefined)
  }
  const latest = useRef(load)
  latest.current = load

  useEffect(() => setCursors([]), [key])
  useEffect(() => {
    void load()
  }, [key, cursor])
  useEffect(() => {
    void request((api) => api.workflows.counts()).then((outcome) => outcome.ok && setWorkflows(outcome.value))
    // Refresh at most every half second, however many runs change.
    let pending: ReturnType<typeof setTimeout> | undefined
    return follow((api) => api.runs.activity(), (event) => {
      if (event._tag === "Connected") setLive(true)
      if (event._tag !== "Changed" || pending !== undefined) return
      pending = setTimeout(() => {
        pending = undefined
        void latest.current()
      }, 500)
    }, { onFailure: () => setLive(false) })
  }, [])

  const setQuery = (changes: Record<string, string | undefined>) => {
    const next = Object.fromEntries(query.entries())
    navigate(href.runs({ ...next, ...changes }))
  }
  const names = [...new Set(workflows.map((w) => w.name))]
  const versions = workflows.filter((w) => w.name === query.get("workflow")).map((w) => w.version)

  return (
    <section aria-labelledby="runs-title">
      <div class="title-row">
        <h1 id="runs-title">Runs</h1>
        <span class={`live ${live ? "on" : ""}`} role="status">{live ? "Live" : "Connecting…"}</span>
      </div>
      {counts !== undefined && (
        <nav aria-label="Runs by state" class="counts">
          <a href={href.runs({ ...Object.fromEntries(query.entries()), state: undefined })} aria-current={state === undefined ? "true" : undefined}>
            all <strong>{counts.total}</strong>
          </a>
          {RunState.literals.filter((s) => counts.byState[s] > 0 || s === state).map((s) => (
            <a key={s} href={href.runs({ ...Object.fromEntries(query.entries()), state: s })} aria-current={s === state ? "true" : undefined} data-state={s}>
              <StateBadge state={s} /> <strong>{counts.byState[s]}</strong>
            </a>
          ))}
        </nav>
      )}
      <form
        class="filters"
        role="search"
        onSubmit={(e) => {
          e.preventDefault()
          const data = new FormData(e.currentTarget)
          setQuery(Object.fromEntries([...data.entries()].map(([k, v]) => [k, String(v)])))
        }}
      >
        <label>
          Search
          <input name="q" type="search" placeholder="run id or idempotency key" value={search} />
        </label>
        <label>
          Workflow
          <select name="workflow" value={query.get("workflow") ?? ""}>
            <option value="">any</option>
            {names.map((name) => <option key={name} value={name}>{name}</option>)}
          </select>
        </label>
        <label>
          Version
          <select name="version" value={query.get("version") ?? ""}>
            <option value="">any</option>
            {versions.map((version) => <option key={version} value={version}>{version}</option>)}
          </select>
        </label>
        <label>
          State
          <select name="state" value={state ?? ""}>
            <option value="">any</option>
            {RunState.literals.map((s) => <option key={s} value={s}>{s}</option>)}
          </select>
        </label>
        <label>
          Started after
          <input name="from" type="datetime-local" value={query.get("from") ?? ""} />
        </label>
        <label>
          Started before
          <input name="to" type="datetime-local" value={query.get("to") ?? ""} />
        </label>
        <button type="submit">Apply</button>
      </form>
      <FailureNote failure={failure} />
      {page !== undefined && (
        <Table columns={["Run", "Workflow", "State", "Started", "Duration", "Idempotency key"]} class="runs" aria-describedby="runs-title">
          {page.runs.length === 0 && (
            <tr>
              <td colSpan={6} class="empty">No runs match.</td>
            </tr>
          )}
          {page.runs.map((run) => (
            <tr key={run.id} data-run-id={run.id} data-state={run.state}>
              <td><a href={href.run(run.id)} class="mono">{run.id}</a></td>
              <td>{run.workflowName}@{run.workflowVersion}</td>
              <td><StateBadge state={run.state} /></td>
              <td>{time(run.createdAt)}</td>
              <td>{duration((run.finishedAt !== undefined ? millis(run.finishedAt) : now) - millis(run.createdAt))}</td>
              <td class="mono">{run.idempotencyKey ?? ""}</td>
            </tr>
          ))}
        </Table>
      )}
      <nav class="pager" aria-label="Pages">
        <button type="button" disabled={cursors.length === 0} onClick={() => setCursors(cursors.slice(0, -1))}>
          Newer
        </button>
        <button
          type="button"
          disabled={page?.nextCursor === undefined}
          onClick={() => page?.nextCursor !== undefined && setCursors([...cursors, page.nextCursor as RunId])}
        >
          Older
        </button>
      </nav>
    </section>
  )
}
