/**
 * `@aiki/sdk/client`: the client as the seeds' Core Concepts import it. `createClient` is `@aiki/sdk`'s `client`.
 *
 * @example
 * ```ts
 * import { createClient } from "@aiki/sdk/client"
 *
 * const client = await createClient({ url: "localhost:9090" })
 * ```
 */
export { client, type Client, type ClientConfig, createClient, type RedisOptions } from "../index.ts"
