/**
 * Executes one leased run: the workflow's code from the top, with each task call looked up in the journal by its
 * place in the run (its sequence) and its address (name, payload hash, occurrence). Recorded results are returned
 * without running anything; new tasks run, with retries, and their outcome is committed to the server before the
 * workflow continues. Every write carries the lease epoch: when the server answers `LeaseLost`, the run's fiber is
 * interrupted and this worker stops touching the run.
 */
import type { AikiClient as ApiClient } from "@aiki/contract/Client"
import type { EventName, LeaseEpoch, TaskAddress, TaskName } from "@aiki/contract/Ids"
import type { Json, Lease, Task } from "@aiki/contract/Models"
import { Cause, Duration, Effect, Exit, Option, Ref } from "effect"
import { retryTransient } from "../AikiClient.ts"
import { NonDeterminismError } from "../Errors.ts"
import * as Retry from "../Retry.ts"
import type * as Workflow from "../Workflow.ts"
import { type TaskDefinition, WorkflowRun } from "../WorkflowRun.ts"
import * as JsonCodec from "./json.ts"

/** Why a run's fiber was interrupted (from outside, or by its own suspension). */
export type StopReason = "cancelled" | "lost" | "shutdown" | "suspended"

export interface ExecutionOptions {
  /** Waits (retry delays, sleeps) at least this long park the run on the server instead of waiting here. */
  readonly suspendAfterMs: number
}

/** Server answers that mean this worker no longer holds the run. */
const isLost = (error: { readonly _tag: string }) =>
  error._tag === "LeaseLost" || error._tag === "RunNotFound"

/**
 * Runs `workflow` for `lease` to its end and reports the outcome. Interrupted (cancel, lease lost, shutdown), it
 * reports nothing except on shutdown, where it releases the run so another worker takes it over at once.
 */
export const execute = (
  api: ApiClient,
  workflow: Workflow.Any,
  lease: Lease,
  stopReason: Ref.Ref<StopReason | undefined>,
  options: ExecutionOptions
) =>
  executeAndReport(api, workflow, lease, stopReason, options).pipe(
    // Interrupted for a shutdown: hand the run back now rather than after its lease runs out (best effort: if the
    // server does not answer in time, the lease lapses and the reaper requeues the run).
    Effect.onInterrupt(() =>
      Effect.gen(function*() {
        if ((yield* Ref.get(stopReason)) !== "shutdown") return
        yield* retryTransient(api.execution.release({ params: { id: lease.run.id }, payload: { leaseEpoch: lease.leaseEpoch } }))
          .pipe(Effect.timeout("3 seconds"), Effect.ignore)
      })
    )
  )

