/**
 * Aiki as someone outside this repository gets it. The packages are packed as they would be published
 * (`pnpm pack`), installed with npm into a fresh project in a temp directory, and then: the packed server runs
 * (`aiki-server`), a program written as the README shows runs to completion under plain `node` and under Deno 2, a
 * strict TypeScript consumer type-checks, every version reported agrees, and the SDK passes JSR's publish checks.
 *
 * It needs the npm registry (for the consumer's dependencies, TypeScript and the `deno` package, which ships the
 * binary); about a minute here with a warm npm cache.
 */
import { version } from "@aiki/contract/Version"
import { freePort } from "@aiki/testing/freePort"
import { spawnNode, waitForHealth } from "@aiki/testing/NodeProcess"
import * as TestDatabase from "@aiki/testing/TestDatabase"
import { assert, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { execFile } from "node:child_process"
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { redisUrl } from "./support/AikiServer.ts"

const repository = fileURLToPath(new URL("../../..", import.meta.url))
const fixtures = fileURLToPath(new URL("./fixtures/consumer", import.meta.url))
/** The packages of code (compiled JavaScript, declarations, source maps). */
const published = ["contract", "sdk", "server", "cli"] as const
/** Every package installed: the code and the dashboard's built pages, which the server depends on and serves. */
const packages = [...published, "dashboard"] as const
const apiKey = "consumer-admin-key"
/** Pinned so the test sees the same Deno every time. */
const denoVersion = "2.9.6"

interface Ran {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/**
 * The environment without what `pnpm` sets for the scripts it runs (`npm_config_*` and friends), so npm in the
 * consumer project behaves as it would in a user's shell.
 */
const cleanEnv = (extra: Record<string, string> = {}) => ({
  ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !/^(npm_|pnpm_|PNPM_|INIT_CWD$)/.test(name))),
  ...extra
})

/** Runs a command to its end; a non-zero exit is returned, not thrown, so a test can show its output. */
const run = (command: string, args: ReadonlyArray<string>, options: { readonly cwd: string; readonly env?: Record<string, string> }) =>
  Effect.callback<Ran>((resume) => {
    execFile(command, args, { cwd: options.cwd, env: cleanEnv(options.env), maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
      resume(Effect.succeed({ code, stdout, stderr }))
    })
  })

/** Like `run`, but a failure fails the test with the command's output. */
const runOk = (command: string, args: ReadonlyArray<string>, options: { readonly cwd: string; readonly env?: Record<string, string> }) =>
  Effect.flatMap(run(command, args, options), (ran) =>
    ran.code === 0
      ? Effect.succeed(ran)
      : Effect.die(new Error(`${command} ${args.join(" ")} exited ${ran.code}\n${ran.stdout}\n${ran.stderr}`)))

interface Packed {
  readonly tarball: string
  readonly files: ReadonlyArray<string>
}

/** The consumer project: the tarballs, where they are installed, and the packed server running over them. */
class Consumer extends Context.Service<Consumer, {
  readonly dir: string
  readonly packed: Readonly<Record<(typeof packages)[number], Packed>>
  readonly baseUrl: string
  readonly bin: (name: string) => string
}>()("test/Consumer") {}

const rootDevDependency = (name: string) => {
  const manifest = JSON.parse(readFileSync(join(repository, "package.json"), "utf8")) as {
    readonly devDependencies: Record<string, string>
  }
  return manifest.devDependencies[name]!
}

const ConsumerLayer = Layer.effect(Consumer, Effect.gen(function*() {
  const dir = yield* Effect.acquireRelease(
    Effect.sync(() => mkdtempSync(join(tmpdir(), "aiki-consumer-"))),
    (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
  )
  const packs = join(dir, "packs")
  // One at a time: each `prepack` builds (tsc -b), and the builds share their referenced projects.
  const packed = {} as Record<(typeof packages)[number], Packed>
  for (const name of packages) {
    const { stdout } = yield* runOk("pnpm", ["pack", "--json", "--pack-destination", packs], {
      cwd: join(repository, "packages", name)
    })
    const result = JSON.parse(stdout.slice(stdout.indexOf("{"))) as {
      readonly filename: string
      readonly files: ReadonlyArray<{ readonly path: string }>
    }
    packed[name] = { tarball: result.filename, files: result.files.map((f) => f.path) }
  }
  writeFileSync(join(dir, "package.json"), JSON.stringify({
    name: "aiki-consumer",
    private: true,
    type: "module",
    dependencies: Object.fromEntries(packages.map((name) => [`@aiki/${name}`, `file:${packed[name].tarball}`])),
    devDependencies: {
      typescript: rootDevDependency("typescript"),
      "@types/node": rootDevDependency("@types/node"),
      deno: denoVersion
    }
  }, null, 2))
  for (const file of ["program.mjs", "typed.ts"]) copyFileSync(join(fixtures, file), join(dir, file))
  yield* runOk("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"], { cwd: dir })

  const bin = (name: string) => join(dir, "node_modules", ".bin", name)
  const database = yield* TestDatabase.make
  const port = yield* Effect.promise(freePort)
  const baseUrl = `http://127.0.0.1:${port}`
  const server = yield* spawnNode(bin("aiki-server"), {
    DATABASE_URL: database.url,
    REDIS_URL: redisUrl,
    REDIS_PREFIX: `aiki-test-consumer-${port}`,
    API_KEY: apiKey,
    PORT: String(port),
    HOST: "127.0.0.1"
  }, [], { cwd: dir })
  yield* waitForHealth(`${baseUrl}/health`, server)
  return Consumer.of({ dir, packed, baseUrl, bin })
}))

