/**
 * The dashboard: who is looking (the session, or a login form when the server has keys and the browser has no
 * session), the navigation, and the page the address bar names. Pages and actions a role may not use are not
 * shown (`Permissions.mayCall`); the server refuses them anyway.
 */
import type { Session } from "@aiki/contract/Models"
import { mayCall } from "@aiki/contract/Permissions"
import { useEffect, useState } from "preact/hooks"
import { type Failure, onUnauthorized, request } from "./Api.ts"
import { FailureNote } from "./components/Bits.tsx"
import { RunPage } from "./pages/Run.tsx"
import { RunsPage } from "./pages/Runs.tsx"
import { SchedulesPage } from "./pages/Schedules.tsx"
import { WorkersPage } from "./pages/Workers.tsx"
import { WorkflowsPage } from "./pages/Workflows.tsx"
import { href, type Route, useRoute } from "./Router.ts"

type Who = { readonly status: "loading" } | { readonly status: "login"; readonly failure?: Failure } | {
  readonly status: "in"
  readonly session: Session
}

const Login = ({ failure, onLogin }: { readonly failure: Failure | undefined; readonly onLogin: (s: Session) => void }) => {
  const [key, setKey] = useState("")
  const [problem, setProblem] = useState(failure)
  return (
    <main id="main" class="login">
      <form
        class="card"
        aria-labelledby="login-title"
        onSubmit={async (e) => {
          e.preventDefault()
          const outcome = await request((api) => api.session.login({ payload: { apiKey: key } }))
          if (outcome.ok) onLogin(outcome.value)
          else setProblem(outcome.failure)
        }}
      >
        <h1 id="login-title">Aiki</h1>
        <p>This server needs an API key. Use an <code>admin</code> or a <code>client</code> key.</p>
        <label>
          API key
          <input
            name="apiKey"
            type="password"
            autoComplete="current-password"
            required
            autoFocus
            value={key}
            onInput={(e) => setKey(e.currentTarget.value)}
          />
        </label>
        <FailureNote failure={problem} />
        <button type="submit">Log in</button>
      </form>
    </main>
  )
}

const Page = ({ route, session }: { readonly route: Route; readonly session: Session }) => {
  switch (route.page) {
    case "runs":
      return <RunsPage query={route.query} />
    case "run":
      return <RunPage id={route.id} role={session.role} />
    case "workflows":
      return <WorkflowsPage role={session.role} />
    case "schedules":
      return <SchedulesPage role={session.role} />
    case "workers":
      return mayCall(session.role, { group: "fleet", endpoint: "workers" })
        ? <WorkersPage />
        : <p role="alert">The workers page needs an admin key.</p>
  }
}

export const App = () => {
  const [who, setWho] = useState<Who>({ status: "loading" })
  const route = useRoute()
  useEffect(() => {
    void request((api) => api.session.current()).then((outcome) =>
      setWho(outcome.ok ? { status: "in", session: outcome.value } : { status: "login" })
    )
    // Only a session that was in use can end; a visitor who never logged in just sees the form.
    return onUnauthorized(() =>
      setWho((current) =>
        current.status === "in"
          ? { status: "login", failure: { tag: "Unauthorized", message: "Your session ended: log in again" } }
          : current
      )
    )
  }, [])

  if (who.status === "loading") return <p role="status" class="loading">Loading…</p>
  if (who.status === "login") {
    return <Login failure={who.failure} onLogin={(session) => setWho({ status: "in", session })} />
  }
  const { session } = who
  const current = (page: Route["page"]) => route.page === page || (page === "runs" && route.page === "run")
  return (
    <>
      <a class="skip" href="#main" onClick={(e) => {
        e.preventDefault()
        document.getElementById("main")?.focus()
      }}>Skip to content</a>
      <header class="top">
        <a class="brand" href={href.runs()}>Aiki</a>
        <nav aria-label="Main">
          <a href={href.runs()} aria-current={current("runs") ? "page" : undefined}>Runs</a>
          <a href={href.workflows()} aria-current={current("workflows") ? "page" : undefined}>Workflows</a>
          <a href={href.schedules()} aria-current={current("schedules") ? "page" : undefined}>Schedules</a>
          {mayCall(session.role, { group: "fleet", endpoint: "workers" }) && (
            <a href={href.workers()} aria-current={current("workers") ? "page" : undefined}>Workers</a>
          )}
        </nav>
        <div class="who">
          <span class="role" title={session.keyName}>{session.authRequired ? `${session.role} key` : "dev mode: no key needed"}</span>
          {session.authRequired && (
            <button
              type="button"
              onClick={async () => {
                await request((api) => api.session.logout())
                setWho({ status: "login" })
              }}
            >
              Log out
            </button>
          )}
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        <Page route={route} session={session} />
      </main>
    </>
  )
}
