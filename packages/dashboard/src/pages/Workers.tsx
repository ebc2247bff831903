/**
 * The fleet: every worker with its health (heartbeat age), the versions it serves, its capacity and the runs it
 * holds. Refreshed every few seconds, since heartbeat ages move with the clock.
 */
import type { WorkerSummary } from "@aiki/contract/Models"
import { useEffect, useState } from "preact/hooks"
import { type Failure, request } from "../Api.ts"
import { FailureNote, Table } from "../components/Bits.tsx"
import { ago, time } from "../format.ts"
import { href } from "../Router.ts"

export const WorkersPage = () => {
  const [workers, setWorkers] = useState<ReadonlyArray<WorkerSummary> | undefined>()
  const [failure, setFailure] = useState<Failure | undefined>()
  useEffect(() => {
    const load = async () => {
      const outcome = await request((api) => api.fleet.workers())
      if (outcome.ok) setWorkers(outcome.value)
      setFailure(outcome.ok ? undefined : outcome.failure)
    }
    void load()
    const timer = setInterval(load, 5_000)
    return () => clearInterval(timer)
  }, [])
  return (
    <section aria-labelledby="workers-title">
      <h1 id="workers-title">Workers</h1>
      <FailureNote failure={failure} />
      {workers !== undefined && workers.length === 0 && <p>No worker has registered yet.</p>}
      {workers !== undefined && workers.length > 0 && (
        <Table columns={["Worker", "Health", "Serves", "Runs held", "Registered"]} class="workers">
          {workers.map((worker) => (
            <tr key={worker.id} data-worker-id={worker.id}>
              <td class="mono">{worker.id}</td>
              <td>
                <span class={`state state-${worker.status === "healthy" ? "completed" : "failed"}`}>{worker.status}</span>{" "}
                heartbeat {ago(worker.heartbeatAgeMs)}
              </td>
              <td>
                <ul class="plain">
                  {worker.workflows.map((w) => (
                    <li key={`${w.name}@${w.version}`}>
                      <a href={href.runs({ workflow: w.name, version: w.version })}>{w.name}@{w.version}</a>
                    </li>
                  ))}
                </ul>
              </td>
              <td>
                <meter
                  min={0}
                  max={worker.maxConcurrentRuns ?? Math.max(1, worker.runsInFlight)}
                  value={worker.runsInFlight}
                  aria-label={`${worker.runsInFlight} of ${worker.maxConcurrentRuns ?? "unlimited"} runs`}
                />{" "}
                {worker.runsInFlight} / {worker.maxConcurrentRuns ?? "?"}
                <ul class="plain">
                  {worker.heldRuns.map((id) => <li key={id}><a class="mono" href={href.run(id)}>{id.slice(0, 13)}…</a></li>)}
                </ul>
              </td>
              <td>{time(worker.registeredAt)}</td>
            </tr>
          ))}
        </Table>
      )}
    </section>
  )
}
