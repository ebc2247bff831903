/**
 * Changes to runs and tasks as they commit on this server, for whoever follows them in-process: metrics now,
 * live updates for clients later. Publishing never blocks a write: a subscriber that falls behind loses the oldest
 * events, not the writer's time.
 */
import type { RunId } from "@aiki/contract/Ids"
import type { Task, WorkflowRun } from "@aiki/contract/Models"
import type { RunState } from "@aiki/contract/RunState"
import { Context, Data, Effect, Layer, PubSub, Stream } from "effect"

export type RunEvent = Data.TaggedEnum<{
  /** `previous` is null when the run was just started. */
  RunChanged: { readonly run: WorkflowRun; readonly previous: RunState | null }
  TaskChanged: { readonly runId: RunId; readonly task: Task }
}>
export const RunEvent = Data.taggedEnum<RunEvent>()

export class RunEvents extends Context.Service<RunEvents, {
  readonly publish: (run: WorkflowRun, previous: RunState | null) => Effect.Effect<void>
  readonly publishTask: (runId: RunId, task: Task) => Effect.Effect<void>
  /** Events from the moment the stream is run. */
  readonly stream: Stream.Stream<RunEvent>
}>()("@aiki/server/RunEvents") {
  static readonly layer = Layer.effect(
    RunEvents,
    Effect.gen(function*() {
      const pubsub = yield* Effect.acquireRelease(PubSub.sliding<RunEvent>(4096), PubSub.shutdown)
      return RunEvents.of({
        publish: (run, previous) => PubSub.publish(pubsub, RunEvent.RunChanged({ run, previous })).pipe(Effect.asVoid),
        publishTask: (runId, task) => PubSub.publish(pubsub, RunEvent.TaskChanged({ runId, task })).pipe(Effect.asVoid),
        stream: Stream.fromPubSub(pubsub)
      })
    })
  )
}
