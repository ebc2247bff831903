/**
 * The server side of the contract's middlewares: API keys (or the dashboard's session cookie) checked in constant
 * time, and JWTs verified (`BearerTokens`), mapped to roles, and request decoding failures turned into typed 400/413 answers that name the
 * offending field.
 */
import {
  AdminAccess,
  ClientAccess,
  Principal,
  RequestValidation,
  rolesAllowed,
  sessionCookieName,
  WorkerAccess
} from "@aiki/contract/Access"
import { Forbidden, InvalidRequest, PayloadTooLarge, RequestIssue, Unauthorized } from "@aiki/contract/Errors"
import { Cause, Effect, Layer, Option, SchemaIssue } from "effect"
import { HttpServerError, HttpServerRequest } from "effect/http"
import { HttpApiError } from "effect/http-api"
import type { unhandled } from "effect/Types"
import { ApiKeys } from "../ApiKeys.ts"
import { BearerTokens } from "../BearerTokens.ts"
import { ServerConfig } from "../ServerConfig.ts"

/**
 * The access middleware `middleware` declares in the contract, letting in the roles `Access.rolesAllowed` gives
 * it. A request presents an `X-API-Key` header (which wins when present), a JWT as `Authorization: Bearer`, or,
 * where `cookie` is accepted, the session cookie. Every security handler reaches the same decision from the whole
 * request, so whichever one the builder reports last, the caller gets the precise reason (invalid key, expired
 * token or session, forbidden role).
 */
const makeAccess = (middleware: { readonly key: string }, what: string, options: { readonly cookie: boolean }) =>
  Effect.gen(function*() {
    const keys = yield* ApiKeys
    const tokens = yield* BearerTokens
    const config = yield* ServerConfig
    const allowed = rolesAllowed.get(middleware.key) ?? []
    if (!keys.enabled && !tokens.enabled) {
      // Main refuses such a configuration unless AUTH=off; this guards servers composed in code the same way.
      if (!config.authOff) {
        return yield* Effect.die(new Error("No API key or JWT is configured, and authentication is not turned off (authOff)"))
      }
      // Development mode, every caller is an admin (logged once at start by the server).
      const anonymous = Principal.of({ role: "admin", keyName: "anonymous" })
      const open = (httpEffect: Effect.Effect<any, any, any>) => Effect.provideService(httpEffect, Principal, anonymous)
      return { apiKey: open, bearer: open, session: open }
    }
    const missing = new Unauthorized({
      message: tokens.enabled ? "Missing X-API-Key header or Authorization: Bearer token" : "Missing X-API-Key header"
    })
    /** Who the request says it is: its key, else its bearer token, else its session; and as what kind of credential. */
    const identify = Effect.fnUntraced(function*(request: HttpServerRequest.HttpServerRequest) {
      const header = request.headers["x-api-key"] ?? ""
      if (header.length > 0) {
        const key = yield* Option.match(keys.find(header), {
          onNone: () => Effect.fail(new Unauthorized({ message: "Invalid API key" })),
          onSome: Effect.succeed
        })
        return { role: key.role, keyName: key.name, kind: "key" }
      }
      const bearer = /^Bearer +(\S+)$/i.exec(request.headers["authorization"] ?? "")
      if (bearer !== null) return { ...yield* tokens.verify(bearer[1]!), kind: "token" }
      const cookie = options.cookie ? request.cookies[sessionCookieName] ?? "" : ""
      if (cookie.length > 0) {
        const session = yield* keys.verifySession(cookie).pipe(Effect.flatMap(Option.match({
          onNone: () =>
            Effect.fail(new Unauthorized({ message: "The session has expired or its key changed: log in again" })),
          onSome: Effect.succeed
        })))
        return { role: session.key.role, keyName: session.key.name, kind: "key" }
      }
      return yield* missing
    })
    const decide = (httpEffect: Effect.Effect<any, any, any>) =>
      Effect.gen(function*() {
        const caller = yield* identify(yield* HttpServerRequest.HttpServerRequest)
        if (!allowed.includes(caller.role)) {
          return yield* new Forbidden({ message: `A ${caller.role} ${caller.kind} may not ${what}` })
        }
        return yield* Effect.provideService(httpEffect, Principal, Principal.of({ role: caller.role, keyName: caller.keyName }))
      })
    return { apiKey: decide, bearer: decide, session: decide }
  })

