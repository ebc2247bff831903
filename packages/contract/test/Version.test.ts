/**
 * One version everywhere: the `version` the server and CLI report is the one every published manifest carries
 * (npm's `package.json`, JSR's `deno.json`), and JSR's explicit export lists name every public module.
 */
import { describe, expect, it } from "@effect/vitest"
import { readdirSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { version } from "../src/Version.ts"

const packages = fileURLToPath(new URL("../../", import.meta.url))
const read = (path: string) => JSON.parse(readFileSync(`${packages}${path}`, "utf8")) as Record<string, unknown>

describe("Version", () => {
  it("is the version of every published package.json and deno.json", () => {
    const manifests = ["contract/package.json", "sdk/package.json", "server/package.json", "cli/package.json", "contract/deno.json", "sdk/deno.json"]
    expect(Object.fromEntries(manifests.map((path) => [path, read(path)["version"]])))
      .toEqual(Object.fromEntries(manifests.map((path) => [path, version])))
  })

  it("has every public module of the JSR packages in their exports", () => {
    for (const name of ["contract", "sdk"]) {
      // Every module but the internal ones (those under `src/internal`), in subdirectories too.
      const modules = readdirSync(`${packages}${name}/src`, { recursive: true, encoding: "utf8" })
        .filter((file) => file.endsWith(".ts") && !file.startsWith("internal/")).sort()
      const exported = Object.values(read(`${name}/deno.json`)["exports"] as Record<string, string>)
        .map((path) => path.replace("./src/", "")).sort()
      expect(exported).toEqual(modules)
    }
  })
})
