/**
 * Requests that travel together: callers submit items one by one; while one request is in flight the next items
 * gather, and go as one request when it returns; when nothing is in flight an item goes at once, so a lone item
 * waits for nothing. Each item gets its own answer. One request in flight keeps items in the order they were
 * submitted (the server applies a request's items in order) and lets requests grow with the load.
 *
 * An item may be `lazy`: it need not go at once, only before what is submitted after it. A request is not started
 * for lazy items alone until `lingerMs` passed, so a lazy item usually travels with the next one (a task's start
 * with its own outcome, when the task is quick): one request instead of two.
 */
import { Cause, Clock, Deferred, Duration, Effect, Exit, Option, Queue } from "effect"

export interface Batcher<I, O> {
  /**
   * Queues `item`; its answer comes once the request carrying it is answered (or failed as a whole). `observe`,
   * when given, is told the answer as soon as it is known, without a fiber waiting for it.
   */
  readonly submit: (
    item: I,
    observe?: (answer: Exit.Exit<O>) => void,
    options?: { readonly lazy?: boolean }
  ) => Effect.Effect<Deferred.Deferred<O>>
}

interface Pending<I, O> {
  readonly item: I
  readonly answer: Deferred.Deferred<O>
  readonly observe: ((answer: Exit.Exit<O>) => void) | undefined
  readonly lazy: boolean
}

const settle = <I, O>(pending: Pending<I, O>, exit: Exit.Exit<O>) =>
  Effect.andThen(Deferred.done(pending.answer, exit), Effect.sync(() => pending.observe?.(exit)))

/** Starts a batcher for the current scope; `send` answers a request's items in order. */
export const make = Effect.fnUntraced(function*<I, O, E>(options: {
  readonly send: (items: ReadonlyArray<I>) => Effect.Effect<ReadonlyArray<O>, E>
  /** Items in one request at most. */
  readonly maxItems: number
  /** Splits what was gathered into requests (e.g. by size); one request by default. */
  readonly split?: (items: ReadonlyArray<I>) => ReadonlyArray<ReadonlyArray<I>>
  /** How long lazy items alone may wait for company before they go anyway. @default 0 (they go at once) */
  readonly lingerMs?: number
}) {
  const queue = yield* Effect.acquireRelease(Queue.unbounded<Pending<I, O>>(), Queue.shutdown)
  const send = (batch: ReadonlyArray<Pending<I, O>>) =>
    options.send(batch.map((p) => p.item)).pipe(
      Effect.matchCauseEffect({
        onSuccess: (answers) => Effect.forEach(batch, (p, i) => settle(p, Exit.succeed(answers[i]!)), { discard: true }),
        // The request failed as a whole (not retried by `send`): every item in it fails with it, as a defect.
        onFailure: (cause) => Effect.forEach(batch, (p) => settle(p, Exit.die(Cause.squash(cause))), { discard: true })
      })
    )
  const lingerMs = options.lingerMs ?? 0
  /** Lazy items alone wait, up to `lingerMs`, for an item that must go at once. */
  const gather = Effect.fnUntraced(function*(first: ReadonlyArray<Pending<I, O>>) {
    // The common case under load: something that must go at once is there already.
    if (!first.every((p) => p.lazy)) return first
    const pending = [...first]
    const deadline = (yield* Clock.currentTimeMillis) + lingerMs
    while (pending.length < options.maxItems && pending.every((p) => p.lazy)) {
      const remaining = deadline - (yield* Clock.currentTimeMillis)
      if (remaining <= 0) break
      const more = yield* Queue.takeBetween(queue, 1, options.maxItems - pending.length).pipe(
        Effect.timeoutOption(Duration.millis(remaining))
      )
      if (Option.isNone(more)) break
      pending.push(...more.value)
    }
    return pending
  })
  yield* Effect.gen(function*() {
    while (true) {
      const taken = yield* Queue.takeBetween(queue, 1, options.maxItems)
      const pending = lingerMs > 0 ? yield* gather(taken) : taken
      if (options.split === undefined) {
        yield* send(pending)
        continue
      }
      const byItem = new Map(pending.map((p) => [p.item, p]))
      for (const request of options.split(pending.map((p) => p.item))) yield* send(request.map((item) => byItem.get(item)!))
    }
  }).pipe(Effect.forkScoped)
  return {
    submit: (item: I, observe?: (answer: Exit.Exit<O>) => void, submitOptions?: { readonly lazy?: boolean }) =>
      Effect.gen(function*() {
        const answer = yield* Deferred.make<O>()
        yield* Queue.offer(queue, { item, answer, observe, lazy: submitOptions?.lazy === true })
        return answer
      })
  } satisfies Batcher<I, O>
})

/**
 * Cuts items into requests of at most `maxBytes` of JSON each, in order; an item larger than that goes alone (the
 * server refuses it, and says why).
 */
export const bySize = (maxBytes: number) => <A>(items: ReadonlyArray<A>): ReadonlyArray<ReadonlyArray<A>> => {
  const out: Array<Array<A>> = []
  let current: Array<A> = []
  let bytes = 0
  for (const item of items) {
    const size = JSON.stringify(item).length
    if (current.length > 0 && bytes + size > maxBytes) {
      out.push(current)
      current = []
      bytes = 0
    }
    current.push(item)
    bytes += size
  }
  if (current.length > 0) out.push(current)
  return out
}
