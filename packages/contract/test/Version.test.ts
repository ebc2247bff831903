/**
 * One version everywhere: the `version` the server and CLI report is the one every published manifest carries.
 */
import { describe, expect, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { version } from "../src/Version.ts"

const packages = fileURLToPath(new URL("../../", import.meta.url))
const read = (path: string) => JSON.parse(readFileSync(`${packages}${path}`, "utf8")) as Record<string, unknown>

describe("Version", () => {
  it("is the version of every published package.json", () => {
    const manifests = ["contract/package.json", "sdk/package.json", "server/package.json", "cli/package.json"]
    expect(Object.fromEntries(manifests.map((path) => [path, read(path)["version"]])))
      .toEqual(Object.fromEntries(manifests.map((path) => [path, version])))
  })

})
