/**
 * Requests that travel together: callers submit items one by one; while requests are in flight the next items
 * gather, and go as one request when one returns; when a request may go, an item goes at once, so a lone item waits
 * for nothing. Each item gets its own answer.
 *
 * Items may name a key (`keyOf`, e.g. the run a write is about). Items of one key keep the order they were submitted
 * in: they never travel in two requests at once (the server applies a request's items in order, and two requests in
 * parallel in no order), so an item waits while an earlier one of its key is in flight. Items of other keys may go
 * meanwhile, up to `maxInFlight` requests at once: a server that commits requests in parallel is kept busy while a
 * worker's requests still grow with the load. Without keys every item shares one, and one request is in flight.
 *
 * An item may be `lazy`: it need not go at once, only before what is submitted after it. A request is not started
 * for lazy items alone until `lingerMs` passed, so a lazy item usually travels with the next one (a task's start
 * with its own outcome, when the task is quick): one request instead of two.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"

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

/** Put in the queue when a request returned: what waited for its keys, or for a free slot, may go now. */
const returned = Symbol("Batcher/returned")

/** Answers each item of a request (a loop, not an effect per item: a request may carry a thousand). */
const settleAll = <I, O>(batch: ReadonlyArray<Pending<I, O>>, exitOf: (index: number) => Exit.Exit<O>) =>
  Effect.sync(() => {
    for (let i = 0; i < batch.length; i++) {
      const pending = batch[i]!
      const exit = exitOf(i)
      Deferred.doneUnsafe(pending.answer, exit)
      pending.observe?.(exit)
    }
  })

/** Starts a batcher for the current scope; `send` answers a request's items in order. */
export const make = Effect.fnUntraced(function*<I, O, E>(options: {
  readonly send: (items: ReadonlyArray<I>) => Effect.Effect<ReadonlyArray<O>, E>
  /** Items in one request at most. */
  readonly maxItems: number
  /** Splits what was gathered into requests (e.g. by size), sent one after the other; one request by default. */
  readonly split?: (items: ReadonlyArray<I>) => ReadonlyArray<ReadonlyArray<I>>
  /** How long lazy items alone may wait for company before they go anyway. @default 0 (they go at once) */
  readonly lingerMs?: number
  /** The key whose items keep their order; every item shares one by default. */
  readonly keyOf?: (item: I) => unknown
  /** Requests in flight at most (of items with different keys). @default 1 */
  readonly maxInFlight?: number
}) {
  const queue = yield* Effect.acquireRelease(Queue.unbounded<Pending<I, O> | typeof returned>(), Queue.shutdown)
  const scope = yield* Effect.scope
  const keyOf = options.keyOf ?? (() => undefined)
  const maxInFlight = Math.max(1, options.maxInFlight ?? 1)
  const lingerMs = options.lingerMs ?? 0

  const sendOne = (batch: ReadonlyArray<Pending<I, O>>) =>
    options.send(batch.map((p) => p.item)).pipe(
      Effect.matchCauseEffect({
        onSuccess: (answers) => settleAll(batch, (i) => Exit.succeed(answers[i]!)),
        // The request failed as a whole (not retried by `send`): every item in it fails with it, as a defect.
        onFailure: (cause) => {
          const failed = Exit.die(Cause.squash(cause))
          return settleAll(batch, () => failed)
        }
      })
    )
  const sendAll = (batch: ReadonlyArray<Pending<I, O>>): Effect.Effect<void> => {
    if (options.split === undefined) return sendOne(batch)
    const byItem = new Map(batch.map((p) => [p.item, p]))
    return Effect.forEach(options.split(batch.map((p) => p.item)), (request) => sendOne(request.map((item) => byItem.get(item)!)), {
      discard: true
    })
  }

  /** Items submitted and not sent yet, in the order they were submitted. */
  let backlog: Array<Pending<I, O>> = []
  /** Keys with items in flight. */
  const busy = new Set<unknown>()
  let inFlight = 0
  /** Since when the items that may go are all lazy (they wait for company up to `lingerMs`). */
  let lazySince: number | undefined

  /** Takes the items that may go now (their keys have nothing in flight) out of the backlog, up to `maxItems`. */
  const next = () => {
    const ready: Array<Pending<I, O>> = []
    const rest: Array<Pending<I, O>> = []
    for (const p of backlog) {
      if (ready.length < options.maxItems && !busy.has(keyOf(p.item))) ready.push(p)
      else rest.push(p)
    }
    return { ready, rest }
  }

  const dispatch = (batch: ReadonlyArray<Pending<I, O>>) => {
    const keys = new Set(batch.map((p) => keyOf(p.item)))
    for (const key of keys) busy.add(key)
    inFlight++
    return sendAll(batch).pipe(
      Effect.ensuring(Effect.suspend(() => {
        for (const key of keys) busy.delete(key)
        inFlight--
        return Queue.offer(queue, returned)
      })),
      Effect.forkIn(scope)
    )
  }

  /** Sends what may go; the time left for lazy items to wait, if they are all there is. */
  const flush = Effect.fnUntraced(function*() {
    while (inFlight < maxInFlight && backlog.length > 0) {
      const { ready, rest } = next()
      if (ready.length === 0) {
        lazySince = undefined
        return undefined
      }
      if (lingerMs > 0 && ready.length < options.maxItems && ready.every((p) => p.lazy)) {
        const now = yield* Clock.currentTimeMillis
        lazySince ??= now
        const remaining = lazySince + lingerMs - now
        if (remaining > 0) return remaining
      }
      lazySince = undefined
      backlog = rest
      yield* dispatch(ready)
    }
    return undefined
  })

  yield* Effect.gen(function*() {
    let wait: number | undefined
    while (true) {
      const taken = wait === undefined
        ? yield* Queue.takeBetween(queue, 1, options.maxItems)
        : Option.getOrElse(yield* Queue.takeBetween(queue, 1, options.maxItems).pipe(
          Effect.timeoutOption(Duration.millis(wait))
        ), () => [])
      for (const event of taken) if (event !== returned) backlog.push(event)
      wait = yield* flush()
    }
  }).pipe(Effect.forkScoped)

  return {
    submit: (item: I, observe?: (answer: Exit.Exit<O>) => void, submitOptions?: { readonly lazy?: boolean }) =>
      Effect.sync(() => {
        const answer = Deferred.makeUnsafe<O>()
        // The queue is unbounded: an offer never waits.
        Queue.offerUnsafe(queue, { item, answer, observe, lazy: submitOptions?.lazy === true })
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
