/**
 * Schedules: each one's timing, its next fire times, its latest runs and how many fire times it skipped, with
 * pause, resume and trigger for roles that may use them. Refreshed every few seconds, since fire times come and go.
 */
import type { Role } from "@aiki/contract/Access"
import type { ScheduleId } from "@aiki/contract/Ids"
import { mayCall } from "@aiki/contract/Permissions"
import type { Schedule, ScheduleSpec } from "@aiki/contract/Schedules"
import { useEffect, useState } from "preact/hooks"
import { type Failure, request } from "../Api.ts"
import { FailureNote, StateBadge, Table } from "../components/Bits.tsx"
import { duration, time } from "../format.ts"
import { href } from "../Router.ts"

const timing = (spec: ScheduleSpec) =>
  "everyMs" in spec ? `every ${duration(spec.everyMs)}` : `${spec.cron}${spec.timezone !== undefined ? ` (${spec.timezone})` : ""}`

export const SchedulesPage = ({ role }: { readonly role: Role }) => {
  const [schedules, setSchedules] = useState<ReadonlyArray<Schedule> | undefined>()
  const [failure, setFailure] = useState<Failure | undefined>()
  const [notice, setNotice] = useState<string | undefined>()
  const load = async () => {
    const outcome = await request((api) => api.schedules.list({ query: {} }))
    if (outcome.ok) setSchedules(outcome.value)
    setFailure(outcome.ok ? undefined : outcome.failure)
  }
  useEffect(() => {
    void load()
    const timer = setInterval(load, 5_000)
    return () => clearInterval(timer)
  }, [])
  const act = async (id: ScheduleId, action: "pause" | "resume" | "trigger") => {
    const params = { params: { id } }
    const outcome = action === "trigger"
      ? await request((api) => api.schedules.trigger(params))
      : await request((api) => action === "pause" ? api.schedules.pause(params) : api.schedules.resume(params))
    if (!outcome.ok) return setFailure(outcome.failure)
    setNotice(action === "trigger" ? `Started a run of ${id}` : `${id} ${action === "pause" ? "paused" : "resumed"}`)
    await load()
  }
  const mayChange = mayCall(role, { group: "schedules", endpoint: "pause" })
  return (
    <section aria-labelledby="schedules-title">
      <h1 id="schedules-title">Schedules</h1>
      <FailureNote failure={failure} />
      {notice !== undefined && <p role="status">{notice}</p>}
      {schedules !== undefined && schedules.length === 0 && (
        <p>
          No schedules yet: declare a <code>trigger</code> on a workflow version, or create one with{" "}
          <code>aiki schedules create</code>.
        </p>
      )}
      {schedules !== undefined && schedules.length > 0 && (
        <Table columns={["Schedule", "Workflow", "Fires", "Next", "Latest runs", "Skipped", ""]} class="schedules">
          {schedules.map((schedule) => (
            <tr key={schedule.id} data-schedule-id={schedule.id}>
              <td class="mono">
                {schedule.id}
                {schedule.declared && <span class="muted"> (declared)</span>}
              </td>
              <td>
                <a href={href.runs({ workflow: schedule.workflowName, version: schedule.workflowVersion })}>
                  {schedule.workflowName}@{schedule.workflowVersion}
                </a>
              </td>
              <td>
                {timing(schedule.spec)}, {schedule.overlap.replace(/_/g, " ")}
                {schedule.paused && <> <StateBadge state="paused" /></>}
              </td>
              <td>
                <ul class="plain">
                  {schedule.nextFireTimes.slice(0, 3).map((t) => <li key={time(t)}>{time(t)}</li>)}
                </ul>
              </td>
              <td>
                <ul class="plain">
                  {schedule.lastRuns.slice(0, 3).map((run) => (
                    <li key={run.runId}>
                      <a class="mono" href={href.run(run.runId)}>{time(run.scheduledFor)}</a> <StateBadge state={run.state} />
                    </li>
                  ))}
                </ul>
              </td>
              <td>{schedule.skippedCount}</td>
              <td>
                {mayChange && (
                  <span>
                    <button type="button" onClick={() => void act(schedule.id, schedule.paused ? "resume" : "pause")}>
                      {schedule.paused ? "Resume" : "Pause"}
                    </button>{" "}
                    <button type="button" onClick={() => void act(schedule.id, "trigger")}>Trigger now</button>
                  </span>
                )}
              </td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  )
}
