/**
 * One run: its header, payload, result or error, the timeline of its tasks and waits, its audit trail, and the
 * actions the caller's role may take (cancel, send an event). Live while the run is going: it follows the run's
 * Server-Sent Events and redraws as tasks and states change.
 */
import type { Role } from "@aiki/contract/Access"
import { EventName, type RunId } from "@aiki/contract/Ids"
import type { Task, Transition, WorkflowRun } from "@aiki/contract/Models"
import { mayCall } from "@aiki/contract/Permissions"
import { isRetryable, isTerminal } from "@aiki/contract/RunState"
import type { FailureReason } from "@aiki/contract/Timeouts"
import { Option, Schema } from "effect"
import type { FunctionComponent } from "preact"
import { useEffect, useState } from "preact/hooks"
import { type Failure, follow, request } from "../Api.ts"
import { FailureNote, JsonBlock, StateBadge, Table } from "../components/Bits.tsx"
import { duration, errorSummary, millis, time, traceId } from "../format.ts"
import { href } from "../Router.ts"

/** Why the server failed a run, said for a person. */
const failureReasonText: { readonly [R in FailureReason]: string } = {
  timed_out: "timed out (execution timeout)",
  poisoned: "poisoned (its lease lapsed too often without progress)",
  schedule_to_start_timed_out: "no worker claimed it in time (schedule-to-start timeout)"
}

const decodeEventName = Schema.decodeUnknownOption(EventName)

type TimelineProps = Parameters<typeof import("../components/Timeline.tsx").Timeline>[0]

/** The timeline (and Chart.js with it) is loaded with the first run page, so the runs list paints without it. */
let timeline: Promise<FunctionComponent<TimelineProps>> | undefined
const loadTimeline = () => (timeline ??= import("../components/Timeline.tsx").then((module) => module.Timeline))

const LazyTimeline = (props: TimelineProps) => {
  const [Timeline, setTimeline] = useState<FunctionComponent<TimelineProps> | undefined>()
  useEffect(() => {
    void loadTimeline().then((component) => setTimeline(() => component))
  }, [])
  return Timeline === undefined ? <p role="status">Loading the timeline…</p> : <Timeline {...props} />
}

interface Loaded {
  readonly run: WorkflowRun
  readonly tasks: ReadonlyArray<Task>
  readonly transitions: ReadonlyArray<Transition>
  /** The runs it started as children (`startChild`). */
  readonly children: ReadonlyArray<WorkflowRun>
}

const Field = ({ label, children }: { readonly label: string; readonly children: preact.ComponentChildren }) => (
  <div class="field">
    <dt>{label}</dt>
    <dd>{children}</dd>
  </div>
)

const CancelAction = ({ id, onDone }: { readonly id: RunId; readonly onDone: (failure?: Failure) => void }) => {
  const [confirming, setConfirming] = useState(false)
  if (!confirming) return <button type="button" class="danger" onClick={() => setConfirming(true)}>Cancel run…</button>
  return (
    <span class="confirm" role="group" aria-label="Confirm cancellation">
      <button
        type="button"
        class="danger"
        autoFocus
        onClick={async () => {
          const outcome = await request((api) => api.runs.cancel({ params: { id } }))
          setConfirming(false)
          onDone(outcome.ok ? undefined : outcome.failure)
        }}
      >
        Yes, cancel this run
      </button>
      <button type="button" onClick={() => setConfirming(false)}>Keep it</button>
    </span>
  )
}

/** Runs a failed or cancelled run again (the same run): completed tasks are replayed, the rest run again. */
const RetryAction = ({ id, onDone }: { readonly id: RunId; readonly onDone: (failure?: Failure) => void }) => {
  const [busy, setBusy] = useState(false)
  return (
    <button
      type="button"
      disabled={busy}
      title="Run it again as the same run: completed tasks are kept, failed and unfinished ones run again"
      onClick={async () => {
        setBusy(true)
        const outcome = await request((api) => api.runs.retry({ params: { id } }))
        setBusy(false)
        onDone(outcome.ok ? undefined : outcome.failure)
      }}
    >
      Retry run
    </button>
  )
}

const SendEventForm = ({ id }: { readonly id: RunId }) => {
  const [name, setName] = useState("")
  const [payload, setPayload] = useState("{}")
  const [message, setMessage] = useState<{ readonly ok: boolean; readonly text: string } | undefined>()
  const submit = async (e: Event) => {
    e.preventDefault()
    const eventName = decodeEventName(name)
    if (Option.isNone(eventName)) {
      return setMessage({ ok: false, text: "The event name is 1 to 128 letters, digits, '.', '_' or '-'" })
    }
    let parsed: Schema.Json
    try {
      parsed = JSON.parse(payload) as Schema.Json
    } catch (error) {
      return setMessage({ ok: false, text: `The payload is not valid JSON: ${String(error)}` })
    }
    const outcome = await request((api) =>
      api.runs.sendEvent({ params: { id, name: eventName.value }, payload: { payload: parsed } })
    )
    setMessage(outcome.ok
      ? { ok: true, text: `Sent; the run is now ${outcome.value.runState}` }
      : { ok: false, text: `${outcome.failure.tag}: ${outcome.failure.message}` })
  }
  return (
    <form class="card send-event" onSubmit={submit} aria-labelledby="send-event-title">
      <h2 id="send-event-title">Send an event</h2>
      <label>
        Event name
        <input name="event" required value={name} onInput={(e) => setName(e.currentTarget.value)} placeholder="approval" />
      </label>
      <label>
        Payload (JSON)
        <textarea name="payload" rows={4} value={payload} onInput={(e) => setPayload(e.currentTarget.value)} />
      </label>
      <button type="submit">Send event</button>
      {message !== undefined && <p role={message.ok ? "status" : "alert"} class={message.ok ? "ok" : "failure"}>{message.text}</p>}
    </form>
  )
}

