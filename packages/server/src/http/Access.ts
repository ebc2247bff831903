/**
 * The server side of the contract's middlewares: API keys checked in constant time and mapped to roles, and
 * request decoding failures turned into typed 400/413 answers that name the offending field.
 */
import { ClientAccess, Principal, RequestValidation, type Role, WorkerAccess } from "@aiki/contract/Access"
import { Forbidden, InvalidRequest, PayloadTooLarge, RequestIssue, Unauthorized } from "@aiki/contract/Errors"
import { Cause, Effect, Layer, Redacted, SchemaIssue } from "effect"
import { HttpServerError } from "effect/http"
import { HttpApiError } from "effect/http-api"
import type { unhandled } from "effect/Types"
import { createHash, timingSafeEqual } from "node:crypto"
import { type ApiKey, ServerConfig } from "../ServerConfig.ts"

const digest = (value: string) => createHash("sha256").update(value).digest()

/** Finds the key's entry, comparing against every configured key in constant time (no early exit). */
const lookup = (keys: ReadonlyArray<{ readonly digest: Buffer; readonly entry: ApiKey }>, presented: string) => {
  const candidate = digest(presented)
  let found: ApiKey | undefined
  for (const key of keys) {
    if (timingSafeEqual(key.digest, candidate) && found === undefined) found = key.entry
  }
  return found
}

const makeAccess = (allowed: ReadonlyArray<Role>, what: string) =>
  Effect.gen(function*() {
    const config = yield* ServerConfig
    const keys = config.apiKeys.map((entry) => ({ entry, digest: digest(Redacted.value(entry.key)) }))
    if (keys.length === 0) {
      // No key configured: development mode, every caller is an admin (logged once at start by the server).
      const anonymous = Principal.of({ role: "admin", keyName: "anonymous" })
      return { apiKey: (httpEffect: Effect.Effect<any, any, any>) => Effect.provideService(httpEffect, Principal, anonymous) }
    }
    return {
      apiKey: Effect.fnUntraced(function*(
        httpEffect: Effect.Effect<any, any, any>,
        { credential }: { readonly credential: Redacted.Redacted<string> }
      ) {
        const presented = Redacted.value(credential)
        if (presented.length === 0) {
          return yield* new Unauthorized({ message: "Missing X-API-Key header" })
        }
        const key = lookup(keys, presented)
        if (key === undefined) return yield* new Unauthorized({ message: "Invalid API key" })
        if (!allowed.includes(key.role)) {
          return yield* new Forbidden({ message: `A ${key.role} key may not ${what}` })
        }
        return yield* Effect.provideService(httpEffect, Principal, Principal.of({ role: key.role, keyName: key.name }))
      })
    }
  })

export const ClientAccessLive = Layer.effect(
  ClientAccess,
  Effect.map(makeAccess(["admin", "client"], "start, read or cancel runs"), (access) => ClientAccess.of(access))
)

export const WorkerAccessLive = Layer.effect(
  WorkerAccess,
  Effect.map(makeAccess(["admin", "worker"], "use the worker protocol"), (access) => WorkerAccess.of(access))
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

export const layer = Layer.mergeAll(ClientAccessLive, WorkerAccessLive, RequestValidationLive)
