import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["packages/*/test/**/*.test.ts", "examples/test/**/*.test.ts", "chaos/test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Files are isolated by database and Redis prefix, so they may run in parallel; two cores here.
    maxWorkers: 2
  }
})
