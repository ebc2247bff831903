/**
 * The seeds' second style, as their Core Concepts document writes it: `@aiki/sdk/workflow`, `/task`, `/worker`
 * and `/client`, `workflow({ name, version, run({ workflowRun }) })`, `task.run(workflowRun, { payload })`,
 * `workflow.enqueue`, `createClient({ url })` and the worker's `workflowRunSubscriber`. The document's examples run
 * as written (`fixtures/seeds/core-concepts.mjs`, plain JavaScript under plain `node`) against a real server; and
 * options the SDK does not know are refused by name, at run time and by the compiler.
 */
import { assert, layer } from "@effect/vitest"
import { spawnNode } from "@aiki/testing/NodeProcess"
import { Context, Effect, Layer } from "effect"
import { fileURLToPath } from "node:url"
import { client, createClient, InvalidOptions, task, worker, workflow } from "../src/index.ts"
import * as AikiServer from "./support/AikiServer.ts"

const coreConcepts = fileURLToPath(new URL("./fixtures/seeds/core-concepts.mjs", import.meta.url))

class Server extends Context.Service<Server, AikiServer.AikiServer>()("test/Server") {}

interface Reported {
  readonly what: string
  readonly value: any
}

/** What `promise` rejected with (it must reject). */
const rejection = (promise: () => Promise<unknown>) =>
  Effect.promise(() => promise().then(() => assert.fail("expected a rejection"), (error: unknown) => error))

const thrown = (f: () => unknown) => {
  try {
    f()
  } catch (error) {
    return error
  }
  return assert.fail("expected an error")
}

/** The one line an `InvalidOptions` says, and the option it names. */
const invalid = (error: unknown) => {
  assert.instanceOf(error, InvalidOptions)
  const { message, option } = error as InvalidOptions
  return { message, option }
}

