/**
 * A module of the user's workflows, as `aiki dev --workflows` serves it and `aiki replay --workflows` checks it: it
 * exports `workflows`, an array of promise workflows (any version) or Effect workflows.
 */
import type { Workflow } from "@aiki/sdk/effect"
import { Effect } from "effect"
import { resolve } from "node:path"
import { pathToFileURL } from "node:url"

type Exported = Workflow.Any | { readonly effect: Workflow.Any } | { readonly versions: () => ReadonlyArray<{ readonly effect: Workflow.Any }> }

const toEffectWorkflows = (exported: ReadonlyArray<Exported>): ReadonlyArray<Workflow.Any> =>
  exported.flatMap((w) => "versions" in w ? w.versions().map((v) => v.effect) : "effect" in w ? [w.effect] : [w])

/** Imports the module at `path` (relative to the working directory) and returns its workflows as Effect workflows. */
export const load = (path: string) =>
  Effect.tryPromise({
    try: async () => {
      const module = await import(pathToFileURL(resolve(path)).href) as { readonly workflows?: ReadonlyArray<Exported> }
      if (!Array.isArray(module.workflows)) throw new Error(`${path} exports no \`workflows\` array`)
      return toEffectWorkflows(module.workflows)
    },
    catch: (error) => new Error(`cannot load workflows from ${path}: ${error instanceof Error ? error.message : String(error)}`)
  })
