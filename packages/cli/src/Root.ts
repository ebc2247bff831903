/**
 * The `aiki` root command and the flags every subcommand shares: where the server is, the key or token, the output
 * form.
 */
import * as Client from "@aiki/contract/Client"
import { Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { FetchHttpClient } from "effect/http"
import * as Output from "./Output.ts"

export const aiki = Command.make("aiki").pipe(
  Command.withSharedFlags({
    url: Flag.String("url").pipe(
      Flag.withDescription("The Aiki server (default: $AIKI_URL, else http://localhost:9090)"),
      Flag.optional
    ),
    apiKey: Flag.String("api-key").pipe(Flag.withDescription("X-API-Key (default: $AIKI_API_KEY)"), Flag.optional),
    token: Flag.String("token").pipe(
      Flag.withDescription("A JWT sent as Authorization: Bearer (default: $AIKI_TOKEN)"),
      Flag.optional
    ),
    json: Flag.Boolean("json").pipe(Flag.withDescription("Print one JSON document"), Flag.withDefault(false))
  }),
  Command.withDescription("Aiki, durable workflows for TypeScript: run the server, follow and manage runs")
)

/** The shared flags, resolved with their environment fallbacks. */
export const settings = Effect.gen(function*() {
  const root = yield* aiki
  const url = Option.getOrElse(root.url, () => process.env["AIKI_URL"] ?? "http://localhost:9090")
  const apiKey = Option.getOrUndefined(Option.orElse(root.apiKey, () => Option.fromNullishOr(process.env["AIKI_API_KEY"])))
  const token = Option.getOrUndefined(Option.orElse(root.token, () => Option.fromNullishOr(process.env["AIKI_TOKEN"])))
  return { url, apiKey, token, json: root.json }
})

/** The typed API client for the shared flags. */
export const client = Effect.gen(function*() {
  const { apiKey, token, url } = yield* settings
  return yield* Client.make({ baseUrl: url, apiKey, token }).pipe(Effect.provide(FetchHttpClient.layer))
})

/** Runs `body` with the client, turning any failure into one line and exit code 1. */
export const withClient = <A, E, R>(body: (api: Effect.Success<typeof client>, json: boolean) => Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const { json, url } = yield* settings
    yield* Output.guard(url, Effect.flatMap(client, (api) => body(api, json)))
  })
