/**
 * The run's timeline: a waterfall of floating bars (Chart.js) over the time since the run started, and the same
 * bars as a table for keyboards, screen readers and exact numbers.
 */
import type { Task, Transition, WorkflowRun } from "@aiki/contract/Models"
import { BarController, BarElement, CategoryScale, Chart, LinearScale, Tooltip } from "chart.js"
import { useEffect, useRef } from "preact/hooks"
import { duration } from "../format.ts"
import { Table } from "./Bits.tsx"
import { type Bar, bars, colours } from "../timeline.ts"

Chart.register(BarController, BarElement, CategoryScale, LinearScale, Tooltip)

interface Props {
  readonly run: WorkflowRun
  readonly tasks: ReadonlyArray<Task>
  readonly transitions: ReadonlyArray<Transition>
  readonly now: number
}

const describe = (bar: Bar) =>
  `${bar.what}: ${duration(bar.end - bar.start)} (from +${duration(bar.start)})${bar.error !== undefined ? ` — ${bar.error}` : ""}`

export const Timeline = ({ now, run, tasks, transitions }: Props) => {
  const canvas = useRef<HTMLCanvasElement>(null)
  const chart = useRef<Chart<"bar", Array<{ x: [number, number]; y: string }>> | null>(null)
  const data = bars(run, tasks, transitions, now)
  const rows = [...new Set(data.map((bar) => bar.row))]

  useEffect(() => {
    if (canvas.current === null) return
    const dark = window.matchMedia("(prefers-color-scheme: dark)").matches
    const text = dark ? "#e6e8eb" : "#1f2329"
    const grid = dark ? "#3a3f47" : "#dfe2e6"
    chart.current = new Chart(canvas.current, {
      type: "bar",
      data: { labels: [], datasets: [] },
      options: {
        indexAxis: "y",
        animation: false,
        maintainAspectRatio: false,
        responsive: true,
        scales: {
          x: {
            type: "linear",
            min: 0,
            ticks: { color: text, callback: (value) => `+${duration(Number(value))}` },
            grid: { color: grid }
          },
          y: { type: "category", ticks: { color: text, autoSkip: false }, grid: { display: false } }
        },
        plugins: {
          tooltip: {
            callbacks: {
              label: (item) => {
                const bar = (item.dataset as { bars?: ReadonlyArray<Bar> }).bars?.[item.dataIndex]
                return bar === undefined ? "" : describe(bar)
              }
            }
          }
        }
      }
    })
    return () => chart.current?.destroy()
  }, [])

  useEffect(() => {
    const current = chart.current
    if (current === null) return
    current.data.labels = rows
    current.data.datasets = [{
      data: data.map((bar) => ({ x: [bar.start, Math.max(bar.end, bar.start + 1)], y: bar.row })),
      backgroundColor: data.map((bar) => colours[bar.kind]),
      borderSkipped: false,
      borderRadius: 3,
      grouped: false,
      barPercentage: 0.7,
      categoryPercentage: 1,
      // The bars behind each data point, for the tooltip.
      ...({ bars: data } as object)
    }]
    current.update()
  })

  return (
    <section aria-labelledby="timeline-title" class="card">
      <h2 id="timeline-title">Timeline</h2>
      <ul class="legend" aria-label="Legend">
        {(Object.keys(colours) as Array<keyof typeof colours>).map((kind) => (
          <li key={kind}>
            <span class="swatch" style={{ background: colours[kind] }} aria-hidden="true" />
            {kind}
          </li>
        ))}
      </ul>
      <div class="chart" style={{ height: `${Math.max(120, rows.length * 34 + 60)}px` }}>
        <canvas
          ref={canvas}
          role="img"
          aria-label={`Timeline of the run: ${rows.length} rows; the table below lists every bar`}
        />
      </div>
      <Table columns={["Row", "What", "Start", "Duration", "Outcome"]} class="attempts" aria-label="Timeline bars">
        {data.map((bar, i) => (
          <tr key={i} data-kind={bar.kind}>
            <td>{bar.row}</td>
            <td>{bar.what}</td>
            <td>+{duration(bar.start)}</td>
            <td>{duration(bar.end - bar.start)}</td>
            <td>
              <span class={`kind kind-${bar.kind}`}>{bar.kind}</span>
              {bar.error !== undefined && <div class="error-text">{bar.error}</div>}
            </td>
          </tr>
        ))}
      </Table>
    </section>
  )
}
