/**
 * Whether the current tracer exports spans. Under Effect's native tracer (no tracer given) a span is kept in
 * memory for nobody, so the worker makes none of its own: a span per task attempt, with its stack trace, was about
 * a fifth of a no-op task's CPU time.
 */
import * as Effect from "effect/Effect"
import * as Tracer from "effect/Tracer"

export const exportsSpans: Effect.Effect<boolean> = Effect.map(Effect.tracer, (tracer) => tracer !== Tracer.nativeTracer)