/** Runs the README-style program with `runtime` and returns what it printed. */
const runProgram = (runtime: "node" | "deno", transport: "redis_streams" | "http") =>
  Effect.gen(function*() {
    const consumer = yield* Consumer
    const env = {
      AIKI_URL: consumer.baseUrl,
      AIKI_API_KEY: apiKey,
      ...(transport === "redis_streams" ? { REDIS_URL: redisUrl } : {})
    }
    const ran = runtime === "node"
      ? yield* run(process.execPath, ["program.mjs"], { cwd: consumer.dir, env })
      : yield* run(consumer.bin("deno"), ["run", "--allow-all", "program.mjs"], { cwd: consumer.dir, env })
    assert.strictEqual(ran.code, 0, `${runtime} program.mjs failed:\n${ran.stdout}\n${ran.stderr}`)
    const printed = JSON.parse(ran.stdout.trim().split("\n").at(-1)!) as {
      readonly runId: string
      readonly result: { readonly orderId: string; readonly chargeId: string; readonly amount: number }
    }
    assert.match(printed.result.orderId, /^o-\d+$/)
    assert.strictEqual(printed.result.chargeId, `ch-${printed.result.orderId}`)
    assert.strictEqual(printed.result.amount, 3)
    // The server has it completed, with the payment task's failed first attempt and its retry.
    const tasks = yield* Effect.promise(() =>
      fetch(`${consumer.baseUrl}/workflow-runs/${printed.runId}/tasks`, { headers: { "x-api-key": apiKey } })
        .then((r) => r.json() as Promise<ReadonlyArray<{ readonly name: string; readonly state: string; readonly attempts: ReadonlyArray<unknown> }>>)
    )
    const payment = tasks.find((t) => t.name === "process-payment")
    assert.strictEqual(payment?.state, "completed")
    assert.strictEqual(payment?.attempts.length, 2)
  })

