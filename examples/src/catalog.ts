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
import { sampleSignup, userOnboarding, userOnboardingV1 } from "./user-onboarding.ts"

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
    name: "user-onboarding",
    description: "account → verify email (waits for the event) → welcome → tips after a sleep (promise API)",
    start: async (client) => {
      const handle = await userOnboardingV1.start(client, { payload: sampleSignup })
      // The user clicks the verification link once the email is out: the run is parked waiting for it by then.
      // (An event sent earlier would be kept until the run waits for it.)
      for (let i = 0; i < 300 && (await handle.getStatus()).state !== "awaiting_event"; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      await handle.sendEvent("email-verified", { verifiedAt: new Date().toISOString() })
      return handle
    }
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
export const promiseWorkflows = [orderProcessing, morningRoutine, expenseApproval, userOnboarding]
export const effectWorkflows = [OrderProcessing]

/** Everything above, for `aiki dev --workflows examples/src/catalog.ts` (what `pnpm dev` runs). */
export const workflows = [...promiseWorkflows, ...effectWorkflows]
