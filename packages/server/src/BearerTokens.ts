/**
 * Bearer tokens: JSON Web Tokens presented as `Authorization: Bearer <jwt>`, for deployments whose callers get
 * their identity from an identity provider rather than from a shared API key. A token is verified with the HS256
 * secret (`JWT_SECRET`) or with the key it names among those the provider publishes (`JWT_JWKS_URL`, fetched when
 * a token names a key not seen yet, then cached); its expiry and not-before times are enforced (30 s of clock
 * tolerance) and its issuer and audience checked when configured. The caller's role is read from a configured
 * claim (`JWT_ROLE_CLAIM`), so the provider decides who is an `admin`, a `worker` or a `client`.
 */
import { Role } from "@aiki/contract/Access"
import { Forbidden, Unauthorized } from "@aiki/contract/Errors"
import { Clock, Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import * as Jose from "jose"
import { type JwtConfig, ServerConfig } from "./ServerConfig.ts"

/** Who a verified token says the caller is. */
export interface TokenHolder {
  readonly role: Role
  /** `jwt:<sub>`: names the caller in logs and traces without the token. */
  readonly keyName: string
}

/** Signature algorithms accepted from a JWKS: asymmetric ones only, so no key of the set can be used as a secret. */
const asymmetric = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"]

const isRole = Schema.is(Role)

/** The claim `name` itself, else the dot-separated path `name` into nested claims. */
const claimOf = (payload: Jose.JWTPayload, name: string): unknown => {
  if (name in payload) return payload[name]
  let value: unknown = payload
  for (const segment of name.split(".")) {
    if (typeof value !== "object" || value === null) return undefined
    value = (value as Record<string, unknown>)[segment]
  }
  return value
}

/** The role the claim names: a role, or the first role of an array. */
const roleOf = (claim: unknown): Role | undefined =>
  isRole(claim) ? claim : Array.isArray(claim) ? claim.find(isRole) : undefined

/** Why a token was refused, in words a caller can act on (never the token itself). */
const refusal = (error: unknown, config: JwtConfig): Unauthorized => {
  const message = error instanceof Jose.errors.JWTExpired
    ? "The bearer token has expired"
    : error instanceof Jose.errors.JWTClaimValidationFailed
    ? `The bearer token is not accepted: ${error.message}`
    : error instanceof Jose.errors.JWSSignatureVerificationFailed
    ? "The bearer token's signature is not valid"
    : error instanceof Jose.errors.JOSEAlgNotAllowed
    ? "The bearer token is signed with an algorithm this server does not accept"
    : error instanceof Jose.errors.JWKSNoMatchingKey
    ? "No key published at JWT_JWKS_URL matches the bearer token"
    : error instanceof Jose.errors.JWSInvalid || error instanceof Jose.errors.JWTInvalid || Option.isNone(config.jwksUrl)
    ? "The bearer token is not a valid JWT"
    // Anything else happened fetching the published keys (unreachable, not a key set).
    : `Cannot verify the bearer token: the keys at ${config.jwksUrl.value} could not be fetched (${
      error instanceof Error ? error.message : String(error)
    })`
  return new Unauthorized({ message })
}

export class BearerTokens extends Context.Service<BearerTokens, {
  /** False when no JWT is configured: bearer tokens are refused. */
  readonly enabled: boolean
  /** The holder of a genuine, current token with a role; `Unauthorized` or `Forbidden` (no role) saying why not. */
  readonly verify: (token: string) => Effect.Effect<TokenHolder, Unauthorized | Forbidden>
}>()("@aiki/server/BearerTokens") {
  static readonly layer = Layer.effect(
    BearerTokens,
    Effect.gen(function*() {
      const settings = yield* ServerConfig
      if (Option.isNone(settings.jwt)) {
        const refused = new Unauthorized({ message: "Bearer tokens are not accepted: no JWT_SECRET or JWT_JWKS_URL is set" })
        return BearerTokens.of({ enabled: false, verify: () => Effect.fail(refused) })
      }
      const config = settings.jwt.value
      const secret = Option.map(config.secret, (s) => new TextEncoder().encode(Redacted.value(s)))
      const jwks = Option.map(config.jwksUrl, (url) => Jose.createRemoteJWKSet(new URL(url), { timeoutDuration: 5_000 }))
      const algorithms = [...(Option.isSome(secret) ? ["HS256"] : []), ...(Option.isSome(jwks) ? asymmetric : [])]
      // HS256 tokens are checked against the secret, every other algorithm against the published keys.
      const key: Jose.JWTVerifyGetKey = (header, token) => {
        if (header.alg === "HS256" && Option.isSome(secret)) return secret.value
        if (Option.isSome(jwks)) return jwks.value(header, token)
        throw new Jose.errors.JOSEAlgNotAllowed(`"${header.alg}" is not accepted`)
      }

      const verify = Effect.fnUntraced(function*(token: string) {
        const now = yield* Clock.currentTimeMillis
        const { payload } = yield* Effect.tryPromise({
          try: () =>
            Jose.jwtVerify(token, key, {
              algorithms,
              clockTolerance: 30,
              currentDate: new Date(now),
              ...Option.match(config.issuer, { onNone: () => ({}), onSome: (issuer) => ({ issuer }) }),
              ...Option.match(config.audience, { onNone: () => ({}), onSome: (audience) => ({ audience }) })
            }),
          catch: (error) => refusal(error, config)
        })
        const role = roleOf(claimOf(payload, config.roleClaim))
        if (role === undefined) {
          return yield* new Forbidden({
            message: `The bearer token's "${config.roleClaim}" claim names no role (admin, worker or client)`
          })
        }
        return { role, keyName: `jwt:${payload.sub ?? "unknown"}` } satisfies TokenHolder
      })

      return BearerTokens.of({ enabled: true, verify })
    })
  )
}
