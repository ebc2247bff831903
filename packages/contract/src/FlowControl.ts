/**
 * Flow control: how runs of a workflow wait for each other instead of all running at once. A run may carry a
 * priority, a concurrency key (at most `limit` runs with that key running at once), an ordering key (runs with the
 * same key run one at a time, in the order they were started), a rate-limit key (at most `limit` runs started per
 * period), and a debounce key (a start replaces the run with that key that has not started yet). A workflow version
 * declares its limits when its workers register it; a start may override the per-key limit.
 *
 * Everything is decided by the server when a worker claims a run: a run that must wait stays `pending`, holding no
 * worker, and says what it waits for (`WaitingFor`) until it is offered again.
 */
import * as Schema from "effect/Schema"

/**
 * How urgent a run is, 1 (lowest) to 10 (highest). Among the runs a worker could take, higher priorities go first,
 * oldest first within a priority. The policy is strict: a sustained flow of higher-priority runs delays lower ones
 * for as long as it lasts. With Redis Streams, priorities travel in three bands (1–3, 4–7, 8–10), read highest
 * band first and oldest first within a band; the HTTP subscriber orders by the exact priority.
 */
export const Priority = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 10 }, { message: "a priority is an integer from 1 to 10" }))
export type Priority = typeof Priority.Type

/** The priority of a run when neither its start nor its version says otherwise. */
export const defaultPriority = 5

/** The Redis Streams band a priority travels in (see `Priority`). */
export type PriorityBand = "high" | "normal" | "low"

export const bandOf = (priority: number): PriorityBand => priority >= 8 ? "high" : priority <= 3 ? "low" : "normal"

/** A key runs share for a limit, e.g. a customer id. */
export const FlowKey = Schema.String.check(
  Schema.isMinLength(1, { message: "a flow control key is not empty" }),
  Schema.isMaxLength(256, { message: "a flow control key is at most 256 characters" })
)
export type FlowKey = typeof FlowKey.Type

/** How many runs may run (or start) at once. */
export const Limit = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 100_000 }, { message: "a limit is an integer from 1 to 100000" }))

/** At most `limit` runs started per `periodMs`. */
export const RateLimit = Schema.Struct({
  limit: Limit,
  periodMs: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 31 * 86_400_000 }))
})
export type RateLimit = typeof RateLimit.Type

/**
 * The limits a workflow version declares (sent when its workers register it). They apply to every run of the
 * version, whoever started it (the SDK, the CLI, a schedule).
 */
export const FlowPolicy = Schema.Struct({
  /** The priority of its runs unless a start says otherwise. @default 5 */
  priority: Schema.optionalKey(Priority),
  /** At most this many runs with one concurrency key running at once (runs without a key are not limited by it). */
  concurrencyLimit: Schema.optionalKey(Limit),
  /** At most this many runs of the workflow (every version, every key) running at once. */
  workflowLimit: Schema.optionalKey(Limit),
  /** At most `limit` runs started per period, per rate-limit key (runs without a key share one bucket). */
  rateLimit: Schema.optionalKey(RateLimit)
})
export type FlowPolicy = typeof FlowPolicy.Type

/**
 * A start that replaces the run with the same key that has not started yet (its payload becomes this one's): "do
 * this once things calm down". The run starts `delayMs` after the last such start, but no later than `maxDelayMs`
 * after the first one.
 */
export const Debounce = Schema.Struct({
  key: FlowKey,
  delayMs: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 31 * 86_400_000 })),
  maxDelayMs: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 31 * 86_400_000 })))
})
export type Debounce = typeof Debounce.Type

/** The flow control a start asks for, beside the version's declared limits. */
export const StartFlow = {
  /** @default the version's priority, else 5 */
  priority: Schema.optionalKey(Priority),
  /** Runs with the same key share the concurrency limit. */
  concurrencyKey: Schema.optionalKey(FlowKey),
  /** Overrides the version's per-key limit for this run. */
  concurrencyLimit: Schema.optionalKey(Limit),
  /** Runs with the same key run one at a time, in the order they were started. */
  orderingKey: Schema.optionalKey(FlowKey),
  /** The rate-limit bucket of the run (when its version declares a rate limit). @default one bucket per workflow */
  rateLimitKey: Schema.optionalKey(FlowKey)
}

/** Why a pending run waits instead of being handed to a worker. */
export const WaitingReason = Schema.Literals(["concurrency_limit", "workflow_limit", "ordering", "rate_limit", "debounce"])
export type WaitingReason = typeof WaitingReason.Type

/** What a pending run waits for, e.g. "waiting for concurrency key customer-42 (2/2 running)". */
export const WaitingFor = Schema.Struct({
  reason: WaitingReason,
  message: Schema.String,
  /** When it is offered again at the latest (rate limits and debounce); other waits end when a run ends. */
  until: Schema.optionalKey(Schema.DateTimeUtcFromString)
})
export type WaitingFor = typeof WaitingFor.Type
