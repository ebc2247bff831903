/**
 * Fires schedules: every `SCHEDULER_INTERVAL_MS`, each replica handles the schedules whose fire time has come (see
 * `Schedules.fireDue`; a lease keeps two replicas off one schedule, idempotency keys keep a fire time to one run).
 */
import { Effect, Layer } from "effect"
import { background } from "./DatabaseReady.ts"
import { Schedules } from "./Schedules.ts"
import { ServerConfig } from "./ServerConfig.ts"

export const layer = Layer.effectDiscard(Effect.gen(function*() {
  const config = yield* ServerConfig
  const schedules = yield* Schedules
  yield* background("Scheduler", schedules.fireDue, {
    every: `${config.schedulerIntervalMs} millis`,
    failure: "Firing schedules failed",
    // The first pass, like every later one, comes an interval after the last: a long interval means no pass before it.
    delayFirst: true
  })
}))
