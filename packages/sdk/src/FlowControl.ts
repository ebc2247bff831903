/**
 * Flow control and schedules of a workflow version, as its definition declares them: its priority, concurrency
 * limits (per key, or for the whole workflow), an ordering key, a rate limit, and the schedule that starts it
 * (its `trigger`). Keys are computed from each run's payload by the client that starts it; the limits travel to
 * the server when a worker registers the version, and apply to every run of it whoever starts it.
 *
 * The server decides at claim time: a run that must wait stays pending, holding no worker, and its status says what
 * it waits for ("waiting for concurrency key customer-42 (2/2 running)").
 *
 * @example
 * ```ts
 * const SyncCustomer = Workflow.make("sync-customer", "1.0.0", {
 *   payload: Schema.Struct({ customerId: Schema.String }),
 *   success: Schema.Void,
 *   concurrency: { key: (p) => p.customerId, limit: 2, workflowLimit: 20 },
 *   rateLimit: { limit: 100, period: "1 minute" },
 *   run: (p) => …
 * })
 * const NightlyReport = Workflow.make("nightly-report", "1.0.0", {
 *   payload: Schema.Null, success: Schema.Void,
 *   trigger: { cron: "0 2 * * *", timezone: "Europe/Paris", payload: null },
 *   run: () => …
 * })
 * ```
 */
import type { FlowPolicy } from "@aiki/contract/FlowControl"
import type { ScheduleSpec, OverlapPolicy } from "@aiki/contract/Schedules"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Schema from "effect/Schema"
import * as JsonCodec from "./internal/json.ts"

export type { OverlapPolicy }

/** When a schedule fires: a cron expression in a time zone, or a fixed interval. */
export type ScheduleTiming =
  | {
    /** Five fields (minutes first) or six (seconds first), e.g. `0 9 * * MON-FRI`. */
    readonly cron: string
    /** An IANA zone (`Europe/Paris`) or an offset (`+02:00`). @default "UTC" */
    readonly timezone?: string
  }
  | {
    /** e.g. `"15 minutes"`; fire times are aligned on the Unix epoch (:00, :15, :30, :45). */
    readonly every: Duration.Input
  }

/** How a schedule fires, whether declared with a version (`trigger`) or created through the client. */
export type ScheduleOptions<Payload> = ScheduleTiming & {
  /** The payload of every run it starts. @default null */
  readonly payload?: Payload
  /** What a fire time does while the previous run still goes. @default "skip" */
  readonly overlap?: OverlapPolicy
  /** Fire times missed for longer than this (the servers were down) are skipped and counted. @default "1 minute" */
  readonly catchUpWindow?: Duration.Input
  /** Each fire time starts up to this much later (the same on every server replica). @default 0 */
  readonly jitter?: Duration.Input
  /** The priority of the runs it starts. @default the version's */
  readonly priority?: number
}

/** The flow control a workflow version declares. */
export interface FlowControlOptions<Payload> {
  /** 1 (lowest) to 10 (highest): higher priorities are handed to workers first. @default 5 */
  readonly priority?: number
  /**
   * At most `limit` runs with the same `key` running at once, across every worker and server (the others wait,
   * pending, holding no worker); with `workflowLimit`, also at most that many runs of the workflow. Without `key`,
   * `limit` is the workflow's limit.
   */
  readonly concurrency?: {
    readonly key?: (payload: Payload) => string
    readonly limit: number
    readonly workflowLimit?: number
  }
  /** Runs with the same key run one at a time, in the order they were started (even while one waits to retry). */
  readonly ordering?: { readonly key: (payload: Payload) => string }
  /** At most `limit` runs started per `period` (per `key`, or for the whole workflow); the others wait. */
  readonly rateLimit?: {
    readonly key?: (payload: Payload) => string
    readonly limit: number
    readonly period: Duration.Input
  }
}

/** Debounce a start: it replaces the run with the same key that has not started yet (newest payload wins). */
export interface DebounceOptions {
  readonly key: string
  /** The run starts once no start replaced it for this long. */
  readonly delay: Duration.Input
  /** …but no later than this after the first start. @default none */
  readonly maxDelay?: Duration.Input
}