const executeAndReport = Effect.fnUntraced(function*(
  api: ApiClient,
  workflow: Workflow.Any,
  lease: Lease,
  stopReason: Ref.Ref<StopReason | undefined>,
  options: ExecutionOptions
) {
  const run = lease.run
  const runId = run.id
  const leaseEpoch: LeaseEpoch = lease.leaseEpoch
  const journal = new Map<number, Task>(lease.journal.map((task) => [task.sequence, task]))
  const occurrences = new Map<string, number>()
  let nextSequence = 0
  // From the second workflow attempt on, tasks that failed for good run again (completed ones stay memoized).
  let restartFailed = false
  // A non-determinism found anywhere fails the run, even if the workflow's code caught it.
  let fatal: NonDeterminismError | undefined

  /** The lease is gone: stop this run's fiber (the actor reads the reason). */
  const lost = Effect.andThen(Ref.set(stopReason, "lost"), Effect.interrupt)

  /** A write to the server about this run; transient failures are retried, a lost lease stops the run. */
  const write = <A, E extends { readonly _tag: string }>(effect: Effect.Effect<A, E>) =>
    retryTransient(effect).pipe(
      Effect.catchIf(isLost, () => lost),
      Effect.orDie
    )

  /**
   * The journal entry a call at `sequence` addresses (name, payload hash, occurrence), and what is recorded
   * there; a recorded entry of another address means the workflow changed (`NonDeterminismError`).
   */
  const locate = (name: string, encoded: Json, sequence: number) =>
    Effect.suspend(() => {
      const key = `${name}:${JsonCodec.hash(encoded)}`
      const occurrence = occurrences.get(key) ?? 0
      occurrences.set(key, occurrence + 1)
      const address = `${key}:${occurrence}` as TaskAddress
      const recorded = journal.get(sequence)
      if (recorded !== undefined && recorded.address !== address) {
        return Effect.die(
          fatal = new NonDeterminismError({
            runId,
            sequence,
            expected: recorded.address,
            actual: address,
            message: `Run ${runId} is not deterministic: its task #${sequence} was "${recorded.name}" ` +
              `(${recorded.address}) when it was recorded, but the workflow now starts "${name}" ` +
              `(${address}) there. Deploy changed workflow code as a new version.`
          })
        )
      }
      return Effect.succeed({ address, recorded })
    })

  const task = <P, A, E, R>(definition: TaskDefinition<P, A, E, R>, payload: P): Effect.Effect<A, E, R> =>
    Effect.suspend(() => {
      // Taken before anything asynchronous, so concurrent task calls are numbered in the order they were made.
      const sequence = nextSequence++
      return Effect.gen(function*() {
        const encoded = yield* JsonCodec.encode(definition.payloadSchema, payload, `the payload of task ${definition.name}`)
          .pipe(Effect.orDie)
        const { address, recorded } = yield* locate(definition.name, encoded, sequence)
        const rerun = recorded?.state === "failed" && restartFailed
        const replayed = recorded === undefined || rerun ? undefined : yield* fromJournal(definition, recorded)
        if (replayed !== undefined) return yield* replayed
        return yield* runTask(definition, payload, { address, sequence, encoded, restart: rerun })
      })
    })

  /** The recorded outcome of a finished task, or undefined when it must (still) run. */
  const fromJournal = <P, A, E, R>(definition: TaskDefinition<P, A, E, R>, recorded: Task) =>
    Effect.gen(function*() {
      switch (recorded.state) {
        case "completed":
          return Effect.succeed(
            yield* JsonCodec.decode(definition.successSchema, recorded.result ?? null, `the result of ${definition.name}`)
              .pipe(Effect.orDie)
          )
        case "failed":
          return yield* failureOf(definition, recorded)
        case "pending":
        case "running":
        case "retrying":
          return undefined
      }
    })

  /** A task that failed for good: its declared error when it had one, else the stored failure as a defect. */
  const failureOf = <P, A, E, R>(definition: TaskDefinition<P, A, E, R>, recorded: Task) =>
    Effect.gen(function*() {
      const error = recorded.error ?? { name: "Error", message: `task ${recorded.name} failed` }
      if (error.data !== undefined) {
        const decoded = yield* JsonCodec.decode(definition.errorSchema, error.data, "a task error").pipe(Effect.option)
        if (Option.isSome(decoded)) return Effect.fail(decoded.value)
      }
      return Effect.die(Object.assign(new Error(error.message), { name: error.name }))
    })

  const runTask = <P, A, E, R>(
    definition: TaskDefinition<P, A, E, R>,
    payload: P,
    at: { readonly address: TaskAddress; readonly sequence: number; readonly encoded: Json; readonly restart: boolean }
  ): Effect.Effect<A, E, R> =>
    Effect.gen(function*() {
      const retrier = yield* Retry.make(definition.retry)
      let restart = at.restart
      while (true) {
        const started = yield* write(api.execution.startTask({
          params: { id: runId },
          payload: {
            leaseEpoch,
            address: at.address,
            name: definition.name as TaskName,
            payload: at.encoded,
            sequence: at.sequence,
            ...(restart ? { restart } : {})
          }
        }))
        restart = false
        journal.set(at.sequence, started)
        const replayed = yield* fromJournal(definition, started)
        if (replayed !== undefined) return yield* replayed
        const attempt = started.attempts.length
        const exit = yield* definition.run(payload, {
          attempt,
          runId,
          workflowName: run.workflowName,
          workflowVersion: run.workflowVersion
        }).pipe(Effect.exit)
        if (Exit.isSuccess(exit)) {
          // A result that cannot be stored is a bug in the task's schema: the run fails with it.
          const result = yield* JsonCodec.encode(definition.successSchema, exit.value, `the result of ${definition.name}`)
            .pipe(Effect.orDie)
          const completed = yield* write(api.execution.completeTask({
            params: { id: runId },
            payload: { leaseEpoch, address: at.address, attempt, result }
          }))
          journal.set(at.sequence, completed)
          return exit.value
        }
        const failure = JsonCodec.primaryError(exit.cause)
        // Interrupted (cancelled, lost, shutting down): nothing to record, the next owner retries the attempt.
        if (Option.isNone(failure)) return yield* Effect.failCause(exit.cause)
        const { error, typed } = failure.value
        const data = typed
          ? yield* JsonCodec.encode(definition.errorSchema, error, "a task error").pipe(Effect.option)
          : Option.none()
        const delay = yield* retrier.next(attempt, error)
        const failed = yield* write(api.execution.failTask({
          params: { id: runId },
          payload: {
            leaseEpoch,
            address: at.address,
            attempt,
            error: JsonCodec.describeError(error, Option.getOrUndefined(data)),
            willRetry: Option.isSome(delay)
          }
        }))
        journal.set(at.sequence, failed)
        if (Option.isNone(delay)) return yield* Effect.failCause(exit.cause)
        const delayMs = Duration.toMillis(delay.value)
        if (retrier.durable && delayMs >= options.suspendAfterMs) {
          // A long wait holds no worker and no lease: the server wakes the run when it is due, and whichever
          // worker takes it replays the journal up to this task and runs its next attempt.
          yield* write(api.execution.suspend({
            params: { id: runId },
            payload: { leaseEpoch, state: "awaiting_retry", delayMs: Math.round(delayMs) }
          }))
          return yield* Effect.andThen(Ref.set(stopReason, "suspended"), Effect.interrupt)
        }
        yield* Effect.sleep(delay.value)
      }
    })

  /**
   * A durable wait: a journal entry named `aiki.sleep`. A short one waits here (a crash repeats it in full); a long
   * one parks the run (`sleeping`) and completes its entry in the same transaction, so the replay after waking
   * goes straight on.
   */
  const sleep = (millis: number): Effect.Effect<void> =>
    Effect.suspend(() => {
      const sequence = nextSequence++
      return Effect.gen(function*() {
        const delayMs = Math.max(0, Math.round(millis))
        const { address, recorded } = yield* locate("aiki.sleep", { ms: delayMs }, sequence)
        if (recorded?.state === "completed") return
        const started = yield* write(api.execution.startTask({
          params: { id: runId },
          payload: { leaseEpoch, address, name: "aiki.sleep" as TaskName, payload: { ms: delayMs }, sequence }
        }))
        journal.set(sequence, started)
        if (started.state === "completed") return
        const attempt = started.attempts.length
        if (delayMs >= options.suspendAfterMs) {
          yield* write(api.execution.suspend({
            params: { id: runId },
            payload: { leaseEpoch, state: "sleeping", delayMs, completeTask: { address, attempt, result: null } }
          }))
          return yield* Effect.andThen(Ref.set(stopReason, "suspended"), Effect.interrupt)
        }
        yield* Effect.sleep(Duration.millis(delayMs))
        journal.set(sequence, yield* write(api.execution.completeTask({
          params: { id: runId },
          payload: { leaseEpoch, address, attempt, result: null }
        })))
      })
    })

  /**
   * The next event `name`: a journal entry `aiki.event` that the server completes with the event's payload, or,
   * with none sent yet, parks the run (`awaiting_event`) until one is; the replay after that receives it.
   */
  const waitForEvent = (name: string): Effect.Effect<Json> =>
    Effect.suspend(() => {
      const sequence = nextSequence++
      return Effect.gen(function*() {
        const { address, recorded } = yield* locate("aiki.event", { name }, sequence)
        if (recorded?.state === "completed") return recorded.result ?? null
        const started = yield* write(api.execution.startTask({
          params: { id: runId },
          payload: { leaseEpoch, address, name: "aiki.event" as TaskName, payload: { name }, sequence }
        }))
        journal.set(sequence, started)
        if (started.state === "completed") return started.result ?? null
        const received = yield* write(api.execution.receiveEvent({
          params: { id: runId },
          payload: { leaseEpoch, name: name as EventName, address, attempt: started.attempts.length }
        }))
        if (received._tag === "Waiting") {
          return yield* Effect.andThen(Ref.set(stopReason, "suspended"), Effect.interrupt)
        }
        journal.set(sequence, received.task)
        return received.payload
      })
    })

  const context = WorkflowRun.of({
    runId,
    workflowName: run.workflowName,
    workflowVersion: run.workflowVersion,
    task,
    sleep,
    waitForEvent
  })

  const workflowRetrier = yield* Retry.make(workflow.retry)
  const attemptWorkflow = (payload: unknown) =>
    Effect.suspend(() => {
      nextSequence = 0
      occurrences.clear()
      // The worker's layer asked for the workflow's services (`Workflow.Services`), so they are in this context.
      return workflow.run(payload as never) as Effect.Effect<unknown, unknown, WorkflowRun>
    })
  /** The workflow's attempts: a failure (not a non-determinism, not an interruption) is retried per its policy. */
  const attempts = (payload: unknown): Effect.Effect<unknown, unknown, WorkflowRun> =>
    Effect.gen(function*() {
      for (let attempt = 1;; attempt++) {
        const exit = yield* Effect.exit(attemptWorkflow(payload))
        if (Exit.isSuccess(exit) || fatal !== undefined) return yield* exit
        const failure = JsonCodec.primaryError(exit.cause)
        if (Option.isNone(failure)) return yield* exit
        const delay = yield* workflowRetrier.next(attempt, failure.value.error)
        if (Option.isNone(delay)) return yield* exit
        yield* Effect.logInfo(`Workflow attempt ${attempt} failed; retrying`, { runId, error: String(failure.value.error) })
        restartFailed = true
        yield* Effect.sleep(delay.value)
      }
    })

  const outcome = yield* JsonCodec.decode(workflow.payloadSchema, run.payload, `the payload of run ${runId}`).pipe(
    Effect.flatMap(attempts),
    Effect.tap(() =>
      // The code finished without reaching tasks it had recorded: it no longer does what the run did.
      Effect.suspend(() => {
        if (fatal !== undefined) return Effect.die(fatal)
        const unmatched = [...journal.keys()].filter((sequence) => sequence >= nextSequence)
        if (unmatched.length === 0) return Effect.void
        const first = journal.get(Math.min(...unmatched))!
        return Effect.die(
          new NonDeterminismError({
            runId,
            sequence: first.sequence,
            expected: first.address,
            actual: "the end of the workflow",
            message: `Run ${runId} is not deterministic: it recorded task #${first.sequence} "${first.name}" ` +
              `but the workflow now finishes before starting it. Deploy changed workflow code as a new version.`
          })
        )
      })
    ),
    Effect.provideService(WorkflowRun, context),
    Effect.exit
  )

  if (Exit.isSuccess(outcome)) {
    const result = yield* JsonCodec.encode(workflow.successSchema, outcome.value, `the result of run ${runId}`).pipe(
      Effect.exit
    )
    if (Exit.isSuccess(result)) {
      return yield* write(api.execution.complete({ params: { id: runId }, payload: { leaseEpoch, result: result.value } }))
    }
    return yield* write(api.execution.fail({
      params: { id: runId },
      payload: { leaseEpoch, error: JsonCodec.describeError(Cause.squash(result.cause)) }
    }))
  }
  const failure = fatal !== undefined
    ? Option.some({ typed: false, error: fatal as unknown })
    : JsonCodec.primaryError(outcome.cause)
  if (Option.isNone(failure)) return yield* Effect.failCause(outcome.cause as Cause.Cause<never>)
  const { error, typed } = failure.value
  const data = typed
    ? yield* JsonCodec.encode(workflow.errorSchema, error, "the run's error").pipe(Effect.option)
    : Option.none()
  return yield* write(api.execution.fail({
    params: { id: runId },
    payload: { leaseEpoch, error: JsonCodec.describeError(error, Option.getOrUndefined(data)) }
  }))
})
