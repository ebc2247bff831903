/**
 * OpenTelemetry traces, when `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector: every HTTP request and every store
 * method (`RunStore.start`, `RunTransitions.write`, …) is a span, exported over OTLP/HTTP. Requests that carry a
 * `traceparent` header (the SDK's client sends one when it is traced) join the caller's trace.
 */
import { version } from "@aiki/contract/Version"
import { Effect, Layer, Option } from "effect"
import { FetchHttpClient } from "effect/http"
import { OtlpSerialization, OtlpTracer } from "effect/observability"
import { ServerConfig } from "./ServerConfig.ts"

export const layer = Layer.unwrap(Effect.gen(function*() {
  const config = yield* ServerConfig
  return Option.match(config.otlpEndpoint, {
    onNone: () => Layer.empty,
    onSome: (endpoint) =>
      OtlpTracer.layer({
        url: `${endpoint.replace(/\/$/, "")}/v1/traces`,
        resource: { serviceName: config.serviceName, serviceVersion: version }
      }).pipe(Layer.provide(OtlpSerialization.layerJson), Layer.provide(FetchHttpClient.layer))
  })
}))