export const ClientAccessLive = Layer.effect(
  ClientAccess,
  Effect.map(makeAccess(ClientAccess, "start, read or cancel runs", { cookie: true }), (access) => ClientAccess.of(access))
)

export const AdminAccessLive = Layer.effect(
  AdminAccess,
  Effect.map(makeAccess(AdminAccess, "use operator endpoints", { cookie: true }), (access) => AdminAccess.of(access))
)

export const WorkerAccessLive = Layer.effect(
  WorkerAccess,
  Effect.map(
    makeAccess(WorkerAccess, "use the worker protocol", { cookie: false }),
    ({ apiKey, bearer }) => WorkerAccess.of({ apiKey, bearer })
  )
)

const formatIssues = SchemaIssue.makeFormatterStandardSchemaV1()

/** Where in the request a decoding failure was found, as the first segment of its path. */
const location = {
  Params: "path",
  Headers: "headers",
  Query: "query",
  Payload: "body",
  Body: "body",
  ResponseHeaders: "headers"
} as const

const invalidRequest = (error: HttpApiError.HttpApiSchemaError) => {
  const issues = formatIssues(error.cause.issue).issues.map((issue) =>
    new RequestIssue({
      path: [
        location[error.kind],
        ...(issue.path ?? []).map((segment) => {
          const key = typeof segment === "object" && segment !== null ? segment.key : segment
          return typeof key === "number" ? key : String(key)
        })
      ],
      message: issue.message
    })
  )
  const first = issues[0]
  return new InvalidRequest({
    message: first === undefined
      ? `Invalid request ${location[error.kind]}`
      : `Invalid request: ${first.path.join(".")}: ${first.message}`,
    issues
  })
}

export const RequestValidationLive = Layer.effect(
  RequestValidation,
  Effect.gen(function*() {
    const config = yield* ServerConfig
    const tooLarge = new PayloadTooLarge({
      maxBytes: config.maxPayloadBytes,
      message: `The request body is larger than ${config.maxPayloadBytes} bytes (MAX_PAYLOAD_BYTES)`
    })
    /** The typed answer for a request that could not be read or decoded; undefined for any other failure. */
    const classify = (error: unknown): InvalidRequest | PayloadTooLarge | undefined => {
      if (error instanceof HttpServerError.HttpServerError) return classify(error.reason)
      if (HttpApiError.HttpApiSchemaError.is(error)) {
        // Body and ResponseHeaders are failures to encode our own answer: a server bug, not a bad request.
        return error.kind === "Body" || error.kind === "ResponseHeaders" ? undefined : invalidRequest(error)
      }
      if (HttpApiError.HttpApiPayloadTooLarge.is(error)) return tooLarge
      // Reading the body fails as a defect (the builder reads it with `orDie`); the limit is `MaxBodySize`.
      if (error instanceof HttpServerError.RequestParseError) {
        return error.reason === "BodyTooLarge" ? tooLarge : new InvalidRequest({
          message: "The request body could not be read",
          issues: [new RequestIssue({ path: ["body"], message: error.description ?? "unreadable body" })]
        })
      }
      return undefined
    }
    return RequestValidation.of((httpEffect) =>
      Effect.catchCause(httpEffect, (cause): Effect.Effect<never, unhandled | InvalidRequest | PayloadTooLarge> => {
        for (const reason of cause.reasons) {
          const answer = Cause.isFailReason(reason)
            ? classify(reason.error)
            : Cause.isDieReason(reason)
            ? classify(reason.defect)
            : undefined
          if (answer !== undefined) return Effect.fail(answer)
        }
        return Effect.failCause(cause)
      })
    )
  })
)

export const layer = Layer.mergeAll(ClientAccessLive, AdminAccessLive, WorkerAccessLive, RequestValidationLive)
