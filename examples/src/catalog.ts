/**
 * Every example: what `pnpm example NAME` runs and what `aiki dev`'s worker serves.
 */
import { type Client, toHandle, type WorkflowRunHandle } from "@aiki/sdk"
import { AikiClient } from "@aiki/sdk/effect"
import { Effect } from "effect"
import { OrderProcessing, sampleEffectOrder } from "./effect-order-processing.ts"
import { expenseApproval } from "./expense-approval.ts"
import { morningRoutine, morningRoutineV1, sampleMorning } from "./morning-routine.ts"
import { orderProcessing, orderProcessingV1, sampleOrder } from "./order-processing.ts"

export interface Example {
  readonly name: string
  readonly description: string
  /** Starts a run with the sample payload. */
  readonly start: (client: Client) => Promise<WorkflowRunHandle<unknown>>
}

export const examples: ReadonlyArray<Example> = [
  {
    name: "order-processing",
    description: "validate → payment → inventory → confirmation (promise API)",
    start: (client) => orderProcessingV1.start(client, { payload: sampleOrder })
  },
  {
    name: "morning-routine",
    description: "alarm (retried) → stretch → coffee (promise API)",
    start: (client) => morningRoutineV1.start(client, { payload: sampleMorning })
  },
  {
    name: "effect-order-processing",
    description: "validate → charge (typed PaymentDeclined) → reserve (Effect API)",
    start: async (client) =>
      toHandle(
        client,
        await client.runtime.runPromise(Effect.flatMap(AikiClient, (aiki) => aiki.start(OrderProcessing, sampleEffectOrder)))
      )
  }
]

/** What a worker serving every example registers: promise workflows and Effect workflows. */
export const promiseWorkflows = [orderProcessing, morningRoutine, expenseApproval]
export const effectWorkflows = [OrderProcessing]

/** Everything above, for `aiki dev --workflows examples/src/catalog.ts` (what `pnpm dev` runs). */
export const workflows = [...promiseWorkflows, ...effectWorkflows]
