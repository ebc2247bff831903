/**
 * Encoding values to the JSON that is stored, and back, with a definition's schema; and the stable hash of a
 * payload that addresses a task in the journal.
 */
import type { ErrorDetails, Json } from "@aiki/contract/Models"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Predicate from "effect/Predicate"
import * as Schema from "effect/Schema"
import { hash as digest } from "node:crypto"
import { SerializationError } from "../Errors.ts"

const codecs = new WeakMap<Schema.Top, Schema.Top>()
const codecJson = (schema: Schema.Top): Schema.Codec<unknown, unknown> => {
  let codec = codecs.get(schema)
  if (codec === undefined) {
    codec = Schema.toCodecJson(schema)
    codecs.set(schema, codec)
  }
  return codec as Schema.Codec<unknown, unknown>
}

/**
 * The schema of the promise API's payloads and results. They are made JSON by the API itself (`JSON.parse` of
 * `JSON.stringify`) before they reach the engine, and what comes back from the server is JSON, so encoding or
 * decoding them is the identity: it is skipped (a schema check costs a few µs per value, three per task).
 */
export const PlainJson: typeof Schema.Json = Schema.Json.annotate({ identifier: "PlainJson" })

export const encode = (schema: Schema.Top, value: unknown, what: string): Effect.Effect<Json, SerializationError> =>
  schema === PlainJson ? Effect.succeed(value as Json) : Schema.encodeUnknownEffect(codecJson(schema))(value).pipe(
    Effect.map((json) => (json === undefined ? null : json) as Json),
    Effect.mapError((cause) => new SerializationError({ what, cause }))
  )

export const decode = <A>(schema: Schema.Top & { readonly Type: A }, json: unknown, what: string) =>
  (schema as Schema.Top) === PlainJson ? Effect.succeed(json as A) : Schema.decodeUnknownEffect(codecJson(schema))(json).pipe(
    Effect.map((value) => value as A),
    Effect.mapError((cause) => new SerializationError({ what, cause }))
  )

/** JSON with object keys sorted, so equal payloads hash equally whatever their key order. */
const canonical = (value: unknown): string =>
  Array.isArray(value)
    ? `[${value.map(canonical).join(",")}]`
    : Predicate.isObject(value)
    ? `{${
      Object.keys(value).sort().map((key) => `${JSON.stringify(key)}:${canonical((value as Record<string, unknown>)[key])}`)
        .join(",")
    }}`
    : JSON.stringify(value) ?? "null"

export const hash = (json: Json): string => digest("sha256", canonical(json), "hex").slice(0, 16)

/** A thrown value as JSON (what `JSON.stringify` keeps), or its string form when it has none. */
const jsonSafe = (value: unknown): Json => {
  try {
    const text = JSON.stringify(value)
    return text === undefined ? String(value) : JSON.parse(text) as Json
  } catch {
    return String(value)
  }
}

/** An Error's own enumerable properties (`code`, `status`…), when it has some. */
const ownData = (error: Error): Json | undefined => {
  const own = Object.fromEntries(Object.entries(error).filter(([key]) => key !== "stack" && key !== "message"))
  return Object.keys(own).length > 0 ? jsonSafe(own) : undefined
}

/**
 * How a failure is stored, decided once for every kind of thrown value, so the first execution and every replay
 * see the same thing: the error's tag or name, its message, its stack, and data — a declared error encoded, an
 * Error's own properties, or `{ thrown }` for a value that is not an Error. Kept under `maxBytes` (the stack, then
 * the data, then the message are shortened).
 */
export const describeError = (error: unknown, data?: Json, maxBytes = Number.POSITIVE_INFINITY): ErrorDetails => {
  const isError = error instanceof Error
  const name = Predicate.hasProperty(error, "_tag") && typeof error._tag === "string"
    ? error._tag
    : isError
    ? error.name
    : "Error"
  const message = isError
    ? error.message
    : Predicate.hasProperty(error, "message") && typeof error.message === "string"
    ? error.message
    : typeof error === "string"
    ? error
    : JSON.stringify(error) ?? String(error)
  const stored = data ?? (isError ? ownData(error) : { thrown: jsonSafe(error) })
  const details: ErrorDetails = {
    name,
    message,
    ...(isError && error.stack !== undefined ? { stack: error.stack } : {}),
    ...(stored !== undefined ? { data: stored } : {})
  }
  return fit(details, maxBytes)
}

const fit = (details: ErrorDetails, maxBytes: number): ErrorDetails => {
  const size = (d: ErrorDetails) => Buffer.byteLength(JSON.stringify(d))
  if (!Number.isFinite(maxBytes) || size(details) <= maxBytes) return details
  const { data: _data, stack: _stack, ...bare } = details
  const budget = Math.max(256, Math.floor(maxBytes / 4))
  const shortened: ErrorDetails = {
    ...bare,
    message: details.message.length > budget ? `${details.message.slice(0, budget)}… (shortened to fit)` : details.message,
    ...(details.stack !== undefined ? { stack: details.stack.slice(0, budget) } : {})
  }
  return size(shortened) <= maxBytes ? shortened : { name: details.name.slice(0, 256), message: shortened.message.slice(0, budget) }
}

/** The first typed failure or defect of a cause, if it has one (not for a pure interruption). */
export const primaryError = <E>(cause: Cause.Cause<E>): Option.Option<{ readonly typed: boolean; readonly error: unknown }> => {
  for (const reason of cause.reasons) {
    if (Cause.isFailReason(reason)) return Option.some({ typed: true, error: reason.error })
  }
  for (const reason of cause.reasons) {
    if (Cause.isDieReason(reason)) return Option.some({ typed: false, error: reason.defect })
  }
  return Option.none()
}
