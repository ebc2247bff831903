/**
 * User onboarding, one of the processes Aiki's core concepts name: create the account, send a verification email,
 * wait for the user to verify it (an event: the run is parked on the server, holding no worker, for as long as
 * that takes), welcome them, then after a while send tips for getting started (a durable sleep: a restart or a
 * redeploy in between does not send the welcome twice or forget the tips).
 *
 * In production the verification link's handler sends the event (`handle.sendEvent("email-verified", …)`, or
 * `POST /workflow-runs/:id/events/email-verified`) and the tips wait days; the sample waits a second.
 */
import { task, workflow } from "@aiki/sdk"

export interface Signup {
  readonly email: string
  readonly name: string
  /** How long after the welcome the tips go out. */
  readonly tipsAfterMs: number
}

interface Verified {
  readonly verifiedAt: string
}

const createAccount = task({
  name: "create-account",
  // Idempotent by email: a retry after a crash finds the same account instead of making a second one.
  run: async ({ payload }: { payload: Signup }) => ({ userId: `user-${payload.email.split("@")[0]}`, email: payload.email })
})

const sendEmail = task({
  name: "send-email",
  retry: { type: "exponential", maxAttempts: 5, baseDelayMs: 200 },
  run: async ({ payload }: { payload: { readonly to: string; readonly template: string } }) =>
    `${payload.template} sent to ${payload.to}`
})

export const userOnboarding = workflow({ name: "user-onboarding" })

export const userOnboardingV1 = userOnboarding.v("1.0.0", {
  async run(ctx, signup: Signup) {
    const account = await createAccount.start(ctx, { payload: signup })
    const sent = [await sendEmail.start(ctx, { payload: { to: account.email, template: "verify-email" } })]
    const { verifiedAt } = await ctx.waitForEvent<Verified>("email-verified")
    sent.push(await sendEmail.start(ctx, { payload: { to: account.email, template: "welcome" } }))
    await ctx.sleep(signup.tipsAfterMs)
    sent.push(await sendEmail.start(ctx, { payload: { to: account.email, template: "getting-started-tips" } }))
    return { userId: account.userId, verifiedAt, sent }
  }
})

export const sampleSignup: Signup = { email: "ada@example.com", name: "Ada", tipsAfterMs: 1_000 }
