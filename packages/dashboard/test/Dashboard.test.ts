/**
 * The dashboard in a real Chromium (Debian's, driven by Playwright) against a real server and a real worker, both
 * in processes of their own, with API keys configured: the login, the runs list with the right states (updating
 * live), a failed run's timeline with both attempts and the error, an event sent from the page completing a
 * waiting run while the page updates by itself, cancelling from the page, a schedule paused, resumed and triggered
 * from its page, a parent and its child run linked both ways, and a `client` key that sees no admin page. Screenshots of the main pages go to `test-results/dashboard/` (not in git).
 */
import * as Client from "@aiki/contract/Client"
import type { RunId, ScheduleId, WorkflowName, WorkflowVersion } from "@aiki/contract/Ids"
import { eventually } from "@aiki/testing/eventually"
import { freePort } from "@aiki/testing/freePort"
import { spawnNode, waitForHealth } from "@aiki/testing/NodeProcess"
import * as TestDatabase from "@aiki/testing/TestDatabase"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { FetchHttpClient } from "effect/http"
import { mkdirSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { type Browser, chromium, type Page } from "playwright-core"
import { build, isStale } from "../scripts/build.ts"

const serverMain = fileURLToPath(new URL("../../server/src/main.ts", import.meta.url))
const workerMain = fileURLToPath(new URL("fixtures/worker.ts", import.meta.url))
const artifacts = fileURLToPath(new URL("../../../test-results/dashboard/", import.meta.url))
const keys = { admin: "e2e-admin-key", client: "e2e-client-key", worker: "e2e-worker-key" } as const

/** Debian's Chromium (installed by `.ci/run`); Playwright's own browser download is not reachable here. */
const launch = Effect.acquireRelease(
  Effect.promise(() =>
    chromium.launch({
      executablePath: process.env["CHROMIUM_PATH"] ?? "/usr/bin/chromium",
      headless: true,
      // Without the networking switches Chromium keeps calling home, which this closed network answers slowly.
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync"
      ]
    })
  ),
  (browser) => Effect.promise(() => browser.close())
)

const newPage = (browser: Browser, viewport = { width: 1280, height: 800 }) =>
  Effect.promise(async () => {
    const context = await browser.newContext({ viewport })
    const page = await context.newPage()
    page.setDefaultTimeout(20_000)
    return page
  })

const shot = (page: Page, name: string) =>
  Effect.promise(() => page.screenshot({ path: `${artifacts}${name}.png`, fullPage: true }))

const logIn = (page: Page, baseUrl: string, key: string) =>
  Effect.promise(async () => {
    await page.goto(baseUrl)
    await page.getByLabel("API key").fill(key)
    await page.getByRole("button", { name: "Log in" }).click()
  })

/** Waits until the run's row in the list shows `state`. */
const rowInState = (page: Page, id: RunId, state: string) =>
  Effect.promise(() => page.locator(`tr[data-run-id="${id}"][data-state="${state}"]`).waitFor())

