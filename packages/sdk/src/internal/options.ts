/**
 * Run-time checks of the options given to the promise API, for where TypeScript's checks do not reach (plain
 * JavaScript, options assembled at run time): an option the SDK does not know is an `InvalidOptions` naming it,
 * not silence, and a required option that is missing says so before anything starts.
 */
import { InvalidOptions } from "../Errors.ts"

/**
 * The options a call accepts: each known name, and the shape of those that are objects of options themselves;
 * or, for options told apart by their `type`, the shape of each type.
 */
export type Shape =
  | {
    readonly known: ReadonlyArray<string>
    readonly nested?: { readonly [name: string]: Shape }
  }
  | { readonly byType: { readonly [type: string]: Shape } }

const isRecord = (value: unknown): value is Readonly<Record<string, unknown>> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

/** Throws `InvalidOptions` for the first option of `value` (or of its nested options) that `shape` does not know. */
export const check = (where: string, value: unknown, shape: Shape, path = ""): void => {
  if (!isRecord(value)) {
    const option = path.slice(0, -1)
    throw new InvalidOptions({
      where,
      option: option || "options",
      reason: option === "" ? "the options must be an object" : `option "${option}" must be an object`
    })
  }
  if ("byType" in shape) {
    const types = Object.keys(shape.byType)
    const chosen = typeof value["type"] === "string" ? shape.byType[value["type"]] : undefined
    if (chosen === undefined) {
      throw new InvalidOptions({
        where,
        option: `${path}type`,
        reason: `option "${path}type" must be one of ${types.map((t) => `"${t}"`).join(", ")}`
      })
    }
    return check(where, value, chosen, path)
  }
  for (const [name, option] of Object.entries(value)) {
    if (!shape.known.includes(name)) {
      throw new InvalidOptions({
        where,
        option: `${path}${name}`,
        reason: `unknown option "${path}${name}" (known: ${shape.known.join(", ")})`
      })
    }
    const nested = shape.nested?.[name]
    if (nested !== undefined && option !== undefined) check(where, option, nested, `${path}${name}.`)
  }
}

/** Throws `InvalidOptions` unless `value` is of `kind` (a `typeof` answer). */
export const requireKind = (where: string, option: string, value: unknown, kind: "string" | "function" | "number") => {
  if (kind === "number" ? typeof value === "number" && Number.isFinite(value) && value >= 0 : typeof value === kind && (kind !== "string" || (value as string).length > 0)) return
  throw new InvalidOptions({
    where,
    option,
    reason: value === undefined
      ? `option "${option}" is required`
      : `option "${option}" must be a ${kind === "string" ? "non-empty string" : kind === "number" ? "finite number, 0 or more" : "function"}`
  })
}