layer(ConsumerLayer, { excludeTestServices: true, timeout: 240_000 })("packaging", (it) => {
  it.effect("the tarballs hold compiled JavaScript, declarations and source maps, and nothing of the repository's", () =>
    Effect.gen(function*() {
      const { dir, packed } = yield* Consumer
      for (const name of published) {
        const files = packed[name].files
        assert.include(files, "package.json")
        assert.isTrue(files.some((f) => f.startsWith("dist/src/") && f.endsWith(".js")), `${name} has no JavaScript`)
        assert.isTrue(files.some((f) => f.endsWith(".d.ts")), `${name} has no declarations`)
        assert.isTrue(files.some((f) => f.endsWith(".js.map")), `${name} has no source maps`)
        const strays = files.filter((f) => /^(test|dist\/test)\/|tsconfig|tsbuildinfo|^dist\/package\.json$/.test(f))
        assert.deepStrictEqual(strays, [], `${name} packs files it should not`)
        const manifest = JSON.parse(readFileSync(join(dir, "node_modules", "@aiki", name, "package.json"), "utf8")) as {
          readonly dependencies: Record<string, string>
          readonly exports: Record<string, unknown>
        }
        assert.notInclude(JSON.stringify(manifest.dependencies), "workspace:", `${name} depends on the workspace`)
        assert.notMatch(JSON.stringify(manifest.exports), /\.\/src\//, `${name} exports TypeScript sources`)
      }
      // The dashboard ships its built pages only, and needs nothing at run time: everything is bundled.
      const dashboard = packed.dashboard.files
      assert.include(dashboard, "dist/app/index.html")
      assert.isTrue(dashboard.some((f) => f.startsWith("dist/app/assets/") && f.endsWith(".js")), "the dashboard has no script")
      assert.deepStrictEqual(dashboard.filter((f) => !["package.json", "README.md"].includes(f) && !f.startsWith("dist/app/")), [])
      const dashboardManifest = JSON.parse(
        readFileSync(join(dir, "node_modules", "@aiki", "dashboard", "package.json"), "utf8")
      ) as { readonly dependencies?: Record<string, string> }
      assert.deepStrictEqual(dashboardManifest.dependencies ?? {}, {})
      // The seeds' module paths resolve to the one implementation.
      writeFileSync(join(dir, "seeds.mjs"), [
        `import * as sdk from "@aiki/sdk"`,
        `import { createClient } from "@aiki/sdk/client"`,
        `import { task } from "@aiki/sdk/task"`,
        `import { worker } from "@aiki/sdk/worker"`,
        `import { workflow } from "@aiki/sdk/workflow"`,
        `console.log(JSON.stringify([createClient === sdk.client, task === sdk.task, worker === sdk.worker, workflow === sdk.workflow]))`
      ].join("\n"))
      const seeds = yield* runOk(process.execPath, ["seeds.mjs"], { cwd: dir })
      assert.strictEqual(seeds.stdout.trim(), "[true,true,true,true]")
      // Internal modules stay internal.
      writeFileSync(join(dir, "internal.mjs"), `await import("@aiki/sdk/internal/json")\n`)
      const refused = yield* run(process.execPath, ["internal.mjs"], { cwd: dir })
      assert.include(refused.stderr, "ERR_PACKAGE_PATH_NOT_EXPORTED")
    }))

  it.effect("a program written as in the README runs to completion under plain node (Redis Streams and HTTP)", () =>
    Effect.gen(function*() {
      yield* runProgram("node", "redis_streams")
      yield* runProgram("node", "http")
    }), 60_000)

  it.effect("the same program runs on Deno 2 (Redis Streams and HTTP)", () =>
    Effect.gen(function*() {
      yield* runProgram("deno", "redis_streams")
      yield* runProgram("deno", "http")
    }), 60_000)

  it.effect("an install holds one copy of effect, whichever of its patch releases the registry serves now", () =>
    Effect.gen(function*() {
      const { dir } = yield* Consumer
      // Two copies are two sets of services: a server whose SQL client came from the other copy never finds its
      // database (it waited at 503 forever once effect 4.1.5 was published next to our exact 4.1.0).
      const { stdout } = yield* runOk("npm", ["ls", "effect", "--all", "--parseable"], { cwd: dir })
      const copies = new Set(stdout.trim().split("\n").filter((line) => /node_modules\/effect$/.test(line)))
      assert.strictEqual(copies.size, 1, [...copies].join("\n"))
    }))

  it.effect("a TypeScript consumer type-checks with tsc --strict, module NodeNext, and no other option", () =>
    Effect.gen(function*() {
      const { bin, dir } = yield* Consumer
      const checked = yield* run(process.execPath, [bin("tsc"), "--strict", "--module", "nodenext", "--noEmit", "typed.ts"], { cwd: dir })
      assert.strictEqual(checked.code, 0, checked.stdout + checked.stderr)
    }), 120_000)

  it.effect("the server, its OpenAPI document, the CLI and every package report one version", () =>
    Effect.gen(function*() {
      const { baseUrl, bin, dir } = yield* Consumer
      const health = yield* Effect.promise(() => fetch(`${baseUrl}/health`).then((r) => r.json() as Promise<{ version: string }>))
      const openapi = yield* Effect.promise(() =>
        fetch(`${baseUrl}/openapi.json`).then((r) => r.json() as Promise<{ info: { version: string } }>)
      )
      const cli = yield* runOk(process.execPath, [bin("aiki"), "--version"], { cwd: dir })
      const versions = packages.map((name) =>
        (JSON.parse(readFileSync(join(dir, "node_modules", "@aiki", name, "package.json"), "utf8")) as { version: string }).version
      )
      assert.deepStrictEqual(
        { health: health.version, openapi: openapi.info.version, cli: cli.stdout.trim(), versions },
        { health: version, openapi: version, cli: `aiki v${version}`, versions: packages.map(() => version) }
      )
    }))

  it.effect("the installed server serves the installed dashboard at /", () =>
    Effect.gen(function*() {
      const { baseUrl } = yield* Consumer
      const page = yield* Effect.promise(() => fetch(`${baseUrl}/`).then(async (r) => ({ status: r.status, body: await r.text() })))
      assert.strictEqual(page.status, 200)
      assert.include(page.body, "<title>Aiki</title>")
      const script = /src="(\/assets\/[^"]+\.js)"/.exec(page.body)?.[1]
      assert.isDefined(script, "the page loads no script")
      const asset = yield* Effect.promise(() => fetch(`${baseUrl}${script}`))
      assert.strictEqual(asset.status, 200)
    }))

  it.effect("the SDK and the contract pass JSR's publish checks (deno publish --dry-run)", () =>
    Effect.gen(function*() {
      const { bin } = yield* Consumer
      const ran = yield* run(bin("deno"), ["publish", "--dry-run", "--allow-dirty", "--allow-slow-types"], {
        cwd: repository,
        env: { NO_COLOR: "1" }
      })
      assert.strictEqual(ran.code, 0, ran.stdout + ran.stderr)
      assert.include(ran.stdout + ran.stderr, "Simulating publish of @aiki/sdk")
      assert.include(ran.stdout + ran.stderr, "Simulating publish of @aiki/contract")
    }), 120_000)
})
