/**
 * A schedule's fire times, as plain arithmetic over epoch milliseconds: the next one after an instant, those in a
 * range (bounded), how many a range holds, and a fire time's jitter. Cron expressions are Effect's `Cron` (time
 * zones and DST included); intervals are aligned on the Unix epoch, so every replica computes the same times.
 */
import type { ScheduleSpec } from "@aiki/contract/Schedules"
import { Cron, Result } from "effect"

const crons = new Map<string, Cron.Cron>()

/** The parsed cron of a spec (specs are validated when a schedule is created, so parsing cannot fail here). */
const cronOf = (spec: { readonly cron: string; readonly timezone?: string }) => {
  const cacheKey = `${spec.cron}\u001f${spec.timezone ?? "UTC"}`
  let cron = crons.get(cacheKey)
  if (cron === undefined) {
    cron = Result.getOrThrow(Cron.parse(spec.cron, spec.timezone ?? "UTC"))
    crons.set(cacheKey, cron)
  }
  return cron
}

/** The first fire time strictly after `afterMs`. */
export const nextFireTime = (spec: ScheduleSpec, afterMs: number): number =>
  "everyMs" in spec
    ? (Math.floor(afterMs / spec.everyMs) + 1) * spec.everyMs
    : Cron.next(cronOf(spec), new Date(afterMs)).getTime()

/** The first fire time at or after `fromMs`. */
export const firstFireTimeFrom = (spec: ScheduleSpec, fromMs: number): number => nextFireTime(spec, fromMs - 1)

/** The fire times in `[fromMs, toMs)`, at most `max` of them (`truncated` when there were more). */
export const fireTimesBetween = (spec: ScheduleSpec, fromMs: number, toMs: number, max: number) => {
  const times: Array<number> = []
  for (let t = firstFireTimeFrom(spec, fromMs); t < toMs; t = nextFireTime(spec, t)) {
    if (times.length === max) return { times, truncated: true }
    times.push(t)
  }
  return { times, truncated: false }
}

/** How many fire times `[fromMs, toMs)` holds (a cron's are counted one by one, up to `cap`). */
export const countFireTimes = (spec: ScheduleSpec, fromMs: number, toMs: number, cap = 1_000_000): number => {
  if (toMs <= fromMs) return 0
  if ("everyMs" in spec) return Math.max(0, Math.ceil(toMs / spec.everyMs) - Math.ceil(fromMs / spec.everyMs))
  return fireTimesBetween(spec, fromMs, toMs, cap).times.length
}

/** The delay of a fire time within `jitterMs`: derived from the schedule and the time, so every replica agrees. */
export const jitterOf = (scheduleId: string, fireMs: number, jitterMs: number): number => {
  if (jitterMs <= 0) return 0
  // FNV-1a over the schedule id and the fire time.
  let hash = 0x811c9dc5
  for (const char of `${scheduleId}@${fireMs}`) {
    hash ^= char.charCodeAt(0)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash % (jitterMs + 1)
}
