/**
 * How times, durations and values read on the page.
 */
import type { ErrorDetails } from "@aiki/contract/Models"
import { DateTime } from "effect"

export const millis = (instant: DateTime.DateTime): number => DateTime.toEpochMillis(instant)

/** `1.2 s`, `3 min 4 s`, `2 h 5 min`: the unit a person would say. */
export const duration = (ms: number): string => {
  if (ms < 1_000) return `${Math.max(0, Math.round(ms))} ms`
  if (ms < 60_000) return `${(ms / 1_000).toFixed(ms < 10_000 ? 2 : 1)} s`
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1_000)} s`
  return `${Math.floor(ms / 3_600_000)} h ${Math.round((ms % 3_600_000) / 60_000)} min`
}

/** A timestamp in the reader's time zone, to the second. */
export const time = (instant: DateTime.DateTime): string =>
  new Date(millis(instant)).toLocaleString(undefined, {
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit"
  })

/** `3 s ago`, `5 min ago`. */
export const ago = (ms: number): string => `${duration(ms)} ago`

export const json = (value: unknown): string => JSON.stringify(value, null, 2)

/** The trace id inside a W3C `traceparent` (`00-TRACEID-SPANID-01`). */
export const traceId = (traceParent: string): string => traceParent.split("-")[1] ?? traceParent

/**
 * A stored error in one line: its name and message, or — for an Effect workflow's typed error, whose message is
 * often empty — its name and fields.
 */
export const errorSummary = (error: ErrorDetails): string => {
  if (error.message !== "") return `${error.name}: ${error.message}`
  const data = typeof error.data === "object" && error.data !== null && !Array.isArray(error.data)
    ? Object.fromEntries(Object.entries(error.data).filter(([key]) => key !== "_tag"))
    : error.data
  return data === undefined ? error.name : `${error.name}: ${JSON.stringify(data)}`
}
