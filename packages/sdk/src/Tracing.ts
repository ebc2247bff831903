/**
 * Traces of what the SDK does, exported to your OpenTelemetry collector: a client's `start` (whose trace the run
 * keeps, so it continues on whichever worker runs it), the worker's execution of each run, and a span per task
 * attempt under it. The worker's own protocol with the server (polls, heartbeats, batched writes) is not traced:
 * it is background chatter that would bury the runs' traces.
 *
 * The promise API takes these options as `client({ tracing })`; with the Effect API, provide `Tracing.layer` beside
 * `AikiClient.layer` (or any tracer layer of your own).
 *
 * @example
 * ```ts
 * const aiki = await client({ baseUrl, tracing: { endpoint: "http://otel-collector:4318", serviceName: "orders-worker" } })
 * ```
 */
import { version } from "@aiki/contract/Version"
import * as Layer from "effect/Layer"
import * as Tracer from "effect/Tracer"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import * as OtlpSerialization from "effect/observability/OtlpSerialization"
import * as OtlpTracer from "effect/observability/OtlpTracer"

export type TracingOptions =
  | {
    /** An OTLP/HTTP collector, e.g. `http://localhost:4318`; spans go to `<endpoint>/v1/traces`. */
    readonly endpoint: string
    /** The service name on exported spans. @default "aiki-sdk" */
    readonly serviceName?: string
    /** Headers sent to the collector (e.g. an authorization header). */
    readonly headers?: Readonly<Record<string, string>>
    /** How often spans are sent; they are flushed when the client closes as well. @default 5_000 */
    readonly exportIntervalMs?: number
  }
  | {
    /** An Effect tracer of your own (e.g. from `@effect/opentelemetry`, to join an OpenTelemetry SDK you run). */
    readonly tracer: Tracer.Tracer
  }

/** The tracer `options` describe, as a layer to provide beside the client. */
export const layer = (options: TracingOptions) =>
  "tracer" in options
    ? Layer.succeed(Tracer.Tracer, options.tracer)
    : OtlpTracer.layer({
      url: `${options.endpoint.replace(/\/$/, "")}/v1/traces`,
      resource: { serviceName: options.serviceName ?? "aiki-sdk", serviceVersion: version },
      ...(options.headers !== undefined ? { headers: options.headers } : {}),
      ...(options.exportIntervalMs !== undefined ? { exportInterval: `${options.exportIntervalMs} millis` } : {})
    }).pipe(Layer.provide(OtlpSerialization.layerJson), Layer.provide(FetchHttpClient.layer))
