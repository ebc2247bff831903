/**
 * Order processing with the Effect API: Schema-typed payloads, results and errors. A declined card is the
 * workflow's declared error, so the caller gets `PaymentDeclined` back decoded, not a string.
 */
import { Task, Workflow } from "@aiki/sdk/effect"
import { Effect, Schema } from "effect"

export class PaymentDeclined extends Schema.TaggedError<PaymentDeclined>()("PaymentDeclined", {
  orderId: Schema.String,
  reason: Schema.String
}) {}

const Item = Schema.Struct({ sku: Schema.String, quantity: Schema.Int, price: Schema.Number })
export const Order = Schema.Struct({ orderId: Schema.String, email: Schema.String, items: Schema.Array(Item) })

const ValidateOrder = Task.make("validate-order", {
  payload: Order,
  success: Schema.Struct({ orderId: Schema.String, amount: Schema.Number }),
  run: (order) =>
    Effect.succeed({ orderId: order.orderId, amount: order.items.reduce((sum, i) => sum + i.quantity * i.price, 0) })
})

const ChargeCard = Task.make("charge-card", {
  payload: Schema.Struct({ orderId: Schema.String, amount: Schema.Number }),
  success: Schema.Struct({ chargeId: Schema.String }),
  error: PaymentDeclined,
  retry: { type: "exponential", maxAttempts: 3, baseDelayMs: 100 },
  run: ({ amount, orderId }) =>
    amount > 1_000
      ? Effect.fail(new PaymentDeclined({ orderId, reason: "amount over the card's limit" }))
      : Effect.succeed({ chargeId: `ch-${orderId}` })
})

const ReserveInventory = Task.make("reserve-inventory", {
  payload: Schema.Array(Item),
  success: Schema.Array(Schema.String),
  run: (items) => Effect.succeed(items.map((item) => `${item.sku}x${item.quantity}`))
})

export const OrderProcessing = Workflow.make("effect-order-processing", "1.0.0", {
  payload: Order,
  success: Schema.Struct({ orderId: Schema.String, chargeId: Schema.String, reserved: Schema.Array(Schema.String) }),
  error: PaymentDeclined,
  run: (order) =>
    Effect.gen(function*() {
      const { amount, orderId } = yield* ValidateOrder.start(order)
      const { chargeId } = yield* ChargeCard.start({ orderId, amount })
      const reserved = yield* ReserveInventory.start(order.items)
      return { orderId, chargeId, reserved }
    })
})

export const sampleEffectOrder: typeof Order.Type = {
  orderId: "order-2002",
  email: "customer@example.com",
  items: [{ sku: "book", quantity: 3, price: 20 }]
}
