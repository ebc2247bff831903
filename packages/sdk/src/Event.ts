/**
 * Events a run waits for (approvals, webhooks, signals), declared once with the Schema of their payload so that the
 * workflow that waits (`Workflow.waitForEvent(Approval)`) and the client that sends (`run.sendEvent(Approval, …)`)
 * agree on it: the sender encodes, the workflow gets the payload decoded.
 *
 * @example
 * ```ts
 * const Approval = Event.make("approval", Schema.Struct({ approved: Schema.Boolean, by: Schema.String }))
 *
 * // in the workflow: waits at most a day
 * const approval = yield* Workflow.waitForEvent(Approval, { timeout: "1 day" })   // Option<{ approved, by }>
 * // in the application
 * yield* run.sendEvent(Approval, { approved: true, by: "ann" }, { eventId: webhook.deliveryId })
 * ```
 */
import type * as Schema from "effect/Schema"

const TypeId = "~@aiki/sdk/Event"

export interface Event<S extends Schema.Top> {
  readonly [TypeId]: typeof TypeId
  readonly name: string
  readonly schema: S
}

/** Any event definition, whatever its payload. */
export type Any = Event<Schema.Top>

/** Declares an event: its name (as the API and the CLI send it) and the Schema of its payload. */
export const make = <S extends Schema.Top>(name: string, schema: S): Event<S> => ({ [TypeId]: TypeId, name, schema })

export const isEvent = (value: unknown): value is Any =>
  typeof value === "object" && value !== null && TypeId in value

/** How an event is sent. */
export interface SendOptions {
  /**
   * Makes sending idempotent: sending an event with an id the run already has stores nothing and answers with the
   * first (`duplicate: true`), whether or not it was received; the same id with another name or payload is an
   * `EventConflict`. Use the id of what the event stands for (a webhook's delivery id). @default none
   */
  readonly eventId?: string
}
