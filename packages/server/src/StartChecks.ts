/**
 * What a start is checked against before anything is written: its payload against the JSON Schema a worker
 * registered for its version (a 400 naming the field, nothing written), and whether any worker ever registered the
 * version at all. A version nobody registered is accepted (its workers may come later) but flagged with a warning,
 * in the start's answer and in the run's status, so a typo in a name or version does not pend in silence.
 *
 * Schemas are validated with `@cfworker/json-schema`: dependency-free, drafts 4 to 2020-12 (the SDK registers
 * 2020-12 documents, `$defs` included), and lenient about keywords it does not know, where ajv needs a class per
 * draft and a strict mode turned off for Effect's annotations.
 */
import { InvalidRequest, RequestIssue } from "@aiki/contract/Errors"
import type { WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import type { Json } from "@aiki/contract/Models"
import { type OutputUnit, type Schema as JsonSchema, Validator } from "@cfworker/json-schema"
import { Clock, Context, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"

/** A start to check: its version and its payload. */
export interface StartToCheck {
  readonly workflowName: WorkflowName
  readonly workflowVersion: WorkflowVersion
  readonly payload: Json
}

/** A start that passed: with the warning it is flagged with, if any. */
export interface Checked {
  readonly warning: string | undefined
}

export class StartChecks extends Context.Service<StartChecks, {
  /** Checks each start, answering in order: an `InvalidRequest` naming the offending fields, or what it is flagged with. */
  readonly check: (starts: ReadonlyArray<StartToCheck>) => Effect.Effect<ReadonlyArray<Checked | InvalidRequest>>
}>()("@aiki/server/StartChecks") {
  static readonly layer = Layer.effect(StartChecks, Effect.suspend(() => make))
}

/** The message a start of an unregistered version is flagged with: a fact about the start, true for good. */
export const unregisteredWarning = (name: string, version: string) =>
  `No worker had registered ${name} version ${version} when this run was started: it waits for one (check the name and version)`

/** `#/a/0/b` → `["a", 0, "b"]` (JSON Pointer, unescaped). */
const pointerPath = (location: string): Array<string | number> =>
  location.replace(/^#\/?/, "").split("/").filter((s) => s.length > 0).map((s) => {
    const key = decodeURIComponent(s).replace(/~1/g, "/").replace(/~0/g, "~")
    return /^\d+$/.test(key) ? Number(key) : key
  })

/**
 * The issues worth naming: errors at the deepest locations (an error at `#` saying "property amount does not match"
 * is explained by the one at `#/amount`), a missing property named by its own path.
 */
export const issuesOf = (errors: ReadonlyArray<OutputUnit>): Array<RequestIssue> => {
  const located = errors.map((e) => {
    const missing = e.keyword === "required" ? /required property "([^"]+)"/.exec(e.error)?.[1] : undefined
    const path = [...pointerPath(e.instanceLocation), ...(missing !== undefined ? [missing] : [])]
    return { path, error: e.error }
  })
  const key = (path: ReadonlyArray<string | number>) => JSON.stringify(path)
  const deepest = located.filter((e) =>
    !located.some((o) => o.path.length > e.path.length && key(o.path.slice(0, e.path.length)) === key(e.path))
  )
  const byPath = new Map<string, { path: Array<string | number>; messages: Array<string> }>()
  for (const e of deepest) {
    const entry = byPath.get(key(e.path)) ?? { path: e.path, messages: [] }
    if (!entry.messages.includes(e.error)) entry.messages.push(e.error)
    byPath.set(key(e.path), entry)
  }
  // In the order of their paths, whichever order the validator met them in.
  return [...byPath.entries()].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
    .map(([, e]) => new RequestIssue({ path: ["payload", ...e.path], message: e.messages.join("; ") }))
}

/**
 * How long a registered version's schema is used without reading it again. A start of a registered version then
 * costs no query (one round trip less on every start), and its validator is compiled once; a schema a worker
 * registers anew (another replica's registration included) applies to starts this much later at most. A version
 * not registered yet is read on every start, so its first registration is seen at once.
 */
export const schemaTtlMs = 1_000

type PayloadSchema = JsonSchema | boolean | null

/** A version's key in the cache (NUL cannot occur in a name or a version). */
const keyOf = (name: string, version: string) => `${name}\u0000${version}`

interface Known {
  readonly schema: PayloadSchema
  /** Compiled on first use; none for a version registered without a schema. */
  validator: Validator | undefined
  readonly readAt: number
}

/** Exported for tests, which run it under a `TestClock`; the server uses the layer. */
export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  /** Registered versions by `name\0version`, as last read. */
  const known = new Map<string, Known>()

  const read = (keys: ReadonlyArray<readonly [string, StartToCheck]>, now: number) =>
    Effect.gen(function*() {
      if (keys.length === 0) return
      const rows = yield* sql<{
        readonly workflow_name: string
        readonly version: string
        readonly payload_schema: PayloadSchema
      }>`
        SELECT v.workflow_name, v.version, v.payload_schema FROM workflow_versions v
        JOIN jsonb_to_recordset(${
        JSON.stringify(keys.map(([, s]) => ({ name: s.workflowName, version: s.workflowVersion })))
      }::jsonb) AS k(name text, version text) ON v.workflow_name = k.name AND v.version = k.version`.pipe(Effect.orDie)
      for (const row of rows) {
        const key = keyOf(row.workflow_name, row.version)
        const before = known.get(key)
        // The same schema read again keeps its compiled validator.
        const same = before !== undefined && JSON.stringify(before.schema) === JSON.stringify(row.payload_schema)
        known.set(key, { schema: row.payload_schema, validator: same ? before.validator : undefined, readAt: now })
      }
      // A version deleted meanwhile is unregistered again.
      const found = new Set(rows.map((r) => keyOf(r.workflow_name, r.version)))
      for (const [key] of keys) if (!found.has(key)) known.delete(key)
    })

  const check = Effect.fn("StartChecks.check")(function*(starts: ReadonlyArray<StartToCheck>) {
    const now = yield* Clock.currentTimeMillis
    const versions = new Map(starts.map((s) => [keyOf(s.workflowName, s.workflowVersion), s]))
    yield* read(
      [...versions].filter(([key]) => {
        const entry = known.get(key)
        return entry === undefined || now - entry.readAt >= schemaTtlMs || now < entry.readAt
      }),
      now
    )
    return starts.map((start): Checked | InvalidRequest => {
      const entry = known.get(keyOf(start.workflowName, start.workflowVersion))
      if (entry === undefined) return { warning: unregisteredWarning(start.workflowName, start.workflowVersion) }
      if (entry.schema === null) return { warning: undefined }
      entry.validator ??= new Validator(entry.schema, "2020-12", false)
      const result = entry.validator.validate(start.payload)
      if (result.valid) return { warning: undefined }
      const issues = issuesOf(result.errors)
      return new InvalidRequest({
        message: `The payload does not match the schema registered for ${start.workflowName} version ` +
          `${start.workflowVersion}: ${issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`,
        issues
      })
    })
  })

  return StartChecks.of({ check })
})
