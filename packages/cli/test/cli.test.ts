/**
 * `aiki` as users run it, in child processes: `aiki dev` in an empty directory with no DATABASE_URL or REDIS_URL
 * (a run completes, and is still there after a restart), and the run commands against it, including their one-line
 * errors and exit codes for a bad id, an unknown run and an unreachable server.
 */
import { freePort } from "@aiki/testing/freePort"
import { spawnNode, waitForHealth } from "@aiki/testing/NodeProcess"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { existsSync, mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const cli = fileURLToPath(new URL("../src/main.ts", import.meta.url))
const catalog = fileURLToPath(new URL("../../../examples/src/catalog.ts", import.meta.url))
const order = { orderId: "o-7", email: "ann@example.com", items: [{ sku: "pen", quantity: 2, price: 1.5 }] }

/** Runs one `aiki` command to its end. */
const aiki = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.scoped(Effect.gen(function*() {
    const run = yield* spawnNode(cli, { NO_COLOR: "1", ...env }, args)
    return yield* Effect.promise(() => run.exited)
  }))

describe("aiki", () => {
  it.live("dev runs the server and a worker with no setup, keeps runs across restarts, and serves the commands", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "aiki-dev-"))
      const port = yield* Effect.promise(freePort)
      const url = `http://localhost:${port}`
      const env = { AIKI_URL: url }
      // No DATABASE_URL, no REDIS_URL, run in an empty directory: its data goes to ./.aiki there.
      const dev = (args: ReadonlyArray<string>) =>
        spawnNode(cli, { NO_COLOR: "1" }, ["dev", "--port", String(port), ...args], { cwd: dir })

      // First life: start a run over plain HTTP, as any client would, and see it complete.
      const first = yield* Effect.scoped(Effect.gen(function*() {
        const running = yield* dev(["--workflows", catalog])
        yield* waitForHealth(`${url}/health`, running)
        // Not the default port: the suggested commands carry --url.
        assert.include(running.output(), `pnpm aiki --url ${url} workflows start order-processing`)
        const started = yield* Effect.promise(() =>
          fetch(`${url}/workflows/order-processing/versions/1.0.0/start`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ payload: order })
          }).then((r) => r.json() as Promise<{ id: string }>)
        )
        const watched = yield* aiki(["runs", "watch", started.id], env)
        assert.strictEqual(watched.code, 0, watched.stdout + watched.stderr)
        assert.include(watched.stdout, "send-confirmation completed")

        // The commands, human and --json.
        const viaCli = yield* aiki(["--json", "workflows", "start", "morning-routine", "1.0.0", "--payload", "{\"song\":\"la\",\"cups\":1}", "--wait"], env)
        assert.strictEqual(viaCli.code, 0, viaCli.stderr)
        const waited = JSON.parse(viaCli.stdout) as { run: { state: string; result: { coffeeResult: string } } }
        assert.strictEqual(waited.run.state, "completed")
        assert.strictEqual(waited.run.result.coffeeResult, "1 cup(s) of coffee ready")

        // --wait in a pipe (no terminal) still says which run it started, then follows it.
        const piped = yield* aiki(["workflows", "start", "morning-routine", "1.0.0", "--payload", "{\"song\":\"la\",\"cups\":1}", "--wait"], env)
        assert.strictEqual(piped.code, 0, piped.stderr)
        assert.match(piped.stdout, /^Started run [0-9a-f-]{36} \(new, pending\)\n/)
        assert.include(piped.stdout, "run completed")

        const known = yield* aiki(["workflows", "list"], env)
        assert.match(known.stdout, /order-processing\s+1\.0\.0/)

        const listed = yield* aiki(["--json", "runs", "list", "--workflow", "order-processing"], env)
        assert.strictEqual(listed.code, 0, listed.stderr)
        assert.deepStrictEqual((JSON.parse(listed.stdout) as { runs: Array<{ id: string }> }).runs.map((r) => r.id), [started.id])
        const table = yield* aiki(["runs", "list", "--workflow", "order-processing", "--state", "completed"], env)
        assert.match(table.stdout, /ID\s+VERSION\s+STATE/)
        assert.include(table.stdout, started.id)

        const shown = yield* aiki(["runs", "get", started.id], env)
        assert.strictEqual(shown.code, 0, shown.stderr)
        assert.include(shown.stdout, "order-processing@1.0.0")
        assert.match(shown.stdout, /process-payment\s+completed\s+1/)

        // A run waiting for an event: sent from the command line, it wakes and completes.
        const expense = yield* aiki(["--json", "workflows", "start", "expense-approval", "1.0.0", "--payload", "{\"expenseId\":\"e-1\",\"employee\":\"ann\",\"amount\":12}"], env)
        const expenseId = (JSON.parse(expense.stdout) as { id: string }).id
        const approved = yield* aiki(["runs", "send-event", expenseId, "approval", "--payload", "{\"approved\":true,\"by\":\"bob\"}"], env)
        assert.strictEqual(approved.code, 0, approved.stderr)
        const reimbursed = yield* aiki(["--json", "runs", "watch", expenseId], env)
        assert.strictEqual(reimbursed.code, 0, reimbursed.stderr)
        assert.strictEqual((JSON.parse(reimbursed.stdout) as { run: { result: { status: string } } }).run.result.status, "reimbursed")

        // A run nobody serves stays pending until cancelled; cancelling twice is fine, watching it exits 1.
        const pending = yield* aiki(["--json", "workflows", "start", "nobody-serves-this", "1.0.0"], env)
        const pendingId = (JSON.parse(pending.stdout) as { id: string }).id
        const cancelled = yield* aiki(["runs", "cancel", pendingId], env)
        assert.include(cancelled.stdout, "cancelled")
        const watchCancelled = yield* aiki(["runs", "watch", pendingId], env)
        assert.strictEqual(watchCancelled.code, 1)
        // Retried by hand it is pending again, as the same run; a run that is not failed or cancelled is refused,
        // and a reset names what is not in the journal.
        const retried = yield* aiki(["runs", "retry", pendingId], env)
        assert.strictEqual(retried.code, 0, retried.stderr)
        assert.include(retried.stdout, "pending again (attempt 2)")
        const retriedTwice = yield* aiki(["runs", "retry", pendingId], env)
        assert.strictEqual(retriedTwice.code, 1)
        assert.include(retriedTwice.stderr, "only a failed or cancelled run can be retried")
        yield* aiki(["runs", "cancel", pendingId], env)
        const reset = yield* aiki(["runs", "reset", pendingId, "--sequence", "0"], env)
        assert.strictEqual(reset.code, 1)
        assert.include(reset.stderr, "has no journal entry at sequence 0")
        const flagged = yield* aiki(["workflows", "start", "nobody-serves-this", "1.0.0"], env)
        assert.include(flagged.stderr, "warning: No worker had registered nobody-serves-this version 1.0.0")

        // Schedules: created paused, triggered, backfilled, shown, listed and deleted; a bad cron is one line.
        const routine = "{\"song\":\"la\",\"cups\":1}"
        const created = yield* aiki(["schedules", "create", "morning-routine", "1.0.0", "--id", "mornings", "--cron", "0 7 * * *",
          "--timezone", "Europe/Paris", "--payload", routine, "--paused"], env)
        assert.strictEqual(created.code, 0, created.stderr)
        assert.include(created.stdout, "0 7 * * * (Europe/Paris), overlap skip, paused")
        const triggered = yield* aiki(["--json", "schedules", "trigger", "mornings"], env)
        assert.strictEqual(triggered.code, 0, triggered.stderr)
        const triggeredRun = yield* aiki(["runs", "watch", (JSON.parse(triggered.stdout) as { id: string }).id], env)
        assert.strictEqual(triggeredRun.code, 0, triggeredRun.stderr)
        const backfilled = yield* aiki(["schedules", "backfill", "mornings", "--from", "2025-01-01T00:00:00Z", "--to", "2025-01-03T00:00:00Z"], env)
        assert.strictEqual(backfilled.stdout.trim(), "2 fire times: 2 runs started, 0 had one")
        const schedule = yield* aiki(["schedules", "get", "mornings"], env)
        assert.include(schedule.stdout, "2025-01-02T06:00:00.000Z")
        const schedules = yield* aiki(["schedules", "list"], env)
        assert.match(schedules.stdout, /mornings\s+morning-routine@1\.0\.0\s+0 7 \* \* \* \(Europe\/Paris\)/)
        const badCron = yield* aiki(["schedules", "create", "morning-routine", "1.0.0", "--cron", "0 25 * * *"], env)
        assert.strictEqual(badCron.code, 1)
        assert.include(badCron.stderr, "is not a valid cron expression")
        const deleted = yield* aiki(["schedules", "delete", "mornings"], env)
        assert.strictEqual(deleted.code, 0, deleted.stderr)
        assert.strictEqual((yield* aiki(["schedules", "get", "mornings"], env)).stderr.trim(), "aiki: No schedule has id mornings")

        // Errors: one line, non-zero exit.
        const badId = yield* aiki(["runs", "get", "not-a-uuid"], env)
        assert.strictEqual(badId.code, 1)
        assert.strictEqual(badId.stderr.trim().split("\n").length, 1)
        assert.include(badId.stderr, "UUID")
        const unknown = yield* aiki(["runs", "get", "01900000-0000-7000-8000-000000000000"], env)
        assert.strictEqual(unknown.code, 1)
        assert.include(unknown.stderr, "No workflow run has id 01900000-0000-7000-8000-000000000000")
        const badPayload = yield* aiki(["workflows", "start", "x", "1.0.0", "--payload", "{oops"], env)
        assert.strictEqual(badPayload.code, 1)
        assert.include(badPayload.stderr, "--payload is not valid JSON")

        running.child.kill("SIGINT")
        const exited = yield* Effect.promise(() => running.exited)
        assert.strictEqual(exited.code, 0, exited.stderr)
        return started.id
      }))

      // Second life, same directory: the run is still there.
      yield* Effect.scoped(Effect.gen(function*() {
        const running = yield* dev([])
        yield* waitForHealth(`${url}/health`, running)
        const status = yield* Effect.promise(() =>
          fetch(`${url}/workflow-runs/${first}/status`).then((r) => r.json() as Promise<{ state: string }>)
        )
        assert.strictEqual(status.state, "completed")
        assert.isTrue(existsSync(join(dir, ".aiki", "pgdata")))
      }))

      const closed = yield* Effect.promise(freePort)
      const unreachable = yield* aiki(["runs", "list", "--workflow", "x"], { AIKI_URL: `http://127.0.0.1:${closed}` })
      assert.strictEqual(unreachable.code, 1)
      assert.strictEqual(unreachable.stderr.trim(), `aiki: cannot reach Aiki at http://127.0.0.1:${closed}: connect ECONNREFUSED 127.0.0.1:${closed}`)
    }), 180_000)
})
