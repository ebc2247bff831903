/**
 * Pages are addressed by the URL's fragment (`#/runs/ID`), never by its path: every path belongs to the API
 * (`/workflows`, `/workers`, …), so a page could otherwise shadow an endpoint, and a link copied from the address
 * bar opens the same page.
 */
import { useEffect, useState } from "preact/hooks"

export type Route =
  | { readonly page: "runs"; readonly query: URLSearchParams }
  | { readonly page: "run"; readonly id: string }
  | { readonly page: "workflows" }
  | { readonly page: "workers" }
  | { readonly page: "schedules" }

export const parse = (hash: string): Route => {
  const [path = "", search = ""] = hash.replace(/^#/, "").split("?")
  const segments = path.split("/").filter((segment) => segment.length > 0).map(decodeURIComponent)
  switch (segments[0]) {
    case "runs":
      return segments[1] !== undefined ? { page: "run", id: segments[1] } : { page: "runs", query: new URLSearchParams(search) }
    case "workflows":
      return { page: "workflows" }
    case "workers":
      return { page: "workers" }
    case "schedules":
      return { page: "schedules" }
    default:
      return { page: "runs", query: new URLSearchParams(search) }
  }
}

/** The link to a page. */
export const href = {
  runs: (query: Record<string, string | undefined> = {}) => {
    const params = new URLSearchParams()
    for (const [key, value] of Object.entries(query)) if (value !== undefined && value !== "") params.set(key, value)
    const search = params.toString()
    return `#/runs${search.length > 0 ? `?${search}` : ""}`
  },
  run: (id: string) => `#/runs/${encodeURIComponent(id)}`,
  workflows: () => "#/workflows",
  workers: () => "#/workers",
  schedules: () => "#/schedules"
}

export const navigate = (to: string) => {
  window.location.hash = to.replace(/^#/, "")
}

/** The current route, following the address bar. */
export const useRoute = (): Route => {
  const [route, setRoute] = useState(() => parse(window.location.hash))
  useEffect(() => {
    const update = () => setRoute(parse(window.location.hash))
    window.addEventListener("hashchange", update)
    return () => window.removeEventListener("hashchange", update)
  }, [])
  return route
}
