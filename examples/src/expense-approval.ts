/**
 * An expense that needs a person's approval: the run waits for an `approval` event, durably and without holding a
 * worker, then reimburses or rejects. Send the event with `pnpm aiki runs send-event RUN approval --payload
 * '{"approved":true,"by":"ann"}'` or `handle.sendEvent("approval", …)`.
 */
import { task, workflow } from "@aiki/sdk"

export interface Expense {
  readonly expenseId: string
  readonly employee: string
  readonly amount: number
}

interface Approval {
  readonly approved: boolean
  readonly by: string
}

const reimburse = task({
  name: "reimburse",
  run: async ({ payload }: { payload: Expense }) => ({ transferId: `tr-${payload.expenseId}`, amount: payload.amount })
})

export const expenseApproval = workflow({ name: "expense-approval" })

export const expenseApprovalV1 = expenseApproval.v("1.0.0", {
  async run(ctx, expense: Expense) {
    const approval = await ctx.waitForEvent<Approval>("approval")
    if (!approval.approved) return { status: "rejected", by: approval.by }
    const transfer = await reimburse.start(ctx, { payload: expense })
    return { status: "reimbursed", by: approval.by, ...transfer }
  }
})

export const sampleExpense: Expense = { expenseId: "exp-42", employee: "ann", amount: 120 }
