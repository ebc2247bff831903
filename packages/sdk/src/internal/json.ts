/**
 * Encoding values to the JSON that is stored, and back, with a definition's schema; and the stable hash of a
 * payload that addresses a task in the journal.
 */
import type { ErrorDetails, Json } from "@aiki/contract/Models"
import { Cause, Effect, Option, Predicate, Schema } from "effect"
import { createHash } from "node:crypto"
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

export const encode = (schema: Schema.Top, value: unknown, what: string): Effect.Effect<Json, SerializationError> =>
  Schema.encodeUnknownEffect(codecJson(schema))(value).pipe(
    Effect.map((json) => (json === undefined ? null : json) as Json),
    Effect.mapError((cause) => new SerializationError({ what, cause }))
  )

export const decode = <A>(schema: Schema.Top & { readonly Type: A }, json: unknown, what: string) =>
  Schema.decodeUnknownEffect(codecJson(schema))(json).pipe(
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

export const hash = (json: Json): string => createHash("sha256").update(canonical(json)).digest("hex").slice(0, 16)

/** How an error is stored: its tag or name, message, stack, and (for a declared error) its encoded value. */
export const describeError = (error: unknown, data?: Json): ErrorDetails => {
  const name = Predicate.hasProperty(error, "_tag") && typeof error._tag === "string"
    ? error._tag
    : error instanceof Error
    ? error.name
    : "Error"
  const message = error instanceof Error
    ? error.message
    : Predicate.hasProperty(error, "message") && typeof error.message === "string"
    ? error.message
    : String(error)
  const stack = error instanceof Error ? error.stack : undefined
  return { name, message, ...(stack !== undefined ? { stack } : {}), ...(data !== undefined ? { data } : {}) }
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
