/**
 * Small pieces every page uses: a run state, a JSON value, a failure.
 */
import type { Failure } from "../Api.ts"
import { json } from "../format.ts"

export const StateBadge = ({ state }: { readonly state: string }) => (
  <span class={`state state-${state}`}>{state.replace(/_/g, " ")}</span>
)

export const JsonBlock = ({ label, value }: { readonly label: string; readonly value: unknown }) => (
  <figure class="json">
    <figcaption>{label}</figcaption>
    <pre tabIndex={0}>{json(value)}</pre>
  </figure>
)

export const FailureNote = ({ failure }: { readonly failure: Failure | undefined }) =>
  failure === undefined ? null : (
    <p role="alert" class="failure">
      <strong>{failure.tag}</strong>: {failure.message}
    </p>
  )

/** A table that scrolls sideways on narrow screens, with its column headings. */
export const Table = (
  { children, columns, ...attributes }: {
    readonly columns: ReadonlyArray<string>
    readonly children: preact.ComponentChildren
    readonly class?: string
    readonly "aria-label"?: string
    readonly "aria-describedby"?: string
  }
) => (
  <div class="table-scroll">
    <table {...attributes}>
      <thead>
        <tr>
          {columns.map((column) => <th key={column} scope="col">{column}</th>)}
        </tr>
      </thead>
      <tbody>{children}</tbody>
    </table>
  </div>
)
