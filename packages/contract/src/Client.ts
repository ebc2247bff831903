/**
 * The typed client of the Aiki API, derived from its declaration: every endpoint is a method, every declared error
 * comes back as its class. The SDK, the CLI and the tests all talk to the server through it.
 */
import { Effect, Layer } from "effect"
import { type HttpClient, HttpClientRequest } from "effect/http"
import { HttpApiClient, HttpApiMiddleware } from "effect/http-api"
import { AdminAccess, ClientAccess, WorkerAccess } from "./Access.ts"
import { AikiApi } from "./Api.ts"

export interface ClientOptions {
  /** The server's address, e.g. `http://localhost:9090`. */
  readonly baseUrl: string
  /** Sent as `X-API-Key`; leave it out when the server runs without authentication. */
  readonly apiKey?: string | undefined
}

export type AikiClient = HttpApiClient.ForApi<typeof AikiApi>

const withKey = (apiKey: string | undefined) => (request: HttpClientRequest.HttpClientRequest) =>
  apiKey === undefined ? request : HttpClientRequest.setHeader(request, "x-api-key", apiKey)

/** Adds the API key to every request of the groups that need one. */
export const layerApiKey = (apiKey: string | undefined) =>
  Layer.mergeAll(
    HttpApiMiddleware.layerClient(ClientAccess, ({ next, request }) => next(withKey(apiKey)(request))),
    HttpApiMiddleware.layerClient(AdminAccess, ({ next, request }) => next(withKey(apiKey)(request))),
    HttpApiMiddleware.layerClient(WorkerAccess, ({ next, request }) => next(withKey(apiKey)(request)))
  )

/** Builds a client; needs an `HttpClient` (e.g. `FetchHttpClient.layer`). */
export const make = (options: ClientOptions): Effect.Effect<AikiClient, never, HttpClient.HttpClient> =>
  HttpApiClient.make(AikiApi, { baseUrl: options.baseUrl }).pipe(Effect.provide(layerApiKey(options.apiKey)))
