/**
 * Order processing with the promise API: validate the order, charge the payment, reserve inventory, send the
 * confirmation. Each step is a task, so a crash after the payment never charges twice: the replay returns the
 * recorded payment and carries on with the inventory.
 */
import { task, workflow } from "@aiki/sdk"
import { setTimeout as sleep } from "node:timers/promises"

export interface Order {
  readonly orderId: string
  readonly email: string
  readonly items: ReadonlyArray<{ readonly sku: string; readonly quantity: number; readonly price: number }>
}

const validateOrder = task({
  name: "validate-order",
  run: async ({ payload }: { payload: Order }) => {
    if (payload.items.length === 0) throw new Error(`order ${payload.orderId} has no items`)
    const amount = payload.items.reduce((sum, item) => sum + item.quantity * item.price, 0)
    return { orderId: payload.orderId, amount, paymentId: `pay-${payload.orderId}` }
  }
})

const processPayment = task({
  name: "process-payment",
  retry: { type: "exponential", maxAttempts: 3, baseDelayMs: 200 },
  run: async ({ payload, signal }: { payload: { paymentId: string; amount: number }; signal: AbortSignal }) => {
    await sleep(50, undefined, { signal }) // the payment provider's latency
    return { chargeId: `ch-${payload.paymentId}`, amount: payload.amount }
  }
})

const updateInventory = task({
  name: "update-inventory",
  run: async ({ payload }: { payload: { items: Order["items"] } }) => ({
    reserved: payload.items.map((item) => `${item.sku}x${item.quantity}`)
  })
})

const sendConfirmation = task({
  name: "send-confirmation",
  run: async ({ payload }: { payload: { email: string; orderId: string } }) => ({
    sentTo: payload.email,
    subject: `Order ${payload.orderId} confirmed`
  })
})

export const orderProcessing = workflow({ name: "order-processing" })

export const orderProcessingV1 = orderProcessing.v("1.0.0", {
  async run(ctx, payload: Order) {
    const validation = await validateOrder.start(ctx, { payload })
    const payment = await processPayment.start(ctx, {
      payload: { paymentId: validation.paymentId, amount: validation.amount }
    })
    const inventory = await updateInventory.start(ctx, { payload: { items: payload.items } })
    const confirmation = await sendConfirmation.start(ctx, {
      payload: { email: payload.email, orderId: validation.orderId }
    })
    return { success: true, orderId: validation.orderId, chargeId: payment.chargeId, ...inventory, ...confirmation }
  }
})

export const sampleOrder: Order = {
  orderId: "order-1001",
  email: "customer@example.com",
  items: [{ sku: "item-1", quantity: 2, price: 12.5 }, { sku: "item-2", quantity: 1, price: 30 }]
}
