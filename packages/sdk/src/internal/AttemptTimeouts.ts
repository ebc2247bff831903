/**
 * Where the server's word that a task attempt timed out meets the attempt: the worker hands each signal (or a
 * heartbeat's answer) to `fire`, the attempt waits on `timedOut`. Either may come first: a signal that arrives
 * before its attempt looks is kept for it.
 */
import type { TaskTimeoutKind } from "@aiki/contract/Timeouts"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"

export class AttemptTimeouts {
  private readonly pending = new Map<string, Deferred.Deferred<TaskTimeoutKind>>()

  private deferred(address: string, attempt: number) {
    const key = `${address}|${attempt}`
    let deferred = this.pending.get(key)
    if (deferred === undefined) {
      deferred = Deferred.makeUnsafe<TaskTimeoutKind>()
      this.pending.set(key, deferred)
    }
    return deferred
  }

  /** The server failed attempt `attempt` of the task at `address` for a timeout of `kind`. */
  fire(address: string, attempt: number, kind: TaskTimeoutKind): Effect.Effect<void> {
    return Effect.asVoid(Deferred.succeed(this.deferred(address, attempt), kind))
  }

  /** `fire`, from a callback. */
  fireUnsafe(address: string, attempt: number, kind: TaskTimeoutKind): void {
    Deferred.doneUnsafe(this.deferred(address, attempt), Exit.succeed(kind))
  }

  /** Completes with the kind of timeout once the server failed the attempt. */
  timedOut(address: string, attempt: number): Effect.Effect<TaskTimeoutKind> {
    return Deferred.await(this.deferred(address, attempt))
  }

  /** The attempt ended: forget it. */
  forget(address: string, attempt: number): void {
    this.pending.delete(`${address}|${attempt}`)
  }
}
