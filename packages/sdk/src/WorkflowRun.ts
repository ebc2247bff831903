/**
 * The run a workflow's code is executing, available inside a workflow as a service. Tasks started from the
 * workflow go through it: it looks each call up in the run's journal and runs only what is not recorded yet.
 */
import type { IdempotencyKey, RunId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { ErrorDetails, Json, ParentClosePolicy } from "@aiki/contract/Models"
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type * as Schema from "effect/Schema"
import type { Retry } from "./Retry.ts"

/** What the engine needs to know of a task to run it durably. */
export interface TaskDefinition<P, A, E, R> {
  readonly name: string
  readonly payloadSchema: Schema.Top & { readonly Type: P }
  readonly successSchema: Schema.Top & { readonly Type: A }
  readonly errorSchema: Schema.Top & { readonly Type: E }
  readonly retry: Retry | undefined
  /** The server fails an attempt still running this long after it began (`TaskTimedOut`). */
  readonly timeoutMs?: number | undefined
  /** The server fails an attempt that goes this long without `context.heartbeat` (`TaskTimedOut`). */
  readonly heartbeatTimeoutMs?: number | undefined
  readonly run: (payload: P, context: TaskContext) => Effect.Effect<A, E, R>
}

/** What a task's code knows of the attempt it runs in. */
export interface TaskContext {
  /** 1 for the first attempt, 2 for the first retry, … (durable: it counts attempts made before a crash too). */
  readonly attempt: number
  readonly runId: RunId
  readonly workflowName: WorkflowName
  readonly workflowVersion: WorkflowVersion
  /** What the run was started with, as stored (JSON, before the workflow's payload schema decodes it). */
  readonly workflowPayload: Json
  /**
   * Tells the server the attempt is alive, with optional progress details (kept on the attempt, JSON): its
   * heartbeat timeout starts over. Call it regularly in long tasks with `heartbeatTimeoutMs`. Sent in the
   * background, at most a few times per heartbeat timeout (a call in between keeps only its details for the next).
   */
  readonly heartbeat: (details?: Json) => Effect.Effect<void>
}

/** A child run to start (`Workflow.startChild`), its payload encoded. */
export interface ChildStart {
  readonly workflowName: WorkflowName
  readonly workflowVersion: WorkflowVersion
  readonly payload: Json
  readonly idempotencyKey?: IdempotencyKey | undefined
  readonly parentClosePolicy: ParentClosePolicy
}

/** How a child run ended, as its parent's journal records it (values as stored, before the child's schemas). */
export type ChildOutcome =
  | { readonly state: "completed"; readonly result: Json }
  | { readonly state: "failed" | "cancelled"; readonly error?: ErrorDetails }

export class WorkflowRun extends Context.Service<WorkflowRun, {
  readonly runId: RunId
  readonly workflowName: WorkflowName
  readonly workflowVersion: WorkflowVersion
  /** Runs a task durably: a recorded result is returned without running it again. */
  readonly task: <P, A, E, R>(definition: TaskDefinition<P, A, E, R>, payload: P) => Effect.Effect<A, E, R>
  /** Waits durably: a long sleep parks the run on the server, and a replay after it does not sleep again. */
  readonly sleep: (millis: number) => Effect.Effect<void>
  /** The payload of the next event `name` sent to this run, waiting (parked on the server) until one arrives. */
  readonly waitForEvent: (name: string) => Effect.Effect<Json>
  /**
   * Like `waitForEvent`, but for at most `timeoutMs` (from when the wait began, by the server's clock): `None` when
   * the time ran out first. An event sent after that is kept for the next wait of that name.
   */
  readonly waitForEventWithin: (name: string, timeoutMs: number) => Effect.Effect<Option.Option<Json>>
  /**
   * Whether this run takes the code path of change `changeId`: true for runs that reach this point after the
   * change (recorded in the journal), false for runs that passed it under the code before. Answered once per run
   * and change id.
   */
  readonly patched: (changeId: string) => Effect.Effect<boolean>
  /** Marks change `changeId` as the only path: runs that recorded it replay, others record nothing. */
  readonly deprecatePatch: (changeId: string) => Effect.Effect<void>
  /** Starts a child run once (a replay gets the same run id back); returns its id. */
  readonly startChild: (child: ChildStart) => Effect.Effect<RunId>
  /** Waits for a child run to end, parked on the server (`awaiting_child`) meanwhile. */
  readonly awaitChild: (childRunId: RunId) => Effect.Effect<ChildOutcome>
}>()("@aiki/sdk/WorkflowRun") {}
