/**
 * What a worker process loads by importing the SDK. Every module imported stays resident, and a barrel (`effect`,
 * `effect/http`, …) loads all the modules it re-exports: importing `effect` alone takes bare Node from ~46 to
 * ~84 MiB. The SDK and the contract therefore import each module by its own path; this pins it for every entry point.
 */
import { assert, describe, it } from "@effect/vitest"
import { execFileSync } from "node:child_process"
import { fileURLToPath } from "node:url"

const entryPoints = ["@aiki/sdk", "@aiki/sdk/effect", "@aiki/sdk/Worker", "@aiki/sdk/AikiClient"]

/** The `effect` modules a fresh Node process loads to import `specifier`, as paths under `effect/dist`. */
const effectModulesLoadedBy = (specifier: string): ReadonlyArray<string> => {
  const hook = `import { registerHooks } from "node:module"
const loaded = []
registerHooks({ load(url, context, next) {
  const at = url.lastIndexOf("/effect/dist/")
  if (at >= 0) loaded.push(url.slice(at + "/effect/dist/".length))
  return next(url, context)
} })
process.on("exit", () => process.stdout.write(JSON.stringify(loaded)))`
  const stdout = execFileSync(process.execPath, [
    "--import",
    `data:text/javascript,${encodeURIComponent(hook)}`,
    "--input-type=module",
    "--eval",
    `await import(${JSON.stringify(specifier)})`
  ], { cwd: fileURLToPath(new URL("..", import.meta.url)), encoding: "utf8" })
  return JSON.parse(stdout) as ReadonlyArray<string>
}

describe("Footprint", () => {
  for (const specifier of entryPoints) {
    it(`importing ${specifier} loads no barrel of effect`, () => {
      const loaded = effectModulesLoadedBy(specifier)
      // The process did load effect, so an empty list cannot pass this test by accident.
      assert.include(loaded, "Effect.js")
      assert.deepStrictEqual(loaded.filter((path) => /(^|\/)index\.js$/.test(path)), [])
    }, 30_000)
  }
})
