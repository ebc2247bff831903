/**
 * The dashboard's built files (`@aiki/dashboard`): its page at `/` and its assets under `/assets/`. Everything
 * else stays the API's: the dashboard routes with the URL's fragment (`/#/runs/…`), so no page path can shadow an
 * API path. Assets have content-hashed names and are cached for good; the page is revalidated every time, so a new
 * build is picked up on the next load.
 */
import { Effect, Layer, Option } from "effect"
import { HttpRouter, HttpServerResponse, HttpStaticServer } from "effect/http"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { ServerConfig } from "../ServerConfig.ts"

/**
 * What the page may load: only this origin's scripts, styles, images and connections, and no framing (the page
 * holds actions such as cancelling a run, so another site must not overlay it).
 */
const pageHeaders = {
  "Cache-Control": "no-cache",
  "Content-Security-Policy":
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer"
}

const notBuilt = HttpServerResponse.text(
  "The Aiki dashboard is not built here. Run `pnpm build` (or set DASHBOARD_DIR to a built dashboard).\n" +
    "The API reference is at /docs.\n",
  { status: 404 }
)

/** The routes serving the dashboard of `DASHBOARD_DIR`, or a hint at `/` when it was not built. */
export const layer = Layer.unwrap(Effect.gen(function*() {
  const config = yield* ServerConfig
  if (Option.isNone(config.dashboardDir)) return Layer.empty
  const dir = config.dashboardDir.value
  const index = join(dir, "index.html")
  if (!existsSync(index)) {
    yield* Effect.logWarning(`No dashboard at ${dir}: run \`pnpm build\` to serve it at /`)
    return HttpRouter.add("GET", "/", Effect.succeed(notBuilt))
  }
  return Layer.mergeAll(
    HttpRouter.add(
      "GET",
      "/",
      HttpServerResponse.file(index, { contentType: "text/html; charset=utf-8" }).pipe(
        Effect.map(HttpServerResponse.setHeaders(pageHeaders)),
        Effect.orElseSucceed(() => notBuilt)
      )
    ),
    HttpStaticServer.layer({
      root: join(dir, "assets"),
      prefix: "/assets",
      index: undefined,
      cacheControl: "public, max-age=31536000, immutable"
    })
  )
}))
