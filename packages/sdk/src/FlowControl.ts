/**
 * Flow control of a workflow version, as its definition declares it: its priority, concurrency limits (per key,
 * or for the whole workflow), an ordering key and a rate limit. Keys are computed from each run's payload by the client that starts it; the limits travel to
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
 * ```
 */
import type { FlowPolicy } from "@aiki/contract/FlowControl"
import { Duration } from "effect"

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
