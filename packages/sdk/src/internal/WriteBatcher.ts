/**
 * The worker's outgoing writes. Every run's writes go through one `Batcher`: a few requests in flight, the next
 * writes gathering behind them, so under load one request carries what many of the worker's runs have to say. A
 * run's writes stay in the order they were made: they never travel in two requests at once, and the server applies
 * a request's writes in order. The server commits a request in one transaction and answers write by write. Requests
 * are cut to stay under the server's size limit.
 */
import type { AikiClient as ApiClient } from "@aiki/contract/Client"
import type { WorkerId } from "@aiki/contract/Ids"
import type { Write, WriteResult } from "@aiki/contract/Models"
import * as Effect from "effect/Effect"
import * as Batcher from "./Batcher.ts"
import type { ServerLink } from "./ServerLink.ts"

export type WriteBatcher = Batcher.Batcher<Write, WriteResult>

/** Writes sent in one request at most. */
const maxWrites = 1_000

/**
 * How long a lazy write (a task attempt's start) waits for another write to travel with. A quick task's start goes
 * with its outcome (one request, one transaction instead of two); a longer one's start is known to the server this
 * much later (its attempt is counted and its timeouts run from then).
 */
export const lingerMs = 20

/**
 * Requests in flight at once. The server commits requests on a few connections in parallel (`COMMIT_CONCURRENCY`,
 * 4 by default, shared by every worker and client); with one request in flight a worker under load keeps one of
 * them busy and leaves the others idle while its request travels.
 */
const maxInFlight = 2

/** Starts the batcher for the current scope. */
export const make = (options: {
  readonly api: ApiClient
  readonly workerId: WorkerId
  readonly link: ServerLink
  /** The largest request the server accepts (`Registration.maxBatchBytes`). */
  readonly maxBatchBytes: number
}) =>
  Batcher.make({
    maxItems: maxWrites,
    lingerMs,
    maxInFlight,
    keyOf: (write) => write.runId,
    // Room for the request's envelope.
    split: Batcher.bySize(Math.max(1, options.maxBatchBytes - 64 * 1024)),
    send: (writes: ReadonlyArray<Write>) =>
      options.link.retrying(options.api.execution.write({ params: { id: options.workerId }, payload: { writes } })).pipe(
        Effect.map(({ results }) => results)
      )
  })