describe("dashboard", () => {
  it.live("shows runs, timelines and workers in a real browser, and acts on runs as the key's role allows", () =>
    Effect.scoped(Effect.gen(function*() {
      mkdirSync(artifacts, { recursive: true })
      if (isStale()) yield* Effect.promise(() => build())

      const database = yield* TestDatabase.make
      const port = yield* Effect.promise(freePort)
      const baseUrl = `http://127.0.0.1:${port}`
      const server = yield* spawnNode(serverMain, {
        DATABASE_URL: database.url,
        PORT: String(port),
        HOST: "127.0.0.1",
        API_KEY: keys.admin,
        API_KEYS: `client:${keys.client},worker:${keys.worker}`,
        REAPER_INTERVAL_MS: "500"
      })
      yield* waitForHealth(`${baseUrl}/health`, server)
      yield* spawnNode(workerMain, { AIKI_URL: baseUrl, AIKI_API_KEY: keys.worker })
      const browser = yield* launch

      const api = yield* Client.make({ baseUrl, apiKey: keys.admin }).pipe(Effect.provide(FetchHttpClient.layer))
      const start = (name: string, payload: unknown) =>
        api.workflows.start({
          params: { name: name as WorkflowName, version: "1.0.0" as WorkflowVersion },
          payload: { payload: payload as never }
        }).pipe(Effect.map((started) => started.id))
      const stateOf = (id: RunId) => api.runs.status({ params: { id } }).pipe(Effect.map((run) => run.state))
      const reaches = (id: RunId, state: string) =>
        eventually(Effect.flatMap(stateOf(id), (now) => now === state ? Effect.void : Effect.fail(now)), {
          timeoutMs: 30_000
        })

      const completes = yield* start("completes", { name: "ann", times: 1 })
      const fails = yield* start("fails-after-retry", 12)
      const waits = yield* start("awaits-approval", { expense: "taxi" })
      const long = yield* start("runs-long", null)
      yield* Effect.all([
        reaches(completes, "completed"),
        reaches(fails, "failed"),
        reaches(waits, "awaiting_event"),
        reaches(long, "running")
      ], { concurrency: "unbounded" })

      // An admin logs in; the list shows every run in its state, and a run started now appears by itself.
      const page = yield* newPage(browser)
      const refused = yield* Effect.promise(async () => {
        await page.goto(baseUrl)
        await page.getByLabel("API key").fill(keys.worker)
        await page.getByRole("button", { name: "Log in" }).click()
        return page.getByRole("alert").textContent()
      })
      assert.include(refused, "worker key")
      yield* logIn(page, baseUrl, keys.admin)
      yield* rowInState(page, completes, "completed")
      yield* rowInState(page, fails, "failed")
      yield* rowInState(page, waits, "awaiting_event")
      yield* rowInState(page, long, "running")
      yield* Effect.promise(() => page.getByRole("status").filter({ hasText: "Live" }).waitFor())
      const later = yield* start("completes", { name: "bob", times: 2 })
      yield* rowInState(page, later, "completed")
      yield* shot(page, "runs")

      // The failed run: both attempts of its task in the timeline, each with the error.
      yield* Effect.promise(() => page.locator(`a[href="#/runs/${fails}"]`).click())
      const attempts = yield* Effect.promise(async () => {
        const rows = page.locator('table[aria-label="Timeline bars"] tbody tr', { hasText: "charge-card" })
        await rows.nth(1).waitFor()
        return rows.allTextContents()
      })
      assert.strictEqual(attempts.length, 2, attempts.join("\n"))
      assert.include(attempts[0], "attempt 1")
      assert.include(attempts[1], "attempt 2")
      for (const attempt of attempts) {
        assert.include(attempt, "failed")
        assert.include(attempt, "card declined by the bank")
      }
      const runError = yield* Effect.promise(() => page.locator("figure.error").textContent())
      assert.include(runError, "CardDeclined")
      yield* shot(page, "run-failed")

      // The waiting run: the event sent from the page completes it, and the page follows without a reload.
      yield* Effect.promise(async () => {
        await page.goto(`${baseUrl}/#/runs/${waits}`)
        await page.locator("h1 .state-awaiting_event").waitFor()
        await page.getByLabel("Event name").fill("approval")
        await page.getByLabel("Payload (JSON)").fill("{\"approved\": true}")
        await page.getByRole("button", { name: "Send event" }).click()
        await page.locator("h1 .state-completed").waitFor()
        await page.locator('table[aria-label="Timeline bars"] tbody tr', { hasText: "reimburse" }).waitFor()
      })
      assert.strictEqual(yield* stateOf(waits), "completed")
      yield* shot(page, "run-event-completed")

      // Cancelling the long run from its page.
      yield* Effect.promise(async () => {
        await page.goto(`${baseUrl}/#/runs/${long}`)
        await page.locator("h1 .state-running").waitFor()
        await page.getByRole("button", { name: "Cancel run…" }).click()
        await page.getByRole("button", { name: "Yes, cancel this run" }).click()
        await page.locator("h1 .state-cancelled").waitFor()
      })
      assert.strictEqual(yield* stateOf(long), "cancelled")

      // Retrying it from its page: the same run runs again (its attempt counted), and the page follows it again.
      yield* Effect.promise(async () => {
        await page.getByRole("button", { name: "Retry run" }).click()
        await page.locator("h1 .state-running, h1 .state-pending").first().waitFor()
        await page.locator(".trail td", { hasText: "retried" }).waitFor()
      })
      assert.include(["pending", "running"], yield* stateOf(long))

      // A parent's page links its child; the child's page links back to its parent.
      const parent = yield* start("starts-child", "cat")
      yield* reaches(parent, "completed")
      const [child] = yield* api.runs.children({ params: { id: parent } })
      yield* Effect.promise(async () => {
        await page.goto(`${baseUrl}/#/runs/${parent}`)
        await page.locator('section[aria-labelledby="children-title"]').locator(`a[href="#/runs/${child!.id}"]`).click()
        await page.locator("h1", { hasText: "completes@1.0.0" }).waitFor()
        await page.locator(`a[href="#/runs/${parent}"]`).waitFor()
      })
      yield* shot(page, "run-child")

      // Admin pages: the fleet and the workflows with their schemas.
      yield* Effect.promise(async () => {
        await page.getByRole("link", { name: "Workers" }).click()
        await page.locator('tr[data-worker-id="dashboard-worker"]', { hasText: "healthy" }).waitFor()
      })
      yield* shot(page, "workers")
      yield* Effect.promise(async () => {
        await page.getByRole("link", { name: "Workflows" }).click()
        await page.getByRole("heading", { name: "completes@1.0.0" }).waitFor()
      })
      yield* shot(page, "workflows")

      // The start form checks the payload against the version's schema before sending it.
      const problems = yield* Effect.promise(async () => {
        const card = page.locator("article", { has: page.getByRole("heading", { name: "completes@1.0.0" }) })
        await card.getByText("Start a run").click()
        await card.getByLabel(/^Payload/).fill("{\"name\": \"eve\"}")
        await card.getByRole("button", { name: "Start run" }).click()
        return card.getByRole("alert").textContent()
      })
      assert.include(problems, "times")

      // Schedules: the next fire times, and pausing, resuming and triggering from the page.
      yield* api.schedules.create({
        payload: {
          id: "hourly-greeting" as ScheduleId,
          workflowName: "completes" as WorkflowName,
          workflowVersion: "1.0.0" as WorkflowVersion,
          spec: { everyMs: 3_600_000 },
          payload: { name: "sam", times: 1 }
        }
      })
      yield* Effect.promise(async () => {
        await page.getByRole("link", { name: "Schedules" }).click()
        const row = page.locator('tr[data-schedule-id="hourly-greeting"]')
        await row.getByRole("button", { name: "Pause" }).click()
        await row.locator(".state-paused").waitFor()
        await row.getByRole("button", { name: "Resume" }).click()
        await row.getByRole("button", { name: "Pause" }).waitFor()
        await row.getByRole("button", { name: "Trigger now" }).click()
        await page.getByRole("status").filter({ hasText: "Started a run of hourly-greeting" }).waitFor()
        await row.locator(".state-completed").waitFor()
      })
      const greeting = yield* api.schedules.get({ params: { id: "hourly-greeting" as ScheduleId } })
      assert.strictEqual(greeting.lastRuns[0]?.state, "completed")
      yield* shot(page, "schedules")

      // A phone-width look at the list.
      const phone = yield* newPage(browser, { width: 390, height: 844 })
      yield* logIn(phone, baseUrl, keys.admin)
      yield* rowInState(phone, completes, "completed")
      yield* shot(phone, "runs-phone")

      // A client key: runs and their actions yes, the admin-only workers page no.
      const client = yield* newPage(browser)
      yield* logIn(client, baseUrl, keys.client)
      yield* rowInState(client, completes, "completed")
      const clientView = yield* Effect.promise(async () => {
        const workersLinks = await client.getByRole("link", { name: "Workers" }).count()
        await client.goto(`${baseUrl}/#/workers`)
        const notice = await client.getByRole("alert").textContent()
        return { workersLinks, notice }
      })
      assert.strictEqual(clientView.workersLinks, 0)
      assert.include(clientView.notice, "needs an admin key")
    })), 120_000)
})
