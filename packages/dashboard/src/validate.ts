/**
 * Checks a value against a workflow's registered payload schema (JSON Schema draft 2020-12, as workers register
 * it) with Effect's own Schema, imported from the JSON Schema. Loaded only when a run is started from the page.
 */
import { JsonSchema, Result, Schema, SchemaIssue, SchemaRepresentation } from "effect"

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

/** What is wrong with `value`, one line per problem with the path to it; empty when it conforms. */
export const validate = (schema: unknown, value: unknown): ReadonlyArray<string> => {
  let decoder: Schema.Top
  try {
    decoder = SchemaRepresentation.fromJsonSchemaDocument(
      JsonSchema.fromSchemaDraft2020_12(schema as JsonSchema.JsonSchema),
      { patterns: "apply" }
    )
  } catch {
    // A schema this check cannot read is not a reason to refuse the run: the worker checks it again.
    return []
  }
  const result = Schema.decodeUnknownResult(decoder as Schema.Codec<unknown, unknown>)(value)
  if (Result.isSuccess(result)) return []
  return formatter(result.failure.issue).issues.map((i) =>
    `${(i.path ?? []).map((p) => String(typeof p === "object" && p !== null ? p.key : p)).join(".") || "payload"}: ${i.message}`
  )
}
