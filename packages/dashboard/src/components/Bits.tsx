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