/** Flow control a start may ask for, over what the version declares. */
export interface StartFlowOptions {
  /** @default the version's priority, else 5 */
  readonly priority?: number
  /** @default the version's `concurrency.key` of the payload */
  readonly concurrencyKey?: string
  /** This run's per-key limit, over the version's. */
  readonly concurrencyLimit?: number
  /** @default the version's `ordering.key` of the payload */
  readonly orderingKey?: string
  /** @default the version's `rateLimit.key` of the payload */
  readonly rateLimitKey?: string
  readonly debounce?: DebounceOptions
}

const millis = (input: Duration.Input) => Math.round(Duration.toMillis(Duration.fromInputUnsafe(input)))

/** The limits a version registers. */
export const policyOf = (options: FlowControlOptions<never>): FlowPolicy | undefined => {
  const { concurrency, priority, rateLimit } = options
  const workflowLimit = concurrency === undefined
    ? undefined
    : concurrency.key === undefined
    ? concurrency.limit
    : concurrency.workflowLimit
  const policy: FlowPolicy = {
    ...(priority !== undefined ? { priority } : {}),
    ...(concurrency?.key !== undefined ? { concurrencyLimit: concurrency.limit } : {}),
    ...(workflowLimit !== undefined ? { workflowLimit } : {}),
    ...(rateLimit !== undefined ? { rateLimit: { limit: rateLimit.limit, periodMs: millis(rateLimit.period) } } : {})
  }
  return Object.keys(policy).length > 0 ? policy : undefined
}

/** A start's flow control: what it asks for, else the keys the version computes from its payload. */
export const startFlowOf = <Payload>(options: FlowControlOptions<Payload> | undefined, payload: Payload, start: StartFlowOptions = {}) => {
  const concurrencyKey = start.concurrencyKey ?? options?.concurrency?.key?.(payload)
  const orderingKey = start.orderingKey ?? options?.ordering?.key(payload)
  const rateLimitKey = start.rateLimitKey ?? options?.rateLimit?.key?.(payload)
  return {
    ...(start.priority !== undefined ? { priority: start.priority } : {}),
    ...(concurrencyKey !== undefined ? { concurrencyKey } : {}),
    ...(start.concurrencyLimit !== undefined ? { concurrencyLimit: start.concurrencyLimit } : {}),
    ...(orderingKey !== undefined ? { orderingKey } : {}),
    ...(rateLimitKey !== undefined ? { rateLimitKey } : {}),
    ...(start.debounce !== undefined
      ? {
        debounce: {
          key: start.debounce.key,
          delayMs: millis(start.debounce.delay),
          ...(start.debounce.maxDelay !== undefined ? { maxDelayMs: millis(start.debounce.maxDelay) } : {})
        }
      }
      : {})
  }
}

/** A schedule's timing as the server takes it. */
export const specOf = (timing: ScheduleTiming): ScheduleSpec =>
  "every" in timing
    ? { everyMs: millis(timing.every) }
    : { cron: timing.cron, ...(timing.timezone !== undefined ? { timezone: timing.timezone } : {}) }

/**
 * A schedule of `workflow` as the server takes it: its payload encoded with the workflow's schema, and the keys of
 * its runs computed from that payload.
 */
export const scheduleOf = (
  workflow: {
    readonly name: string
    readonly version: string
    readonly payloadSchema: Schema.Top
    readonly flowControl: FlowControlOptions<never>
  },
  options: ScheduleOptions<unknown>
) =>
  Effect.gen(function*() {
    const payload = yield* JsonCodec.encode(
      workflow.payloadSchema,
      options.payload ?? null,
      `the schedule payload of ${workflow.name}@${workflow.version}`
    )
    const { debounce: _, ...keys } = startFlowOf(workflow.flowControl as FlowControlOptions<unknown>, options.payload ?? null)
    return {
      spec: specOf(options),
      payload,
      ...(options.overlap !== undefined ? { overlap: options.overlap } : {}),
      ...(options.catchUpWindow !== undefined ? { catchUpWindowMs: millis(options.catchUpWindow) } : {}),
      ...(options.jitter !== undefined ? { jitterMs: millis(options.jitter) } : {}),
      ...keys,
      ...(options.priority !== undefined ? { priority: options.priority } : {})
    }
  })
