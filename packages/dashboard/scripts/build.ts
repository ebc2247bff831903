#!/usr/bin/env node
/**
 * Builds the dashboard into `dist/app` (what the server serves at `/`). With `--if-stale` it builds only when the
 * build is missing or older than a source, so `pnpm dev` can call it on every start at no cost.
 *
 *   node packages/dashboard/scripts/build.ts [--if-stale]
 */
import { existsSync, readdirSync, statSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const root = fileURLToPath(new URL("..", import.meta.url))
const built = join(root, "dist", "app", "index.html")

/** The newest modification time among the files the build reads (its sources, the contract's, the config). */
const newestSource = (): number => {
  const inputs = [join(root, "src"), join(root, "index.html"), join(root, "vite.config.ts"), join(root, "..", "contract", "src")]
  let newest = 0
  const visit = (path: string) => {
    const stat = statSync(path)
    if (stat.isDirectory()) for (const entry of readdirSync(path)) visit(join(path, entry))
    else newest = Math.max(newest, stat.mtimeMs)
  }
  for (const input of inputs) if (existsSync(input)) visit(input)
  return newest
}

/** Whether `dist/app` is missing or older than a source. */
export const isStale = (): boolean => !existsSync(built) || statSync(built).mtimeMs < newestSource()

/** Builds the dashboard (quietly unless `verbose`). */
export const build = async (options: { readonly verbose?: boolean } = {}): Promise<void> => {
  const vite = await import("vite")
  await vite.build({ configFile: join(root, "vite.config.ts"), logLevel: options.verbose === true ? "info" : "warn" })
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const ifStale = process.argv.includes("--if-stale")
  if (!ifStale || isStale()) {
    if (ifStale) process.stdout.write("Building the dashboard (packages/dashboard/dist/app)…\n")
    await build({ verbose: !ifStale })
  }
}
