/**
 * The typed client of the Aiki API, derived from its declaration: every endpoint is a method, every declared error
 * comes back as its class. The SDK, the CLI and the tests all talk to the server through it.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as HttpClient from "effect/http/HttpClient"
import * as HttpClientRequest from "effect/http/HttpClientRequest"
import * as HttpApiClient from "effect/http-api/HttpApiClient"
import * as HttpApiMiddleware from "effect/http-api/HttpApiMiddleware"
import { AdminAccess, ClientAccess, WorkerAccess } from "./Access.ts"
import { AikiApi } from "./Api.ts"

export interface ClientOptions {
  /** The server's address, e.g. `http://localhost:9090`. */
  readonly baseUrl: string
  /** Sent as `X-API-Key`; leave it out when the server runs without authentication. */
  readonly apiKey?: string | undefined
  /**
   * A JSON Web Token sent as `Authorization: Bearer`, for a server that accepts them (`JWT_SECRET` or
   * `JWT_JWKS_URL`). A function is asked before every request: return a cached token, renewed before it expires.
   */
  readonly token?: string | (() => string | PromiseLike<string>) | undefined
}

export type AikiClient = HttpApiClient.ForApi<typeof AikiApi>

/** The credentials a request carries: the key's header, and the token's (asked for afresh each time). */
const withCredentials = (credentials: Omit<ClientOptions, "baseUrl">) => {
  const { apiKey, token } = credentials
  const keyed = (request: HttpClientRequest.HttpClientRequest) =>
    apiKey === undefined ? request : HttpClientRequest.setHeader(request, "x-api-key", apiKey)
  if (token === undefined) return (request: HttpClientRequest.HttpClientRequest) => Effect.succeed(keyed(request))
  const current = typeof token === "string"
    ? Effect.succeed(token)
    : Effect.tryPromise(async () => await token()).pipe(Effect.orDie)
  return (request: HttpClientRequest.HttpClientRequest) =>
    Effect.map(current, (jwt) => HttpClientRequest.bearerToken(keyed(request), jwt))
}

/** Adds the API key and the bearer token (when given) to every request of the groups that need one. */
export const layerCredentials = (credentials: Omit<ClientOptions, "baseUrl">) => {
  const credentialed = withCredentials(credentials)
  return Layer.mergeAll(
    HttpApiMiddleware.layerClient(ClientAccess, ({ next, request }) => Effect.flatMap(credentialed(request), next)),
    HttpApiMiddleware.layerClient(AdminAccess, ({ next, request }) => Effect.flatMap(credentialed(request), next)),
    HttpApiMiddleware.layerClient(WorkerAccess, ({ next, request }) => Effect.flatMap(credentialed(request), next))
  )
}

/** Adds the API key to every request of the groups that need one. */
export const layerApiKey = (apiKey: string | undefined) => layerCredentials({ apiKey })

/** Builds a client; needs an `HttpClient` (e.g. `FetchHttpClient.layer`). */
export const make = (options: ClientOptions): Effect.Effect<AikiClient, never, HttpClient.HttpClient> =>
  HttpApiClient.make(AikiApi, { baseUrl: options.baseUrl }).pipe(Effect.provide(layerCredentials(options)))
