/**
 * The worker's outgoing writes. Every run's writes queue here and travel together: while one request is in flight
 * the next writes gather, and go as one request when it returns; when nothing is in flight a write goes at once,
 * so a lone write waits for nothing. The server commits each request in one transaction and answers write by
 * write.
 *
 * One request in flight per worker keeps every run's writes in the order they were made without any bookkeeping
 * (the server applies a request's writes in order), and lets batches grow with the load: under load one request
 * carries what all the worker's runs have to say.
 */
import type { AikiClient as ApiClient } from "@aiki/contract/Client"
import type { WorkerId } from "@aiki/contract/Ids"
import type { Write, WriteResult } from "@aiki/contract/Models"
import { Deferred, Effect, Queue } from "effect"
import type { ServerLink } from "./ServerLink.ts"

/** Writes sent in one request at most. */
const maxWrites = 1_000

interface Pending {
  readonly write: Write
  readonly bytes: number
  readonly answer: Deferred.Deferred<WriteResult>
}

export interface WriteBatcher {
  /** Queues `write`; its answer comes once the request carrying it is committed (or refused). */
  readonly submit: (write: Write) => Effect.Effect<Deferred.Deferred<WriteResult>>
}

/** Splits writes into requests of at most `maxBytes` (a write larger than that goes alone: the server refuses it). */
const requests = (pending: ReadonlyArray<Pending>, maxBytes: number) => {
  const out: Array<Array<Pending>> = []
  let current: Array<Pending> = []
  let bytes = 0
  for (const item of pending) {
    if (current.length > 0 && bytes + item.bytes > maxBytes) {
      out.push(current)
      current = []
      bytes = 0
    }
    current.push(item)
    bytes += item.bytes
  }
  if (current.length > 0) out.push(current)
  return out
}

/** Starts the batcher for the current scope. */
export const make = Effect.fnUntraced(function*(options: {
  readonly api: ApiClient
  readonly workerId: WorkerId
  readonly link: ServerLink
  /** The largest request the server accepts (`Registration.maxBatchBytes`), less room for the envelope. */
  readonly maxBatchBytes: number
}) {
  const queue = yield* Effect.acquireRelease(Queue.unbounded<Pending>(), Queue.shutdown)
  const budget = Math.max(1, options.maxBatchBytes - 64 * 1024)

  const send = (batch: ReadonlyArray<Pending>) =>
    options.link.retrying(
      options.api.execution.write({ params: { id: options.workerId }, payload: { writes: batch.map((p) => p.write) } })
    ).pipe(
      Effect.matchCauseEffect({
        onSuccess: ({ results }) =>
          Effect.forEach(batch, (pending, i) => Deferred.succeed(pending.answer, results[i]!), { discard: true }),
        // Not a transport failure (the server refused the request as a whole): every write in it fails.
        onFailure: (cause) => Effect.forEach(batch, (pending) => Deferred.failCause(pending.answer, cause as never), { discard: true })
      })
    )

  yield* Effect.gen(function*() {
    while (true) {
      const pending = yield* Queue.takeBetween(queue, 1, maxWrites)
      for (const request of requests(pending, budget)) yield* send(request)
    }
  }).pipe(Effect.forkScoped)

  return {
    submit: (write) =>
      Effect.gen(function*() {
        const answer = yield* Deferred.make<WriteResult>()
        yield* Queue.offer(queue, { write, bytes: JSON.stringify(write).length, answer })
        return answer
      })
  } satisfies WriteBatcher
})
