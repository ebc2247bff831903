/**
 * An OpenTelemetry collector for tests: an OTLP/HTTP endpoint (JSON encoding) on a free port that keeps every span
 * it is sent, with its service, trace, parent and attributes, for the current scope.
 */
import { Effect } from "effect"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"

export interface ExportedSpan {
  /** The `service.name` of the resource that exported it. */
  readonly service: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string | undefined
  readonly name: string
  readonly attributes: Record<string, unknown>
}

interface OtlpValue {
  readonly stringValue?: string
  readonly intValue?: string | number
  readonly boolValue?: boolean
  readonly doubleValue?: number
}

interface OtlpAttribute {
  readonly key: string
  readonly value: OtlpValue
}

interface OtlpExport {
  readonly resourceSpans: ReadonlyArray<{
    readonly resource: { readonly attributes: ReadonlyArray<OtlpAttribute> }
    readonly scopeSpans: ReadonlyArray<{
      readonly spans: ReadonlyArray<{
        readonly traceId: string
        readonly spanId: string
        readonly parentSpanId?: string
        readonly name: string
        readonly attributes: ReadonlyArray<OtlpAttribute>
      }>
    }>
  }>
}

const valueOf = (value: OtlpValue) =>
  value.stringValue ?? (value.intValue !== undefined ? Number(value.intValue) : value.boolValue ?? value.doubleValue)

const spansOf = (body: OtlpExport): Array<ExportedSpan> =>
  body.resourceSpans.flatMap((resource) => {
    const service = String(valueOf(resource.resource.attributes.find((a) => a.key === "service.name")?.value ?? {}))
    return resource.scopeSpans.flatMap((scope) =>
      scope.spans.map((span) => ({
        service,
        traceId: span.traceId,
        spanId: span.spanId,
        parentSpanId: span.parentSpanId === undefined || span.parentSpanId === "" ? undefined : span.parentSpanId,
        name: span.name,
        attributes: Object.fromEntries(span.attributes.map((a) => [a.key, valueOf(a.value)]))
      }))
    )
  })

/** Starts the collector; `endpoint` is what `OTEL_EXPORTER_OTLP_ENDPOINT` (or the SDK's `tracing.endpoint`) takes. */
export const make = Effect.gen(function*() {
  const spans: Array<ExportedSpan> = []
  const server = yield* Effect.acquireRelease(
    Effect.promise(() =>
      new Promise<Server>((resolve) => {
        const server = createServer((req, res) => {
          let body = ""
          req.on("data", (chunk) => (body += chunk))
          req.on("end", () => {
            if (req.url === "/v1/traces") spans.push(...spansOf(JSON.parse(body) as OtlpExport))
            res.writeHead(200, { "content-type": "application/json" }).end("{}")
          })
        })
        server.listen(0, "127.0.0.1", () => resolve(server))
      })
    ),
    (server) => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
  )
  return { endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans }
})
