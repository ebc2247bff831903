/**
 * The workflow versions workers registered, with their JSON Schemas and their runs by state, and a form to start a
 * run whose payload is checked against the version's payload schema before it is sent (the schema is turned into
 * an Effect Schema in the browser, loaded only on this page).
 */
import type { Role } from "@aiki/contract/Access"
import type { IdempotencyKey, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { Json, RegisteredWorkflow, WorkflowRunCounts } from "@aiki/contract/Models"
import { mayCall } from "@aiki/contract/Permissions"
import { RunState } from "@aiki/contract/RunState"
import { useEffect, useState } from "preact/hooks"
import { type Failure, request } from "../Api.ts"
import { FailureNote, JsonBlock, StateBadge } from "../components/Bits.tsx"
import { time } from "../format.ts"
import { href, navigate } from "../Router.ts"

interface Version {
  readonly name: WorkflowName
  readonly version: WorkflowVersion
  readonly registered: RegisteredWorkflow | undefined
  readonly counts: WorkflowRunCounts | undefined
}

const StartForm = ({ workflow }: { readonly workflow: Version }) => {
  const [payload, setPayload] = useState("{}")
  const [key, setKey] = useState("")
  const [problems, setProblems] = useState<ReadonlyArray<string>>([])
  const [failure, setFailure] = useState<Failure | undefined>()
  const fieldId = `payload-${workflow.name}-${workflow.version}`
  const submit = async (e: Event) => {
    e.preventDefault()
    let value: Json
    try {
      value = JSON.parse(payload) as Json
    } catch (error) {
      return setProblems([`Not valid JSON: ${String(error)}`])
    }
    const schema = workflow.registered?.payloadSchema
    if (schema !== undefined) {
      const { validate } = await import("../validate.ts")
      const found = validate(schema, value)
      setProblems(found)
      if (found.length > 0) return
    } else {
      setProblems([])
    }
    const outcome = await request((api) =>
      api.workflows.start({
        params: { name: workflow.name, version: workflow.version },
        payload: { payload: value, ...(key !== "" ? { idempotencyKey: key as IdempotencyKey } : {}) }
      })
    )
    if (outcome.ok) navigate(href.run(outcome.value.id))
    else setFailure(outcome.failure)
  }
  return (
    <form class="start" onSubmit={submit} aria-label={`Start a run of ${workflow.name}@${workflow.version}`}>
      <label for={fieldId}>Payload (JSON{workflow.registered?.payloadSchema !== undefined ? ", checked against the schema" : ""})</label>
      <textarea
        id={fieldId}
        name="payload"
        rows={5}
        value={payload}
        aria-invalid={problems.length > 0}
        aria-describedby={`${fieldId}-problems`}
        onInput={(e) => setPayload(e.currentTarget.value)}
      />
      <label>
        Idempotency key (optional)
        <input name="idempotencyKey" value={key} onInput={(e) => setKey(e.currentTarget.value)} />
      </label>
      <ul id={`${fieldId}-problems`} class="problems" role={problems.length > 0 ? "alert" : undefined}>
        {problems.map((problem) => <li key={problem}>{problem}</li>)}
      </ul>
      <FailureNote failure={failure} />
      <button type="submit">Start run</button>
    </form>
  )
}

export const WorkflowsPage = ({ role }: { readonly role: Role }) => {
  const [versions, setVersions] = useState<ReadonlyArray<Version> | undefined>()
  const [failure, setFailure] = useState<Failure | undefined>()
  useEffect(() => {
    void (async () => {
      const [registered, counts] = await Promise.all([
        request((api) => api.workflows.list()),
        request((api) => api.workflows.counts())
      ])
      if (!registered.ok) return setFailure(registered.failure)
      if (!counts.ok) return setFailure(counts.failure)
      const id = (w: { readonly name: string; readonly version: string }) => `${w.name}@${w.version}`
      const all = new Map<string, Version>()
      for (const c of counts.value) all.set(id(c), { name: c.name, version: c.version, registered: undefined, counts: c })
      for (const r of registered.value) {
        all.set(id(r), { name: r.name, version: r.version, registered: r, counts: all.get(id(r))?.counts })
      }
      setVersions([...all.values()].sort((a, b) => id(a).localeCompare(id(b))))
    })()
  }, [])
  const canStart = mayCall(role, { group: "workflows", endpoint: "start" })
  return (
    <section aria-labelledby="workflows-title">
      <h1 id="workflows-title">Workflows</h1>
      <FailureNote failure={failure} />
      {versions?.length === 0 && <p>No workflow has been registered or started yet.</p>}
      {versions?.map((w) => (
        <article key={`${w.name}@${w.version}`} class="card workflow" aria-labelledby={`wf-${w.name}-${w.version}`}>
          <h2 id={`wf-${w.name}-${w.version}`}>
            <a href={href.runs({ workflow: w.name, version: w.version })}>{w.name}@{w.version}</a>
          </h2>
          {w.registered !== undefined
            ? <p class="muted">Registered {time(w.registered.firstRegisteredAt)}; last {time(w.registered.lastRegisteredAt)}</p>
            : <p class="muted">No worker has registered this version.</p>}
          {w.counts !== undefined && (
            <ul class="counts plain" aria-label="Runs by state">
              <li>total <strong>{w.counts.total}</strong></li>
              {RunState.literals.filter((s) => (w.counts?.byState[s] ?? 0) > 0).map((s) => (
                <li key={s}>
                  <a href={href.runs({ workflow: w.name, version: w.version, state: s })}>
                    <StateBadge state={s} /> <strong>{w.counts?.byState[s]}</strong>
                  </a>
                </li>
              ))}
            </ul>
          )}
          {w.registered?.payloadSchema !== undefined && (
            <details>
              <summary>Payload schema</summary>
              <JsonBlock label="Payload (JSON Schema)" value={w.registered.payloadSchema} />
            </details>
          )}
          {w.registered?.resultSchema !== undefined && (
            <details>
              <summary>Result schema</summary>
              <JsonBlock label="Result (JSON Schema)" value={w.registered.resultSchema} />
            </details>
          )}
          {canStart && (
            <details>
              <summary>Start a run</summary>
              <StartForm workflow={w} />
            </details>
          )}
        </article>
      ))}
    </section>
  )
}
