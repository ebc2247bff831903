/**
 * The configured API keys: finding the entry of a presented key, and the dashboard's sessions that stand for a
 * key. A session token is `payload.signature`, where the payload names the key and an expiry and the signature is
 * an HMAC-SHA256 of the payload keyed with the API key itself. So sessions need no storage and no secret of their
 * own: every replica configured with the same keys accepts them, and changing or removing a key ends its sessions.
 * A session cannot be revoked before it expires other than by changing its key (logging out clears the cookie).
 */
import { Clock, Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import { createHash, createHmac, timingSafeEqual } from "node:crypto"
import { type ApiKey, ServerConfig } from "./ServerConfig.ts"

/** A session, once its token was checked. */
export interface VerifiedSession {
  readonly key: ApiKey
  /** Epoch milliseconds. */
  readonly expiresAt: number
}

const SessionPayload = Schema.fromJsonString(Schema.Struct({ k: Schema.String, e: Schema.Int }))
const decodePayload = Schema.decodeUnknownOption(SessionPayload)
const encodePayload = Schema.encodeSync(SessionPayload)

const digest = (value: string) => createHash("sha256").update(value).digest()

const sign = (key: ApiKey, payload: string) =>
  createHmac("sha256", Redacted.value(key.key)).update(`aiki-session\u0000${payload}`).digest()

export class ApiKeys extends Context.Service<ApiKeys, {
  /** False when no key is configured: authentication is off and every caller is an anonymous admin. */
  readonly enabled: boolean
  /** The entry of the presented key, compared against every configured key in constant time. */
  readonly find: (presented: string) => Option.Option<ApiKey>
  /** A session token for `key`, valid for `SESSION_TTL_MS`. */
  readonly issueSession: (key: ApiKey) => Effect.Effect<{ readonly token: string; readonly expiresAt: number }>
  /** The key a session token stands for, if the token is genuine, unexpired and its key still configured. */
  readonly verifySession: (token: string) => Effect.Effect<Option.Option<VerifiedSession>>
}>()("@aiki/server/ApiKeys") {
  static readonly layer = Layer.effect(
    ApiKeys,
    Effect.gen(function*() {
      const config = yield* ServerConfig
      const keys = config.apiKeys.map((entry) => ({ entry, digest: digest(Redacted.value(entry.key)) }))
      const byName = new Map(config.apiKeys.map((entry) => [entry.name, entry]))

      const find = (presented: string): Option.Option<ApiKey> => {
        const candidate = digest(presented)
        let found: ApiKey | undefined
        // No early exit: the time taken does not tell which key (if any) matched.
        for (const key of keys) {
          if (timingSafeEqual(key.digest, candidate) && found === undefined) found = key.entry
        }
        return Option.fromUndefinedOr(found)
      }

      const issueSession = Effect.fnUntraced(function*(key: ApiKey) {
        const expiresAt = (yield* Clock.currentTimeMillis) + config.sessionTtlMs
        const payload = Buffer.from(encodePayload({ k: key.name, e: expiresAt })).toString("base64url")
        return { token: `${payload}.${sign(key, payload).toString("base64url")}`, expiresAt }
      })

      const verifySession = Effect.fnUntraced(function*(token: string) {
        const [payload, signature, ...rest] = token.split(".")
        if (payload === undefined || signature === undefined || rest.length > 0) return Option.none()
        const claims = decodePayload(Buffer.from(payload, "base64url").toString("utf8"))
        if (Option.isNone(claims)) return Option.none()
        const key = byName.get(claims.value.k)
        if (key === undefined) return Option.none()
        const expected = sign(key, payload)
        const presented = Buffer.from(signature, "base64url")
        if (presented.length !== expected.length || !timingSafeEqual(presented, expected)) return Option.none()
        if (claims.value.e <= (yield* Clock.currentTimeMillis)) return Option.none()
        return Option.some<VerifiedSession>({ key, expiresAt: claims.value.e })
      })

      return ApiKeys.of({ enabled: keys.length > 0, find, issueSession, verifySession })
    })
  )
}
