/**
 * The HTTP server: the API served from its one declaration, its OpenAPI document and interactive docs, the
 * dashboard, Prometheus metrics, CORS, request body limits, and TLS when configured. Closing the layer stops accepting connections and
 * lets requests in flight finish (bounded by `SHUTDOWN_TIMEOUT_MS`).
 */
import { AikiApi } from "@aiki/contract/Api"
import { NodeHttpServer } from "@effect/platform-node"
import { ByteSize, Effect, Layer, Option } from "effect"
import { HttpIncomingMessage, HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { HttpApiBuilder, HttpApiScalar } from "effect/http-api"
import { PrometheusMetrics } from "effect/observability"
import { readFileSync } from "node:fs"
import { createServer } from "node:http"
import { createServer as createTlsServer } from "node:https"
import { DatabaseReady } from "../DatabaseReady.ts"
import { ServerConfig } from "../ServerConfig.ts"
import * as Access from "./Access.ts"
import * as Dashboard from "./Dashboard.ts"
import * as Handlers from "./Handlers.ts"

/** The largest batch (a worker's writes or claims, a client's starts): room for two maximal values and the rest. */
export const maxBatchBytes = (maxPayloadBytes: number) => 2 * maxPayloadBytes + 1024 * 1024

/** Routes that read or write the database (health answers for itself; docs, metrics and the dashboard never need it). */
const needsDatabase = (url: string) => /^\/(workflows|workflow-runs|workers)(\/|\?|$)/.test(url)

const isBatch = (url: string) => /^\/(workers\/[^/]+\/(writes|claim)|workflow-runs\/start)(\?|$)/.test(url)

/** Every route, needing the stores and the server's configuration. */
export const routes = Layer.unwrap(Effect.gen(function*() {
  const config = yield* ServerConfig
  const api = HttpApiBuilder.layer(AikiApi, { openapiPath: "/openapi.json" }).pipe(
    Layer.provide(Handlers.layer),
    Layer.provide(Access.layer)
  )
  // A worker's batch carries many values, each at most MAX_PAYLOAD_BYTES (checked one by one when stored).
  const bodyLimit = HttpRouter.middleware(
    (httpEffect) =>
      Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
        Effect.provideService(
          httpEffect,
          HttpIncomingMessage.MaxBodySize,
          ByteSize.bytes(isBatch(request.url) ? maxBatchBytes(config.maxPayloadBytes) : config.maxPayloadBytes)
        )),
    { global: true }
  )
  // Until the database is reached and migrated, what needs it answers 503 (the SDK retries that, like a restart).
  const ready = yield* DatabaseReady
  const databaseGate = HttpRouter.middleware(
    (httpEffect) =>
      Effect.gen(function*() {
        if (yield* ready.isReady) return yield* httpEffect
        const request = yield* HttpServerRequest.HttpServerRequest
        if (!needsDatabase(request.url)) return yield* httpEffect
        return yield* HttpServerResponse.json(Handlers.starting, { status: 503 }).pipe(Effect.orDie)
      }),
    { global: true }
  )
  return Layer.mergeAll(
    api,
    HttpApiScalar.layer(AikiApi, { path: "/docs" }),
    Dashboard.layer,
    PrometheusMetrics.layerHttp({ path: "/metrics" }),
    bodyLimit,
    databaseGate,
    config.corsOrigins.length > 0
      ? HttpRouter.cors({ allowedOrigins: config.corsOrigins, allowedHeaders: ["Content-Type", "X-API-Key"] })
      : Layer.empty
  )
}))

/** Serves `routes` on `HOST:PORT`, over HTTPS when `TLS_ENABLED`. */
export const layer = Layer.unwrap(Effect.gen(function*() {
  const config = yield* ServerConfig
  const server = Option.match(config.tls, {
    onNone: () => () => createServer(),
    onSome: ({ certFile, keyFile }) => {
      const tls = { cert: readFileSync(certFile), key: readFileSync(keyFile) }
      return () => createTlsServer(tls)
    }
  })
  // `HttpServer` stays visible: it knows the address actually bound (port 0 in tests).
  return HttpRouter.serve(routes, { disableLogger: !config.logRequests }).pipe(
    Layer.provideMerge(NodeHttpServer.layer(server, {
      port: config.port,
      host: config.host,
      gracefulShutdownTimeout: `${config.shutdownTimeoutMs} millis`
    }))
  )
}))
