/**
 * Executes one leased run: the workflow's code from the top, on a scheduler of its own (`RunScheduler`), with every
 * durable call it makes — a task, a sleep, an event wait — placed in the run's journal (`Journal`).
 *
 * Outcomes reach the code through one loop, one at a time and only while the code is idle: first the recorded
 * ones, in the order the code first received them (a replay), then live ones in the order they arrive, each given
 * the next outcome order and written with it. What the code does between two outcomes therefore never depends on
 * timing, so `Promise.all`, `Promise.race` and `Effect.all` with concurrency replay exactly. Live work (running a
 * task) only begins once the replay has caught up.
 *
 * Durability: a live outcome is delivered as soon as it is written to the batcher (the code may run ahead, it is
 * deterministic), but nothing that depends on it leaves the worker before it is committed: a task's code runs only
 * after every write made before the task was called is committed, and the run's completion is written after them.
 * Every write carries the lease epoch; a lost lease stops the run.
 *
 * The run parks on the server (holding no worker) when its code is idle and every call it waits on is a durable
 * wait — a sleep, a retry delay, an event — due no sooner than `suspendAfterMs`; any worker resumes it from the
 * journal when it is due or when the event arrives.
 */
import type { EventName, LeaseEpoch, RunId, TaskAddress, TaskName } from "@aiki/contract/Ids"
import type { ErrorDetails, Json, Lease, ParkRun, StartTask, Write, WriteResult } from "@aiki/contract/Models"
import type { ParkedState } from "@aiki/contract/RunState"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as DateTime from "effect/DateTime"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Scheduler from "effect/Scheduler"
import { NonDeterminismError, TaskError, TaskTimedOut, WriteRefused } from "../Errors.ts"
import * as Retry from "../Retry.ts"
import type * as Workflow from "../Workflow.ts"
import { type ChildOutcome, type ChildStart, type TaskDefinition, WorkflowRun } from "../WorkflowRun.ts"
import { AttemptTimeouts } from "./AttemptTimeouts.ts"
import { exportsSpans } from "./exportsSpans.ts"
import { type Entry, Journal, type Outcome, patchMarker, replayVersion } from "./Journal.ts"
import * as JsonCodec from "./json.ts"
import { RunScheduler } from "./RunScheduler.ts"
import type { WriteBatcher } from "./WriteBatcher.ts"

/** Why a run's execution stopped before its end. */
export type StopReason = "cancelled" | "lost" | "shutdown" | "suspended"

export interface ExecutionOptions {
  /** Waits due at least this far ahead park the run on the server instead of waiting here. */
  readonly suspendAfterMs: number
  /** The largest value the server stores (`Registration.maxPayloadBytes`). */
  readonly maxPayloadBytes: number
  /**
   * Deliver the recorded outcomes and nothing else: no task runs, no wait is waited. The execution ends when the
   * code finishes, departs from the journal, or has received every recorded outcome (`waiting`). @default false
   */
  readonly replayOnly?: boolean
  /**
   * Completes at once while the worker knows its lease on the run holds (by its own clock, from the last grant or
   * extension); otherwise waits until a heartbeat renews it. Checked before every side effect, so a worker that
   * was frozen past its lease does not run a task before it learns whether it still holds the run.
   */
  readonly leaseHolds?: Effect.Effect<void>
  /** Where the worker hands the server's word that an attempt of this run timed out. */
  readonly attemptTimeouts?: AttemptTimeouts
}

/** How a run's execution ended (`waiting`: a replay-only execution delivered every recorded outcome). */
export type RunEnd = "completed" | "failed" | "parked" | "lost" | "waiting"

/** A durable call the code made and that has not received its outcome yet. */
interface Call {
  readonly sequence: number
  readonly address: TaskAddress
  readonly name: string
  /** What the journal recorded at this place. */
  readonly entry: Entry | undefined
  readonly delivered: Deferred.Deferred<Outcome>
  /** The answer to the last write the run had made when the call was made: what the call may depend on. */
  readonly barrier: Deferred.Deferred<WriteResult> | undefined
  /**
   * While the call waits on something durable (no task code running): until when, or for which event, and why:
   * a sleep or a retry delay may park the run; a wait `here` (a `Schedule`'s delay) keeps it on this worker.
   */
  waiting: {
    readonly until?: number
    readonly event?: string
    readonly child?: RunId
    readonly kind: "sleep" | "retry" | "event" | "child" | "here"
  } | undefined
  /** Completed when a refused park says the awaited event is there: receive again. */
  recheck: Deferred.Deferred<void> | undefined
}

/** A live outcome waiting for its turn, with what its write needs. */
interface Ready {
  readonly call: Call
  readonly outcome: Outcome
  readonly attempt: number
  readonly elapsedMs: number
}

/** How the run's execution ends, decided by whichever part sees it first. */
type Ending =
  | { readonly _tag: "Finished"; readonly end: "completed" | "failed" }
  | { readonly _tag: "Parked" }
  | { readonly _tag: "Lost" }
  | { readonly _tag: "Waiting" }
  | { readonly _tag: "Fatal"; readonly error: unknown }

const defaultScheduler = new Scheduler.MixedScheduler()

/**
 * Whether a write's answer says it was committed: written, or answered with what the server found (an event, a
 * child's state). A lost lease or a refusal is not: nothing that depends on the write may follow it. (A barrier is
 * the run's last write when a call was made, which may be a question such as `ReceiveEvent` or `AwaitChild`.)
 */
