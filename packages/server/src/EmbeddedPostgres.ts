/**
 * Postgres in-process, for the embedded dev mode: PGlite (real Postgres compiled to WebAssembly) behind the same
 * `PgClient` the server uses in production, so the same migrations and the same SQL run on it.
 *
 * PGlite is one backend session. The client talks to it over an in-memory duplex stream that speaks the Postgres
 * wire protocol, through ONE connection (a second would interleave transactions in the single session). Run
 * change announcements (`pg_notify('aiki_runs', …)`, see `RunNotifications`) come back in that same session: they
 * are taken out of the byte stream here and handed to `RunNotifications` in-process, never to the client.
 */
import { PGlite } from "@electric-sql/pglite"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, PubSub, Schema } from "effect"
import { mkdirSync } from "node:fs"
import { type Duplex, duplexPair } from "node:stream"
import { channel, RunChange, RunNotifications } from "./RunNotifications.ts"

export interface EmbeddedPostgresOptions {
  /** Where the data lives (survives restarts); `undefined` keeps it in memory. */
  readonly dataDir: string | undefined
}

const SSL_REQUEST = 80877103
const decodeChange = Schema.decodeUnknownOption(Schema.fromJsonString(RunChange))

/** Splits a byte stream into complete Postgres protocol messages (the first may be a startup packet). */
class MessageReader {
  private buffer = Buffer.alloc(0)
  private startup: boolean
  constructor(startup: boolean) {
    this.startup = startup
  }
  push(chunk: Buffer): Array<Buffer> {
    this.buffer = Buffer.concat([this.buffer, chunk])
    const messages: Array<Buffer> = []
    while (true) {
      if (this.startup) {
        // Startup packets have no type byte: length, then a protocol code.
        if (this.buffer.length < 8) break
        const length = this.buffer.readInt32BE(0)
        if (this.buffer.length < length) break
        messages.push(this.buffer.subarray(0, length))
        if (this.buffer.readInt32BE(4) !== SSL_REQUEST) this.startup = false
        this.buffer = this.buffer.subarray(length)
        continue
      }
      if (this.buffer.length < 5) break
      const length = 1 + this.buffer.readInt32BE(1)
      if (this.buffer.length < length) break
      messages.push(this.buffer.subarray(0, length))
      this.buffer = this.buffer.subarray(length)
    }
    return messages
  }
}

/** A wire-protocol connection to `db`, announcements in `aiki_runs` diverted to `onChange`. */
const connect = (db: PGlite, onChange: (change: RunChange) => void): Duplex => {
  const [client, server] = duplexPair()
  const requests = new MessageReader(true)
  const responses = new MessageReader(false)
  let queue = Promise.resolve()
  const forward = (bytes: Uint8Array) => {
    for (const message of responses.push(Buffer.from(bytes))) {
      if (message[0] === 0x41 /* 'A': NotificationResponse */) {
        const body = message.subarray(9)
        const end = body.indexOf(0)
        if (body.subarray(0, end).toString() === channel) {
          const payload = body.subarray(end + 1, body.indexOf(0, end + 1)).toString()
          const change = decodeChange(payload)
          if (change._tag === "Some") onChange(change.value)
        }
        continue
      }
      server.write(message)
    }
  }
  server.on("data", (chunk: Buffer) => {
    for (const message of requests.push(chunk)) {
      queue = queue.then(async () => {
        if (message.length === 8 && message.readInt32BE(4) === SSL_REQUEST) {
          server.write(Buffer.from("N"))
          return
        }
        await db.runExclusive(() => db.execProtocolRawStream(new Uint8Array(message), { onRawData: forward }))
      }).catch((error) => {
        server.destroy(error instanceof Error ? error : new Error(String(error)))
      })
    }
  })
  return client
}

/**
 * `PgClient`/`SqlClient` over PGlite and the `RunNotifications` fed from it. The data directory is created if
 * needed; closing the layer closes the database (flushing it to disk).
 */
export const layer = (options: EmbeddedPostgresOptions) =>
  Layer.unwrap(Effect.gen(function*() {
    const dataDir = options.dataDir
    if (dataDir !== undefined) mkdirSync(dataDir, { recursive: true })
    const db = yield* Effect.acquireRelease(
      Effect.promise(() => PGlite.create(dataDir ?? "memory://")),
      (db) => Effect.promise(() => db.close())
    )
    // The session listens, so its own announcements come back to it (and through `connect`'s tap).
    yield* Effect.promise(() => db.exec(`LISTEN ${channel}`))
    // Planned once per prepared statement, as the production pool's sessions are (see `Database.layerPool`); PGlite
    // ignores the settings of a startup packet, so the one session is told here.
    yield* Effect.promise(() => db.exec("SET plan_cache_mode = force_generic_plan"))
    const changes = yield* Effect.acquireRelease(PubSub.sliding<RunChange>(16_384), PubSub.shutdown)
    const publish = (change: RunChange) => PubSub.publishUnsafe(changes, change)
    const notifications = Layer.succeed(RunNotifications, RunNotifications.of({ subscribe: PubSub.subscribe(changes) }))
    const client = PgClient.layer({
      stream: () => connect(db, publish),
      maxConnections: 1,
      username: "postgres",
      database: "postgres",
      applicationName: "aiki-server"
    })
    return Layer.merge(client, notifications)
  })).pipe(Layer.orDie)
