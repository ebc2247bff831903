/**
 * The middlewares every endpoint group declares: who may call it (an `X-API-Key`, a JWT as `Authorization: Bearer`,
 * or the dashboard's session cookie, mapped to a role) and the request validation whose failures (`InvalidRequest`, `PayloadTooLarge`) the
 * client decodes as typed errors. Their server implementations live in `@aiki/server`; clients supply the key
 * through `layerClient`, browsers send the cookie by themselves.
 */
import * as Context from "effect/Context"
import * as Schema from "effect/Schema"
import * as HttpApiMiddleware from "effect/http-api/HttpApiMiddleware"
import * as HttpApiSecurity from "effect/http-api/HttpApiSecurity"
import { Forbidden, InvalidRequest, PayloadTooLarge, Unauthorized } from "./Errors.ts"

/** What a key may do: `client` starts and reads runs, `worker` claims and reports them, `admin` does everything. */
export const Role = Schema.Literals(["admin", "worker", "client"])
export type Role = typeof Role.Type

/** Who is calling, once their key was checked. */
export class Principal extends Context.Service<Principal, {
  readonly role: Role
  /** A short, non-secret name of the key (its position in the configuration), or `jwt:<subject>`; safe to log. */
  readonly keyName: string
}>()("@aiki/contract/Access/Principal") {}

const apiKey = HttpApiSecurity.apiKey({ in: "header", key: "X-API-Key" })

/** A JSON Web Token (`Authorization: Bearer <jwt>`), where the server is configured to verify them. */
const bearer = HttpApiSecurity.bearer

/** The name of the dashboard's session cookie (set by `POST /auth/session`, HttpOnly, SameSite=Strict). */
export const sessionCookieName = "aiki_session"

/**
 * The dashboard's session: a browser cannot send `X-API-Key` on a link or an `EventSource`, so after logging in
 * with a key it presents this cookie, which stands for that key and its role until it expires.
 */
export const sessionCookie = HttpApiSecurity.apiKey({ in: "cookie", key: sessionCookieName })

/** Endpoints applications call: start, read and cancel runs (roles `client` and `admin`). */
export class ClientAccess extends HttpApiMiddleware.Service<ClientAccess, { provides: Principal }>()(
  "@aiki/contract/Access/ClientAccess",
  { security: { apiKey, bearer, session: sessionCookie }, error: [Unauthorized, Forbidden], requiredForClient: true }
) {}

/** Endpoints for operators only, e.g. the fleet of workers (role `admin`). */
export class AdminAccess extends HttpApiMiddleware.Service<AdminAccess, { provides: Principal }>()(
  "@aiki/contract/Access/AdminAccess",
  { security: { apiKey, bearer, session: sessionCookie }, error: [Unauthorized, Forbidden], requiredForClient: true }
) {}

/** Endpoints workers call: register, claim, heartbeat, report (roles `worker` and `admin`). */
export class WorkerAccess extends HttpApiMiddleware.Service<WorkerAccess, { provides: Principal }>()(
  "@aiki/contract/Access/WorkerAccess",
  { security: { apiKey, bearer }, error: [Unauthorized, Forbidden], requiredForClient: true }
) {}

/** Turns request decoding failures into `InvalidRequest` (400) and oversized bodies into `PayloadTooLarge` (413). */
export class RequestValidation extends HttpApiMiddleware.Service<RequestValidation>()(
  "@aiki/contract/Access/RequestValidation",
  { error: [InvalidRequest, PayloadTooLarge] }
) {}

/**
 * The roles each access middleware lets in: the one table the server enforces and the dashboard reads to show only
 * what a role may do.
 */
export const rolesAllowed: ReadonlyMap<string, ReadonlyArray<Role>> = new Map([
  [ClientAccess.key, ["admin", "client"]],
  [AdminAccess.key, ["admin"]],
  [WorkerAccess.key, ["admin", "worker"]]
])