const isCommitted = (answer: WriteResult): boolean => {
  switch (answer._tag) {
    case "Written":
    case "EventReceived":
    case "NoEvent":
    case "EventWaiting":
    case "ChildStarted":
    case "ChildRunning":
    case "ChildEnded":
    case "ChildrenEnded":
    // The child's start was refused, but the group committed: the code learns of it through the entry's failure.
    case "IdempotencyConflict":
      return true
    // The server closed the attempt for a timeout: what followed it is decided anew (as when only `Written` counted).
    case "AttemptTimedOut":
    case "LeaseLost":
    case "RunNotFound":
    case "InvalidTransition":
    case "TaskNotFound":
    case "PayloadTooLarge":
      return false
  }
}

/** Runs `effect` outside the run's deterministic scheduler (task code, timers, the loop). */
const outside = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provideService(effect, Scheduler.Scheduler, defaultScheduler)

/**
 * Runs `workflow` for `lease` until it ends (completed or failed, written), parks, or loses its lease. Interrupted
 * from outside (cancelled, shutting down), it stops at once; the caller hands the run back if it must.
 */
export const execute = Effect.fnUntraced(function*(
  workflow: Workflow.Any,
  lease: Lease,
  writes: WriteBatcher,
  options: ExecutionOptions
) {
  const run = lease.run
  const runId: RunId = run.id
  const leaseEpoch: LeaseEpoch = lease.leaseEpoch
  const journal = new Journal(lease.journal, runId, run.replayVersion ?? replayVersion)
  const scheduler = new RunScheduler()
  const offset = Number(lease.serverTime.epochMilliseconds) - (yield* Clock.currentTimeMillis)
  const serverNow = Effect.map(Clock.currentTimeMillis, (t) => t + offset)
  const scope = yield* Effect.scope
  const live = yield* FiberSet.make()
  const ending = yield* Deferred.make<Ending>()
  const end = (e: Ending) => Deferred.succeed(ending, e).pipe(Effect.asVoid)
  const endUnsafe = (e: Ending) => void Deferred.doneUnsafe(ending, Exit.succeed(e))
  const signal = yield* Queue.sliding<void>(1)
  const poke = Queue.offer(signal, undefined).pipe(Effect.asVoid)

  const calls = new Map<number, Call>()
  const ready: Array<Ready> = []
  let replay: Array<Entry> = []
  let caughtUp = yield* Deferred.make<void>()
  // A later workflow attempt (a retry by its policy, or by hand) runs again what failed for good; the attempt is
  // counted by the server, so a worker taking the run over goes on from it.
  let rerunFailed = (run.attempt ?? 1) > 1
  /** The code has returned or failed: calls still pending (a promise race's loser) must not park the run. */
  let finishing = false
  let lastWrite: Deferred.Deferred<WriteResult> | undefined

  // ------------------------------------------------------------------------------------------------------------
  // Writes

  /** What a write's answer means for the run: a lost lease stops it, a refusal fails it. */
  const watch = (w: Write) => (answer: Exit.Exit<WriteResult>) => {
    if (Exit.isFailure(answer)) return endUnsafe({ _tag: "Fatal", error: Cause.squash(answer.cause) })
    switch (answer.value._tag) {
      case "Written":
      case "EventReceived":
      case "NoEvent":
      case "EventWaiting":
      case "AttemptTimedOut":
      case "ChildStarted":
      case "ChildRunning":
      case "ChildEnded":
      case "ChildrenEnded":
      // A child's idempotency key taken by another run: the child's start fails (see `startChild`).
      case "IdempotencyConflict":
        return
      case "LeaseLost":
      case "RunNotFound":
        return endUnsafe({ _tag: "Lost" })
      case "InvalidTransition":
      case "TaskNotFound":
      case "PayloadTooLarge":
        return endUnsafe({ _tag: "Fatal", error: new WriteRefused({ runId, write: w._tag, reason: answer.value.message }) })
    }
  }

  /** Queues a write of this run (its answer is watched, see `watch`); returns its answer-to-be. */
  const write = (w: Write) =>
    Effect.map(writes.submit(w, watch(w)), (answer) => (lastWrite = answer))

  /**
   * Queues a task attempt's start as a lazy write: it travels with the next write (usually the attempt's outcome).
   * It is no barrier for later calls: what they may depend on is an outcome, not that an attempt began.
   */
  const writeStart = (w: StartTask) => writes.submit(w, watch(w), { lazy: true })

  const held = { runId, leaseEpoch }
  const traced = yield* exportsSpans
  const timeouts = options.attemptTimeouts ?? new AttemptTimeouts()

  /**
   * `context.heartbeat` of one attempt: a `HeartbeatTask` write, sent at most every third of the heartbeat timeout
   * (a second at most; calls in between are dropped). Its answer may be the server's word that the attempt timed
   * out. It is not a barrier for later calls (it does not go through `write`).
   */
  const heartbeatOf = (address: TaskAddress, attempt: number, heartbeatTimeoutMs: number | undefined) => {
    const every = Math.max(50, Math.min(1_000, (heartbeatTimeoutMs ?? 3_000) / 3))
    let sentAt = Number.NEGATIVE_INFINITY
    return (details?: Json): Effect.Effect<void> =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        if (now - sentAt < every) return
        sentAt = now
        yield* writes.submit(
          { _tag: "HeartbeatTask", ...held, address, attempt, ...(details !== undefined ? { details } : {}) },
          (answer) => {
            if (Exit.isSuccess(answer) && answer.value._tag === "AttemptTimedOut") {
              timeouts.fireUnsafe(address, attempt, answer.value.kind)
            }
          }
        )
      })
  }

  /**
   * Once the attempt's first deadline (and a second more) passed, asks the server now and then (every half
   * deadline, a second at least) whether it timed the attempt out: the answer to a probe tells the worker even if
   * the signal was missed (a reconnecting signals stream). Never completes by itself.
   */
  const probe = (address: TaskAddress, attempt: number, firstDeadlineMs: number): Effect.Effect<never> =>
    Effect.gen(function*() {
      yield* Effect.sleep(Duration.millis(firstDeadlineMs + 1_000))
      while (true) {
        yield* writes.submit({ _tag: "HeartbeatTask", ...held, address, attempt, probe: true }, (answer) => {
          if (Exit.isSuccess(answer) && answer.value._tag === "AttemptTimedOut") {
            timeouts.fireUnsafe(address, attempt, answer.value.kind)
          }
        })
        yield* Effect.sleep(Duration.millis(Math.max(1_000, firstDeadlineMs / 2)))
      }
    })

  // ------------------------------------------------------------------------------------------------------------
  // Durable calls

  /** A value that cannot be stored is refused here, with what it was: the server would refuse it anyway. */
  const checkSize = (value: unknown, what: string): string | undefined => {
    const text = JSON.stringify(value) ?? "null"
    if (text.length * 3 <= options.maxPayloadBytes) return undefined
    const bytes = Buffer.byteLength(text)
    return bytes > options.maxPayloadBytes
      ? `${what} is ${bytes} bytes, more than the ${options.maxPayloadBytes} bytes the server stores (MAX_PAYLOAD_BYTES)`
      : undefined
  }

  /**
   * Places a durable call in the journal and waits for its outcome, delivered by the loop. Unless a final outcome
   * is recorded, `perform` runs it live, outside the code's scheduler; an interrupted call (a lost race, a cancel)
   * stops it.
   */
  const durable = (name: string, payload: Json, perform: (call: Call) => Effect.Effect<void>) =>
    Effect.suspend(() => {
      const placed = journal.place(name, payload)
      if (placed instanceof NonDeterminismError) {
        return Effect.andThen(end({ _tag: "Fatal", error: placed }), Effect.die(placed))
      }
      const call: Call = {
        sequence: placed.sequence,
        address: placed.address as TaskAddress,
        name,
        entry: placed.entry,
        delivered: Deferred.makeUnsafe<Outcome>(),
        barrier: lastWrite,
        waiting: undefined,
        recheck: undefined
      }
      calls.set(call.sequence, call)
      const recordedFinal = placed.entry?.outcome !== undefined && !(rerunFailed && placed.entry.outcome._tag === "Failed")
      const performed = !recordedFinal && options.replayOnly !== true
      return Effect.gen(function*() {
        const fiber = performed ? yield* FiberSet.run(live, outside(perform(call))) : undefined
        yield* poke
        return yield* Deferred.await(call.delivered).pipe(
          Effect.onInterrupt(() =>
            Effect.suspend(() => {
              calls.delete(call.sequence)
              return fiber === undefined ? Effect.void : Fiber.interrupt(fiber)
            })
          )
        )
      })
    })

  /** Hands a live outcome to the loop. */
  const settle = (call: Call, outcome: Outcome, attempt: number, elapsedMs: number) =>
    Effect.andThen(Effect.sync(() => ready.push({ call, outcome, attempt, elapsedMs })), poke)

  /** Waits durably until `at` (server clock): a timer here, and a reason for the run to park if it is far. */
  const waitUntil = (call: Call, at: number, kind: "sleep" | "retry" | "here") =>
    Effect.gen(function*() {
      call.waiting = { until: at, kind }
      yield* poke
      const remaining = at - (yield* serverNow)
      if (remaining > 0) yield* Effect.sleep(Duration.millis(remaining))
      call.waiting = undefined
    })

  /**
   * Live side effects begin only once the replay caught up and what the call may depend on is committed: the last
   * write made before the call must have been written (a lost lease or a refusal stops the work here: a zombie
   * must never run the next task), and the run must not be ending.
   */
  const mayActOn = (barrier: Deferred.Deferred<WriteResult> | undefined) =>
    Effect.gen(function*() {
      yield* Deferred.await(caughtUp)
      const committed = barrier === undefined ? true : isCommitted(yield* Deferred.await(barrier))
      if (!committed || (yield* Deferred.isDone(ending))) return yield* Effect.interrupt
      if (options.leaseHolds !== undefined) yield* options.leaseHolds
    })

  /**
   * An attempt of a task with timeouts, raced against the server's word that it timed out. The server decides
   * timeouts: told that it failed the attempt, the attempt is interrupted (a promise task's signal aborts) and
   * fails with `TaskTimedOut`, which the retry policy sees like any failure.
   */
  const limitedByTimeouts = <P, A, E, R>(
    definition: TaskDefinition<P, A, E, R>,
    address: TaskAddress,
    attempt: number,
    running: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E, R> => {
    const limits = [definition.timeoutMs, definition.heartbeatTimeoutMs].filter((ms) => ms !== undefined)
    if (limits.length === 0) return running
    const timedOut = Effect.flatMap(timeouts.timedOut(address, attempt), (kind) =>
      Effect.die(
        new TaskTimedOut({
          taskName: definition.name,
          attempt,
          kind,
          message: kind === "start_to_close"
            ? `Attempt ${attempt} of task ${definition.name} did not finish within its timeout (${definition.timeoutMs} ms)`
            : `Attempt ${attempt} of task ${definition.name} did not heartbeat within ${definition.heartbeatTimeoutMs} ms`
        })
      ))
    return Effect.raceFirst(running, Effect.raceFirst(timedOut, probe(address, attempt, Math.min(...limits)))).pipe(
      Effect.ensuring(Effect.sync(() => timeouts.forget(address, attempt)))
    )
  }

  const runTask = <P, A, E, R>(definition: TaskDefinition<P, A, E, R>, payload: P, encoded: Json) => (call: Call) =>
    Effect.gen(function*() {
      yield* Deferred.await(caughtUp)
      const retrier = yield* Retry.make(definition.retry)
      let attempt = (call.entry?.attempts ?? 0) + 1
      // A recorded retry delay still to wait (the run was parked or taken over during it).
      let due = call.entry?.state === "retrying" ? call.entry.notBefore : undefined
      // A policy's delay may park the run; a Schedule's state lives here, so its delays are always waited here.
      const waitKind = retrier.durable ? "retry" : "here"
      // What this attempt depends on: the writes before the call, then the task's own last write (a failed attempt).
      let dependsOn = call.barrier
      while (true) {
        if (due !== undefined) yield* waitUntil(call, due, waitKind)
        due = undefined
        yield* mayActOn(dependsOn)
        yield* writeStart({
          _tag: "StartTask",
          ...held,
          address: call.address,
          sequence: call.sequence,
          name: definition.name as TaskName,
          payload: encoded,
          attempt,
          ...(definition.timeoutMs !== undefined ? { timeoutMs: definition.timeoutMs } : {}),
          ...(definition.heartbeatTimeoutMs !== undefined ? { heartbeatTimeoutMs: definition.heartbeatTimeoutMs } : {})
        })
        const started = yield* Clock.currentTimeMillis
        const running = definition.run(payload, {
          attempt,
          runId,
          workflowName: run.workflowName,
          workflowVersion: run.workflowVersion,
          workflowPayload: run.payload,
          heartbeat: heartbeatOf(call.address, attempt, definition.heartbeatTimeoutMs)
        })
        const exit = yield* limitedByTimeouts(definition, call.address, attempt, running).pipe(
          (attemptOf) =>
            traced
              // One span per attempt, under the run's (its parent is the workflow code's span, the run's
              // execution). No stack trace: it would point into the engine, never at the user's code.
              ? Effect.withSpan(attemptOf, `Task ${definition.name}`, {
                attributes: { runId, task: definition.name, attempt },
                captureStackTrace: false
              })
              : attemptOf,
          Effect.exit
        ) as Effect.Effect<Exit.Exit<A, E>>
        const elapsedMs = (yield* Clock.currentTimeMillis) - started
        if (Exit.isSuccess(exit)) {
          const result = yield* JsonCodec.encode(definition.successSchema, exit.value, `the result of task ${definition.name}`)
            .pipe(Effect.result)
          const refused = result._tag === "Success" ? checkSize(result.success, `The result of task ${definition.name}`) : undefined
          if (result._tag === "Success" && refused === undefined) {
            return yield* settle(call, { _tag: "Completed", result: result.success }, attempt, elapsedMs)
          }
          // A result that cannot be stored fails the task for good: retrying would produce it again.
          const error = result._tag === "Failure" ? JsonCodec.describeError(result.failure) : { name: "ResultTooLarge", message: refused! }
          return yield* settle(call, { _tag: "Failed", error }, attempt, elapsedMs)
        }
        const failure = JsonCodec.primaryError(exit.cause)
        // Interrupted (cancelled, lost, shutting down): nothing to record; the next owner retries the attempt.
        if (Option.isNone(failure)) return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
        const { error, typed } = failure.value
        const data = typed
          ? Option.getOrUndefined(yield* JsonCodec.encode(definition.errorSchema, error, "a task error").pipe(Effect.option))
          : undefined
        const details = JsonCodec.describeError(error, data, options.maxPayloadBytes)
        const delay = yield* retrier.next(attempt, error)
        if (Option.isNone(delay)) return yield* settle(call, { _tag: "Failed", error: details }, attempt, elapsedMs)
        due = (yield* serverNow) + Duration.toMillis(delay.value)
        dependsOn = yield* write({
          _tag: "FinishTask",
          ...held,
          address: call.address,
          attempt,
          elapsedMs,
          outcome: { _tag: "Failed", error: details, retryAt: DateTime.makeUnsafe(due) }
        })
        attempt++
      }
    })

  const task = <P, A, E, R>(definition: TaskDefinition<P, A, E, R>, payload: P): Effect.Effect<A, E, R> =>
    Effect.gen(function*() {
      const encoded = yield* JsonCodec.encode(definition.payloadSchema, payload, `the payload of task ${definition.name}`)
        .pipe(Effect.orDie)
      const tooLarge = checkSize(encoded, `The payload of task ${definition.name}`)
      if (tooLarge !== undefined) return yield* Effect.die(new TaskError({ taskName: definition.name, errorName: "PayloadTooLarge", message: tooLarge }))
      const outcome = yield* durable(definition.name, encoded, runTask(definition, payload, encoded))
      if (outcome._tag === "Completed") {
        return yield* JsonCodec.decode(definition.successSchema, outcome.result, `the result of task ${definition.name}`)
          .pipe(Effect.orDie)
      }
      // Every failure reaches the code as stored, the first time as on replay: its declared error decoded, or else
      // a `TaskError` carrying the stored details.
      if (outcome.error.data !== undefined) {
        const decoded = yield* JsonCodec.decode(definition.errorSchema, outcome.error.data, "a task error").pipe(Effect.option)
        if (Option.isSome(decoded)) return yield* Effect.fail(decoded.value)
      }
      return yield* Effect.die(TaskError.fromDetails(definition.name, outcome.error))
    }) as Effect.Effect<A, E, R>

  const sleep = (millis: number): Effect.Effect<void> =>
    Effect.gen(function*() {
      const ms = Math.max(0, Math.round(millis))
      yield* durable("aiki.sleep", { ms }, (call) =>
        Effect.gen(function*() {
          yield* Deferred.await(caughtUp)
          let due = call.entry?.notBefore
          if (due === undefined) {
            due = (yield* serverNow) + ms
            yield* write({ _tag: "StartTask", ...held, address: call.address, sequence: call.sequence, name: "aiki.sleep" as TaskName, payload: { ms }, attempt: 1, notBefore: DateTime.makeUnsafe(due) })
          }
          yield* waitUntil(call, due, "sleep")
          yield* settle(call, { _tag: "Completed", result: null }, 1, ms)
        }))
    })

  /**
   * Waits for the next event `name`; with `timeoutMs`, at most that long from when the wait was first made (its
   * deadline is the entry's `notBefore`, server clock, so a replay or another worker keeps it, and the parked run's
   * `wake_at` holds it with no worker). A timed wait records `{ timedOut }` (and the payload), an untimed one the
   * payload itself; their addresses differ, so neither replays as the other.
   */
  const awaitEvent = (name: string, timeoutMs: number | undefined): Effect.Effect<Outcome> =>
    durable("aiki.event", timeoutMs === undefined ? { name } : { name, timeoutMs }, (call) =>
      Effect.gen(function*() {
        yield* Deferred.await(caughtUp)
        let deadline = call.entry?.notBefore
        if (call.entry === undefined) {
          deadline = timeoutMs === undefined ? undefined : (yield* serverNow) + timeoutMs
          yield* write({
            _tag: "StartTask",
            ...held,
            address: call.address,
            sequence: call.sequence,
            name: "aiki.event" as TaskName,
            payload: timeoutMs === undefined ? { name } : { name, timeoutMs },
            attempt: 1,
            ...(deadline !== undefined ? { notBefore: DateTime.makeUnsafe(deadline) } : {})
          })
        }
        const started = yield* Clock.currentTimeMillis
        const elapsed = Effect.map(Clock.currentTimeMillis, (now) => now - started)
        while (true) {
          const answer = yield* Deferred.await(
            yield* write({ _tag: "ReceiveEvent", ...held, address: call.address, name: name as EventName })
          )
          if (answer._tag === "EventReceived") {
            const result = timeoutMs === undefined ? answer.payload : { timedOut: false, payload: answer.payload }
            return yield* settle(call, { _tag: "Completed", result }, 1, yield* elapsed)
          }
          // None came in time, by the server's clock: an event that arrives from now on stays for the next wait.
          if (answer._tag === "NoEvent" && answer.timedOut === true) {
            return yield* settle(call, { _tag: "Completed", result: { timedOut: true } }, 1, yield* elapsed)
          }
          // None yet: wait, durably, until a refused park says it is there (or the deadline).
          const recheck = yield* Deferred.make<void>()
          call.recheck = recheck
          call.waiting = { event: name, kind: "event", ...(deadline !== undefined ? { until: deadline } : {}) }
          yield* poke
          const due = deadline
          yield* due === undefined
            ? Deferred.await(recheck)
            : Effect.raceFirst(
              Deferred.await(recheck),
              // Past the deadline by this worker's estimate but not by the server's: ask again a little later.
              Effect.flatMap(serverNow, (now) => Effect.sleep(Duration.millis(Math.max(250, due - now))))
            )
          call.waiting = undefined
        }
      }))

  const waitForEvent = (name: string): Effect.Effect<Json> =>
    Effect.flatMap(awaitEvent(name, undefined), (outcome) =>
      outcome._tag === "Completed" ? Effect.succeed(outcome.result) : Effect.die(TaskError.fromDetails("aiki.event", outcome.error)))

  const waitForEventWithin = (name: string, timeoutMs: number): Effect.Effect<Option.Option<Json>> =>
    Effect.flatMap(awaitEvent(name, Math.max(0, Math.round(timeoutMs))), (outcome) => {
      if (outcome._tag === "Failed") return Effect.die(TaskError.fromDetails("aiki.event", outcome.error))
      const result = outcome.result as { readonly timedOut: boolean; readonly payload?: Json }
      return Effect.succeed(result.timedOut ? Option.none() : Option.some(result.payload ?? null))
    })

  // Patches: which runs take a changed code path. Answered once per change id (a run's branches stay consistent).
  let patches = new Map<string, boolean>()

  /** Records the marker of change `changeId` at the place just taken; the writes after it depend on it. */
  const recordMarker = (sequence: number, address: TaskAddress, payload: Json) =>
    Effect.gen(function*() {
      const outcome: Outcome = { _tag: "Completed", result: true }
      const entry = journal.entryAt(sequence)
      if (entry === undefined) {
        yield* write({ _tag: "StartTask", ...held, address, sequence, name: patchMarker as TaskName, payload, attempt: 1 })
      }
      yield* write({ _tag: "FinishTask", ...held, address, attempt: 1, elapsedMs: 0, outcome })
      journal.record({ sequence, address, name: patchMarker, state: "completed", attempts: 1, outcome, outcomeOrder: undefined, notBefore: undefined })
    })

  const patched = (changeId: string): Effect.Effect<boolean> =>
    Effect.suspend(() => {
      const known = patches.get(changeId)
      if (known !== undefined) return Effect.succeed(known)
      const payload = { changeId }
      const ahead = journal.ahead(patchMarker, payload)
      // The run went past this point under the code before the change: it keeps that code's path.
      if (ahead.passed && !ahead.matches) {
        patches.set(changeId, false)
        return Effect.succeed(false)
      }
      const placed = journal.place(patchMarker, payload)
      if (placed instanceof NonDeterminismError) return Effect.andThen(end({ _tag: "Fatal", error: placed }), Effect.die(placed))
      patches.set(changeId, true)
      return placed.entry?.outcome !== undefined
        ? Effect.succeed(true)
        : Effect.as(recordMarker(placed.sequence, placed.address as TaskAddress, payload), true)
    })

  const deprecatePatch = (changeId: string): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (patches.has(changeId)) return Effect.void
      patches.set(changeId, true)
      const payload = { changeId }
      // Only a run that recorded the marker here has it to replay; every other run records nothing.
      if (!journal.ahead(patchMarker, payload).matches) return Effect.void
      const placed = journal.place(patchMarker, payload)
      if (placed instanceof NonDeterminismError) return Effect.andThen(end({ _tag: "Fatal", error: placed }), Effect.die(placed))
      return placed.entry?.outcome !== undefined ? Effect.void : recordMarker(placed.sequence, placed.address as TaskAddress, payload)
    })

  /**
   * Starts a child run, once: the start is a journal entry whose outcome is the child's run id, and the server
   * derives the child's idempotency key from this run and the call's place unless one is given, so neither a
   * retried request nor a replay starts it twice.
   */
  const startChild = (child: ChildStart): Effect.Effect<RunId> =>
    Effect.gen(function*() {
      const entryPayload: Json = {
        workflow: child.workflowName,
        version: child.workflowVersion,
        payload: child.payload,
        ...(child.idempotencyKey !== undefined ? { idempotencyKey: child.idempotencyKey } : {}),
        parentClosePolicy: child.parentClosePolicy
      }
      const tooLarge = checkSize(child.payload, `The payload of child workflow ${child.workflowName}`)
      if (tooLarge !== undefined) return yield* Effect.die(new TaskError({ taskName: "aiki.child", errorName: "PayloadTooLarge", message: tooLarge }))
      const outcome = yield* durable("aiki.child", entryPayload, (call) =>
        Effect.gen(function*() {
          yield* mayActOn(call.barrier)
          const started = yield* Clock.currentTimeMillis
          const answer = yield* Deferred.await(
            yield* write({
              _tag: "StartChild",
              ...held,
              address: call.address,
              sequence: call.sequence,
              entryPayload,
              workflowName: child.workflowName,
              workflowVersion: child.workflowVersion,
              payload: child.payload,
              ...(child.idempotencyKey !== undefined ? { idempotencyKey: child.idempotencyKey } : {}),
              parentClosePolicy: child.parentClosePolicy
            })
          )
          const elapsedMs = (yield* Clock.currentTimeMillis) - started
          if (answer._tag === "ChildStarted") {
            return yield* settle(call, { _tag: "Completed", result: { runId: answer.childRunId } }, 1, elapsedMs)
          }
          if (answer._tag === "IdempotencyConflict") {
            return yield* settle(call, { _tag: "Failed", error: { name: "IdempotencyConflict", message: answer.message } }, 1, elapsedMs)
          }
          // Refused otherwise: the answer's watcher ends the run.
          return yield* Effect.interrupt
        }))
      if (outcome._tag === "Failed") return yield* Effect.die(TaskError.fromDetails("aiki.child", outcome.error))
      return (outcome.result as { readonly runId: RunId }).runId
    })

  /**
   * Waits for child `childRunId` to end, parked on the server (`awaiting_child`) while it runs; its end is the
   * entry's outcome (a completed entry whose result says how the child ended), so a replay gets the same.
   */
  const awaitChild = (childRunId: RunId): Effect.Effect<ChildOutcome> =>
    Effect.gen(function*() {
      const entryPayload: Json = { runId: childRunId }
      const outcome = yield* durable("aiki.child.result", entryPayload, (call) =>
        Effect.gen(function*() {
          yield* Deferred.await(caughtUp)
          const started = yield* Clock.currentTimeMillis
          while (true) {
            const answer = yield* Deferred.await(
              yield* write({ _tag: "AwaitChild", ...held, address: call.address, sequence: call.sequence, entryPayload, childRunId })
            )
            if (answer._tag === "ChildEnded") {
              const { _tag, ...ended } = answer
              return yield* settle(call, { _tag: "Completed", result: ended as Json }, 1, (yield* Clock.currentTimeMillis) - started)
            }
            if (answer._tag !== "ChildRunning") return yield* Effect.interrupt
            // Still running: wait, durably, until a refused park says it ended (or the run, parked, is woken by its
            // end). While other work keeps the run here (a task beside the wait), nothing would tell this worker
            // of the child's end, so it asks again every second.
            const recheck = yield* Deferred.make<void>()
            call.recheck = recheck
            call.waiting = { child: childRunId, kind: "child" }
            yield* poke
            yield* Deferred.await(recheck).pipe(Effect.timeoutOption(Duration.seconds(1)))
            call.waiting = undefined
          }
        }))
      return outcome._tag === "Completed"
        ? outcome.result as unknown as ChildOutcome
        : yield* Effect.die(TaskError.fromDetails("aiki.child.result", outcome.error))
    })

  // ------------------------------------------------------------------------------------------------------------
  // The loop: outcomes reach the code one at a time, each once it is idle.

  const deliver = (call: Call, outcome: Outcome) =>
    Effect.suspend(() => {
      calls.delete(call.sequence)
      return Deferred.succeed(call.delivered, outcome)
    })

  /** Writes a live outcome with the next outcome order, then delivers it (the code may run ahead of the commit). */
  const deliverLive = ({ attempt, call, elapsedMs, outcome }: Ready) =>
    Effect.gen(function*() {
      const outcomeOrder = journal.takeOrder()
      yield* write({ _tag: "FinishTask", ...held, address: call.address, attempt, elapsedMs, outcome, outcomeOrder })
      journal.record({
        sequence: call.sequence,
        address: call.address,
        name: call.name,
        state: outcome._tag === "Completed" ? "completed" : "failed",
        attempts: attempt,
        outcome,
        outcomeOrder,
        notBefore: undefined
      })
      yield* deliver(call, outcome)
    })

  /** Parks the run when everything it waits for is durable and far enough; false when it must go on waiting here. */
  const parkIfIdle = Effect.gen(function*() {
    const pending = [...calls.values()]
    if (finishing || pending.length === 0 || ready.length > 0 || pending.some((c) => c.waiting === undefined || c.waiting.kind === "here")) {
      return false
    }
    const events = [...new Set(pending.flatMap((c) => c.waiting?.event ?? []))]
    const children = [...new Set(pending.flatMap((c) => c.waiting?.child ?? []))]
    const untils = pending.flatMap((c) => c.waiting?.until ?? [])
    const wakeAt = untils.length === 0 ? undefined : Math.min(...untils)
    // A near wake-up is waited here. Waiting for events or children, the run parks anyway (an event or a child's
    // end reaches it only so), unless a timed wait's deadline is within the second: its timer is about to look again.
    const near = events.length === 0 && children.length === 0 ? options.suspendAfterMs : Math.min(options.suspendAfterMs, 1_000)
    if (wakeAt !== undefined && wakeAt - (yield* serverNow) < near) return false
    const state: ParkedState = children.length > 0
      ? "awaiting_child"
      : events.length > 0
      ? "awaiting_event"
      : pending.some((c) => c.waiting?.kind === "retry")
      ? "awaiting_retry"
      : "sleeping"
    const park: ParkRun = {
      _tag: "ParkRun",
      ...held,
      state,
      events: events as Array<EventName>,
      ...(children.length > 0 ? { children } : {}),
      ...(wakeAt !== undefined ? { wakeAt: DateTime.makeUnsafe(wakeAt) } : {})
    }
    const answer = yield* Deferred.await(yield* write(park))
    if (answer._tag === "Written") {
      yield* end({ _tag: "Parked" })
      return true
    }
    if (answer._tag === "EventWaiting") {
      for (const call of pending) {
        if (call.waiting?.event !== undefined && answer.names.includes(call.waiting.event as EventName)) {
          call.waiting = undefined
          yield* Deferred.succeed(call.recheck!, undefined)
        }
      }
    }
    if (answer._tag === "ChildrenEnded") {
      for (const call of pending) {
        if (call.waiting?.child !== undefined && answer.runIds.includes(call.waiting.child)) {
          call.waiting = undefined
          yield* Deferred.succeed(call.recheck!, undefined)
        }
      }
    }
    return false
  })

  const loop = Effect.gen(function*() {
    while (true) {
      yield* scheduler.idle
      const next = replay[0]
      if (next !== undefined) {
        const call = calls.get(next.sequence)
        if (call === undefined) {
          const error = new NonDeterminismError({
            runId,
            sequence: next.sequence,
            expected: next.address,
            actual: "nothing: the workflow waits without making that call",
            message: `Run ${runId} is not deterministic: it recorded "${next.name}" (${next.address}) as call ` +
              `#${next.sequence}, but the workflow now waits without making that call. ` +
              `Deploy changed workflow code as a new version.`
          })
          return yield* end({ _tag: "Fatal", error })
        }
        replay.shift()
        yield* deliver(call, next.outcome!)
        continue
      }
      if (options.replayOnly === true) return yield* end({ _tag: "Waiting" })
      yield* Deferred.succeed(caughtUp, undefined)
      const live_ = ready.shift()
      if (live_ !== undefined) {
        yield* deliverLive(live_)
        continue
      }
      if (yield* parkIfIdle) return
      yield* Queue.take(signal)
    }
  })

  // ------------------------------------------------------------------------------------------------------------
  // The workflow: its attempts, its end.

  const context = WorkflowRun.of({
    runId,
    workflowName: run.workflowName,
    workflowVersion: run.workflowVersion,
    task,
    sleep,
    waitForEvent,
    waitForEventWithin,
    patched,
    deprecatePatch,
    startChild,
    awaitChild
  })

  /** Starts (again) from the top: the replay is every recorded outcome, live work waits for it again. */
  const restart = Effect.gen(function*() {
    journal.restart()
    patches = new Map()
    yield* FiberSet.clear(live)
    calls.clear()
    ready.length = 0
    replay = journal.recordedOutcomes(rerunFailed)
    caughtUp = yield* Deferred.make<void>()
    yield* poke
  })

  const workflowRetrier = yield* Retry.make(workflow.retry)
  const attempts = (payload: unknown): Effect.Effect<unknown, unknown> =>
    Effect.gen(function*() {
      for (let attempt = run.policyAttempt ?? 1;; attempt++) {
        yield* restart
        const exit = yield* Effect.exit(workflow.run(payload as never) as Effect.Effect<unknown, unknown, WorkflowRun>).pipe(
          Effect.provideService(WorkflowRun, context)
        )
        if (Exit.isSuccess(exit)) return exit.value
        const failure = JsonCodec.primaryError(exit.cause)
        if (Option.isNone(failure)) return yield* exit
        const delay = yield* workflowRetrier.next(attempt, failure.value.error)
        if (Option.isNone(delay)) return yield* exit
        yield* Effect.logInfo(`Workflow attempt ${attempt} failed; retrying`, { runId, error: String(failure.value.error) })
        // Counted before the delay: a worker taking the run over during it goes on with the next attempt.
        const counted = yield* Deferred.await(yield* write({ _tag: "BeginAttempt", ...held, attempt: attempt + 1 }))
        if (counted._tag !== "Written") return yield* Effect.interrupt
        rerunFailed = true
        yield* Effect.sleep(delay.value)
      }
    })

  /** Writes how the run ended (after every write before it) and waits until it is committed. */
  const finish = (exit: Exit.Exit<unknown, unknown>) =>
    Effect.gen(function*() {
      finishing = true
      if (Exit.isSuccess(exit)) {
        const unreached = journal.unreached()[0]
        if (unreached !== undefined) {
          return yield* end({
            _tag: "Fatal",
            error: new NonDeterminismError({
              runId,
              sequence: unreached.sequence,
              expected: unreached.address,
              actual: "the end of the workflow",
              message: `Run ${runId} is not deterministic: it recorded call #${unreached.sequence} "${unreached.name}" ` +
                `but the workflow now finishes before making it. Deploy changed workflow code as a new version.`
            })
          })
        }
        const result = yield* JsonCodec.encode(workflow.successSchema, exit.value, `the result of run ${runId}`).pipe(Effect.result)
        const tooLarge = result._tag === "Success" ? checkSize(result.success, `The result of run ${runId}`) : undefined
        if (result._tag === "Success" && tooLarge === undefined) {
          const answer = yield* Deferred.await(yield* write({ _tag: "CompleteRun", ...held, result: result.success }))
          return yield* answer._tag === "Written" ? end({ _tag: "Finished", end: "completed" }) : Effect.void
        }
        const error = result._tag === "Failure" ? JsonCodec.describeError(result.failure) : { name: "ResultTooLarge", message: tooLarge! }
        return yield* failWith(error)
      }
      const failure = JsonCodec.primaryError(exit.cause)
      // Interrupted: the run was stopped; whoever stopped it said how.
      if (Option.isNone(failure)) return
      const { error, typed } = failure.value
      const data = typed
        ? Option.getOrUndefined(yield* JsonCodec.encode(workflow.errorSchema, error, "the run's error").pipe(Effect.option))
        : undefined
      yield* failWith(JsonCodec.describeError(error, data, options.maxPayloadBytes))
    })

  const failWith = (error: ErrorDetails) =>
    Effect.gen(function*() {
      const answer = yield* Deferred.await(yield* write({ _tag: "FailRun", ...held, error }))
      if (answer._tag === "Written") yield* end({ _tag: "Finished", end: "failed" })
    })

  const payload = yield* JsonCodec.decode(workflow.payloadSchema, run.payload, `the payload of run ${runId}`).pipe(Effect.exit)
  // The code and how it finishes run on the run's scheduler: the loop sees the run idle only once they are.
  yield* (Exit.isSuccess(payload) ? attempts(payload.value) : Effect.failCause(payload.cause)).pipe(
    Effect.exit,
    Effect.flatMap(finish),
    Effect.provideService(Scheduler.Scheduler, scheduler),
    Effect.forkIn(scope)
  )
  yield* outside(loop).pipe(Effect.forkIn(scope))

  const ended = yield* Deferred.await(ending)
  switch (ended._tag) {
    case "Finished":
      return ended.end satisfies RunEnd
    case "Parked":
      return "parked" satisfies RunEnd
    case "Lost":
      return "lost" satisfies RunEnd
    case "Waiting":
      return "waiting" satisfies RunEnd
    case "Fatal": {
      // A non-determinism, or a write the server refused for good: the run fails, saying why. Nothing loops.
      const error = JsonCodec.describeError(ended.error, undefined, options.maxPayloadBytes)
      yield* Effect.logWarning(`Run ${runId} failed: ${error.name}: ${error.message}`)
      const answer = yield* Deferred.await(yield* writes.submit({ _tag: "FailRun", ...held, error }))
      return (answer._tag === "Written" ? "failed" : "lost") satisfies RunEnd
    }
  }
}, Effect.scoped)