layer(Layer.effect(Server, AikiServer.make()), { excludeTestServices: true, timeout: 60_000 })("core concepts", (it) => {
  it.effect("the document's examples run as written, under plain node, against a real server", () =>
    Effect.gen(function*() {
      const server = yield* Server
      const program = yield* spawnNode(coreConcepts, { AIKI_URL: server.baseUrl })
      const exited = yield* Effect.promise(() => program.exited)
      assert.strictEqual(exited.code, 0, program.output())
      const reported = new Map(
        exited.stdout.split("\n").filter((line) => line.startsWith("RESULT ")).map((line) => {
          const { value, what } = JSON.parse(line.slice("RESULT ".length)) as Reported
          return [what, value] as const
        })
      )
      const status = reported.get("onboarding-status")
      assert.strictEqual(status.id, status.handleId)
      assert.include(["pending", "running", "completed"], status.state)
      // v2 of onboarding: the welcome email, then the profile task, which read the run's own payload.
      const onboarding = reported.get("onboarding")
      assert.isNull(onboarding.result)
      const tasks = yield* Effect.promise(() =>
        fetch(`${server.baseUrl}/workflow-runs/${onboarding.id}/tasks`).then((r) =>
          r.json() as Promise<ReadonlyArray<{ readonly name: string; readonly result: unknown }>>
        )
      )
      assert.deepStrictEqual(tasks.map((t) => [t.name, t.result]), [
        ["send-welcome-email", "welcome mail to 123"],
        ["create-user-profile", { profileOf: "123", email: "user@example.com" }]
      ])
      // The same idempotency key is the same run.
      const idempotent = reported.get("idempotent")
      assert.strictEqual(idempotent.again, idempotent.id)
      assert.deepStrictEqual(reported.get("morning-routine").result, {
        alarmResult: "Wake up!",
        stretchResult: "stretched for 300 s"
      })
      assert.deepStrictEqual(reported.get("evening-routine").result, { paymentId: "p-1", amount: 12, charged: true })
      assert.include(exited.stdout, "Processing payment attempt 1 for workflow ")
      assert.isTrue(reported.get("stopped"))
      // The worker registered what the registry was given, and long-polled the server (no Redis options).
      const registered = yield* Effect.promise(() =>
        fetch(`${server.baseUrl}/workers/worker-1/health`).then((r) =>
          r.json() as Promise<{ readonly workflows: ReadonlyArray<{ readonly name: string; readonly version: string }> }>
        )
      )
      assert.deepStrictEqual(registered.workflows.map((w) => `${w.name}@${w.version}`).sort(), [
        "evening-routine@1.0.0",
        "morning-routine@1.0.0",
        "user-onboarding@1.0.0",
        "user-onboarding@2.0.0"
      ])
    }))

  it.effect("an option the SDK does not know is an error naming it, not silence", () =>
    Effect.gen(function*() {
      const server = yield* Server
      const aiki = yield* Effect.acquireRelease(
        Effect.promise(() => createClient({ url: server.baseUrl })),
        (aiki) => Effect.promise(() => aiki.close())
      )
      assert.strictEqual(aiki.baseUrl, server.baseUrl)

      assert.deepStrictEqual(
        // @ts-expect-error: a misspelt worker option does not compile
        invalid(yield* rejection(() => worker(aiki, { id: "w", workflowRunSubscribr: { pollIntervalMs: 100 } }))),
        {
          option: "workflowRunSubscribr",
          message: "worker(): unknown option \"workflowRunSubscribr\" (known: id, maxConcurrentWorkflowRuns, subscriber, " +
            "workflowRunSubscriber, workflowRun, livenessTimeoutMs, gracefulShutdownTimeoutMs)"
        }
      )
      // @ts-expect-error: nested options are checked too
      const nested = invalid(yield* rejection(() => worker(aiki, { workflowRunSubscriber: { pollIntervalSeconds: 1 } })))
      assert.strictEqual(nested.option, "workflowRunSubscriber.pollIntervalSeconds")
      // @ts-expect-error: and by the subscriber's type
      const byType = invalid(yield* rejection(() => worker(aiki, { subscriber: { type: "http", claimMinIdleTimeMs: 1 } })))
      assert.strictEqual(byType.option, "subscriber.claimMinIdleTimeMs")
      const both = invalid(yield* rejection(() =>
        worker(aiki, { subscriber: { type: "http" }, workflowRunSubscriber: { pollIntervalMs: 100 } })
      ))
      assert.strictEqual(both.message, "worker(): give `subscriber` or `workflowRunSubscriber`, not both")

      // @ts-expect-error: a client needs the server's address
      assert.strictEqual(invalid(yield* rejection(() => client({ apiKey: "k" }))).message, "client(): option \"baseUrl\" is required")
      // @ts-expect-error: and knows its options
      assert.strictEqual(invalid(yield* rejection(() => client({ url: "localhost:1", retries: 3 }))).option, "retries")

      const run = async () => null
      // @ts-expect-error: `trigger` is in the seeds' list of properties, but Aiki has no triggers: refused, not ignored
      assert.strictEqual(invalid(thrown(() => workflow({ name: "w", version: "1", run, trigger: "cron" }))).option, "trigger")
      // @ts-expect-error: a version without `run`
      assert.strictEqual(invalid(thrown(() => workflow({ name: "w", version: "1" }))).message, "workflow(): option \"run\" is required")
      // @ts-expect-error: `version` belongs with `run`
      assert.strictEqual(invalid(thrown(() => workflow({ name: "w", run }))).option, "version")
      // @ts-expect-error: retry policies are checked by their type
      const retry = invalid(thrown(() => task({ name: "t", run, retry: { type: "fixed", maxAttempts: 2, delay: 5 } })))
      assert.strictEqual(retry.message, "task(): unknown option \"retry.delay\" (known: type, maxAttempts, delayMs)")
      // @ts-expect-error: and an unknown retry type is named
      assert.strictEqual(invalid(thrown(() => task({ name: "t", run, retry: { type: "linear" } }))).option, "retry.type")
      // @ts-expect-error: a task without a name
      assert.strictEqual(invalid(thrown(() => task({ run }))).message, "task(): option \"name\" is required")
      const w = yield* Effect.promise(() => worker(aiki))
      // @ts-expect-error: only workflows go in the registry
      const added = thrown(() => w.registry.add({ name: "not a workflow" }))
      assert.strictEqual(invalid(added).message, "workflowRegistry.add(): expected a workflow (`workflow({ name })`) or a version of one")
    }))
})