export const RunPage = ({ id, role }: { readonly id: string; readonly role: Role }) => {
  const [loaded, setLoaded] = useState<Loaded | undefined>()
  const [failure, setFailure] = useState<Failure | undefined>()
  const [now, setNow] = useState(() => Date.now())
  // Bumped after a retry: the run is followed again from its new state (the stream ended when it was final).
  const [generation, setGeneration] = useState(0)
  const runId = id as RunId

  const loadTrail = async () => {
    const [trail, children] = await Promise.all([
      request((api) => api.runs.transitions({ params: { id: runId } })),
      request((api) => api.runs.children({ params: { id: runId } }))
    ])
    setLoaded((current) =>
      current === undefined ? current : {
        ...current,
        ...(trail.ok ? { transitions: trail.value } : {}),
        ...(children.ok ? { children: children.value } : {})
      }
    )
  }

  useEffect(() => {
    let cancelled = false
    setLoaded(undefined)
    void (async () => {
      const [run, tasks, transitions, children] = await Promise.all([
        request((api) => api.runs.status({ params: { id: runId } })),
        request((api) => api.runs.tasks({ params: { id: runId } })),
        request((api) => api.runs.transitions({ params: { id: runId } })),
        request((api) => api.runs.children({ params: { id: runId } }))
      ])
      if (cancelled) return
      if (!run.ok) return setFailure(run.failure)
      setLoaded({
        run: run.value,
        tasks: tasks.ok ? tasks.value : [],
        transitions: transitions.ok ? transitions.value : [],
        children: children.ok ? children.value : []
      })
    })()
    // Live: every change to the run or a task, until the run is final (then the server ends the stream).
    const stop = follow((api) => api.runs.events({ params: { id: runId }, query: {} }), (update) => {
      if (update._tag === "Run") {
        setLoaded((current) => current === undefined ? current : { ...current, run: update.run })
        void loadTrail()
      } else {
        setLoaded((current) => {
          if (current === undefined) return current
          const others = current.tasks.filter((task) => task.address !== update.task.address)
          return { ...current, tasks: [...others, update.task] }
        })
      }
    })
    return () => {
      cancelled = true
      stop()
    }
  }, [id, generation])

  const going = loaded !== undefined && !isTerminal(loaded.run.state)
  useEffect(() => {
    setNow(Date.now())
    if (!going) return
    const timer = setInterval(() => setNow(Date.now()), 1_000)
    return () => clearInterval(timer)
  }, [going, loaded])

  if (loaded === undefined) {
    return (
      <section>
        <h1>Run <span class="mono">{id}</span></h1>
        {failure !== undefined ? <FailureNote failure={failure} /> : <p role="status">Loading…</p>}
      </section>
    )
  }
  const { children, run, tasks, transitions } = loaded
  const end = run.finishedAt !== undefined ? millis(run.finishedAt) : now
  const canCancel = mayCall(role, { group: "runs", endpoint: "cancel" }) && !isTerminal(run.state)
  const canSend = mayCall(role, { group: "runs", endpoint: "sendEvent" }) && !isTerminal(run.state)
  const canRetry = mayCall(role, { group: "runs", endpoint: "retry" }) && isRetryable(run.state)

  return (
    <section aria-labelledby="run-title" class="run">
      <div class="title-row">
        <h1 id="run-title">
          <a href={href.runs({ workflow: run.workflowName, version: run.workflowVersion })}>
            {run.workflowName}@{run.workflowVersion}
          </a>{" "}
          <StateBadge state={run.state} />
        </h1>
        <div class="actions" aria-label="Actions">
          {canCancel && (
            <CancelAction
              id={run.id}
              onDone={(f) => {
                setFailure(f)
              }}
            />
          )}
          {canRetry && (
            <RetryAction
              id={run.id}
              onDone={(f) => {
                setFailure(f)
                if (f === undefined) setGeneration((g) => g + 1)
              }}
            />
          )}
        </div>
      </div>
      <FailureNote failure={failure} />
      <dl class="card header-fields">
        <Field label="Run id"><span class="mono">{run.id}</span></Field>
        <Field label="Started">{time(run.createdAt)}</Field>
        {run.startedAt !== undefined && <Field label="First picked up">{time(run.startedAt)}</Field>}
        {run.finishedAt !== undefined && <Field label="Finished">{time(run.finishedAt)}</Field>}
        <Field label="Duration">{duration(end - millis(run.createdAt))}</Field>
        {run.wakeAt !== undefined && <Field label="Wakes at">{time(run.wakeAt)}</Field>}
        {run.failureReason !== undefined && <Field label="Failed by the server">{failureReasonText[run.failureReason]}</Field>}
        {run.deadlineAt !== undefined && run.finishedAt === undefined && <Field label="Times out at">{time(run.deadlineAt)}</Field>}
        {run.startDeadlineAt !== undefined && <Field label="Must start by">{time(run.startDeadlineAt)}</Field>}
        {run.lapses !== undefined && run.finishedAt === undefined && <Field label="Lease lapses in a row">{run.lapses}</Field>}
        {run.waitingFor !== undefined && <Field label="Waiting for">{run.waitingFor.message}</Field>}
        {run.attempt !== undefined && run.attempt > 1 && <Field label="Workflow attempt">{run.attempt}</Field>}
        {run.startWarning !== undefined && <Field label="Warning"><span class="warning">{run.startWarning}</span></Field>}
        {run.priority !== undefined && run.priority !== 5 && <Field label="Priority">{run.priority}</Field>}
        {run.concurrencyKey !== undefined && <Field label="Concurrency key"><span class="mono">{run.concurrencyKey}</span></Field>}
        {run.orderingKey !== undefined && <Field label="Ordering key"><span class="mono">{run.orderingKey}</span></Field>}
        {run.scheduleId !== undefined && (
          <Field label="Schedule">
            <a class="mono" href={href.schedules()}>{run.scheduleId}</a>
            {run.scheduledFor !== undefined && <> for {time(run.scheduledFor)}</>}
          </Field>
        )}
        {run.parentRunId !== undefined && (
          <Field label="Parent run">
            <a class="mono" href={href.run(run.parentRunId)}>{run.parentRunId}</a>
            {run.parentClosePolicy === "abandon" && <> (runs on if it is cancelled)</>}
          </Field>
        )}
        {run.awaitingChildren !== undefined && (
          <Field label="Waiting for children">
            {run.awaitingChildren.map((child) => <a key={child} class="mono" href={href.run(child)}>{child}</a>)}
          </Field>
        )}
        {run.idempotencyKey !== undefined && <Field label="Idempotency key"><span class="mono">{run.idempotencyKey}</span></Field>}
        {run.leaseOwner !== undefined && <Field label="Worker"><span class="mono">{run.leaseOwner}</span></Field>}
        <Field label="Leases granted">{run.leaseEpoch}</Field>
        {run.traceParent !== undefined && <Field label="Trace id"><span class="mono">{traceId(run.traceParent)}</span></Field>}
      </dl>
      {canSend && <SendEventForm id={run.id} />}
      <div class="values">
        <JsonBlock label="Payload" value={run.payload} />
        {run.result !== undefined && <JsonBlock label="Result" value={run.result} />}
        {run.error !== undefined && (
          <figure class="json error">
            <figcaption>Error</figcaption>
            <p class="error-text">{errorSummary(run.error)}</p>
            {run.error.data !== undefined && <pre tabIndex={0}>{JSON.stringify(run.error.data, null, 2)}</pre>}
            {run.error.stack !== undefined && (
              <details>
                <summary>Stack</summary>
                <pre tabIndex={0}>{run.error.stack}</pre>
              </details>
            )}
          </figure>
        )}
      </div>
      <LazyTimeline run={run} tasks={tasks} transitions={transitions} now={now} />
      {children.length > 0 && (
        <section class="card" aria-labelledby="children-title">
          <h2 id="children-title">Child runs</h2>
          <Table columns={["Run", "Workflow", "State", "Started"]}>
            {children.map((child) => (
              <tr key={child.id}>
                <td><a class="mono" href={href.run(child.id)}>{child.id}</a></td>
                <td>{child.workflowName}@{child.workflowVersion}</td>
                <td><StateBadge state={child.state} /></td>
                <td>{time(child.createdAt)}</td>
              </tr>
            ))}
          </Table>
        </section>
      )}
      <section class="card" aria-labelledby="trail-title">
        <h2 id="trail-title">Audit trail</h2>
        <Table columns={["At", "Of", "From", "To", "Why", "Worker"]} class="trail">
          {transitions.map((t) => (
            <tr key={t.id}>
              <td>+{duration(millis(t.at) - millis(run.createdAt))}</td>
              <td>{t.taskAddress === undefined ? "run" : (tasks.find((task) => task.address === t.taskAddress)?.name ?? "task")}</td>
              <td>{t.fromState ?? ""}</td>
              <td>{t.toState}</td>
              <td>{t.reason}</td>
              <td class="mono">{t.workerId ?? ""}</td>
            </tr>
          ))}
        </Table>
      </section>
    </section>
  )
}
