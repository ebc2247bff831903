/**
 * The deployment the chaos acts on: a Postgres and a Redis of its own (private ports, so they can be killed), one
 * or two server replicas on them and worker processes spread across the replicas. It crashes what it is asked to
 * (always SIGKILL), brings it back, replaces killed workers, and logs every kill with when the thing answered
 * again, and every process that died without being killed (those are findings, never hidden).
 *
 * Each process's output goes to `<directory>/logs/<name>.log` when it exits.
 */
import { freePort } from "@aiki/testing/freePort"
import { type Running, spawnNode } from "@aiki/testing/NodeProcess"
import * as PostgresProcess from "@aiki/testing/PostgresProcess"
import * as RedisProcess from "@aiki/testing/RedisProcess"
import { Clock, Effect, Random, Schedule, Scope } from "effect"
import { appendFileSync, mkdirSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

export type Subscriber = "redis_streams" | "http"

export interface DeploymentOptions {
  /** Server processes on the same database; workers are spread across them. */
  readonly replicas: number
  readonly workers: number
  /** `maxConcurrentWorkflowRuns` of each worker. */
  readonly workerConcurrency: number
  /** Redis Streams (the server publishes to Redis) or HTTP long-polling (no Redis at all). */
  readonly subscriber: Subscriber
  /** The workers' heartbeat; their leases last three of these. */
  readonly heartbeatMs: number
  /** Stream entries idle this long are taken over from a dead worker (`claimMinIdleTimeMs`). */
  readonly claimMinIdleMs: number
  readonly reaperIntervalMs: number
  readonly republishAfterMs: number
  /** How long each task takes, so that kills find tasks in flight. */
  readonly taskMs: number
  /** How long a crashed server, Redis or Postgres stays down before it is started again. */
  readonly outageMs: number
  /** Where the side-effect log and the processes' logs go. */
  readonly directory: string
}

export type KillKind = "worker" | "server" | "redis" | "postgres"

/** One crash the chaos caused. */
export interface Kill {
  readonly kind: KillKind
  /** The worker id, `server-<replica>`, `redis` or `postgres`. */
  readonly target: string
  /** When SIGKILL was sent (ms since the epoch). */
  readonly at: number
  /**
   * When it answered again: for Postgres, when every replica's database health check passed again; for a worker,
   * `at` (it is replaced by a new worker at once).
   */
  readonly back: number
}

/** A process that died without being killed. */
export interface UnplannedExit {
  readonly process: string
  readonly at: number
  readonly code: number | null
  readonly signal: string | null
}

export interface Deployment {
  readonly baseUrls: ReadonlyArray<string>
  readonly databaseUrl: string
  readonly sideEffectsFile: string
  /** The replica a worker talks to. */
  readonly replicaOf: (workerId: string) => number | undefined
  /**
   * SIGKILLs a random worker among those receiving runs (waiting for one when all are still starting) and starts
   * a replacement on the same replica.
   */
  readonly killWorker: Effect.Effect<Kill>
  readonly crashServer: (replica: number) => Effect.Effect<Kill>
  /** Undefined with the HTTP subscriber (no Redis). */
  readonly restartRedis: Effect.Effect<Kill> | undefined
  readonly crashPostgres: Effect.Effect<Kill>
  readonly kills: () => ReadonlyArray<Kill>
  readonly unplannedExits: () => ReadonlyArray<UnplannedExit>
}

const serverMain = fileURLToPath(import.meta.resolve("@aiki/server/main"))
const workerMain = fileURLToPath(new URL("./worker.ts", import.meta.url))

/** Waits until `check` holds, checking every 100 ms, for up to `timeoutMs`; false if it never did. */
const until = (check: () => Promise<boolean>, timeoutMs: number) =>
  Effect.promise(async () => {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      if (await check().catch(() => false)) return true
      await new Promise((r) => setTimeout(r, 100))
    }
    return false
  })

/** Whether `url` answers 200 within 5 s (a server under load answers its health checks late). */
const answers = (url: string) => fetch(url, { signal: AbortSignal.timeout(5_000) }).then((response) => response.ok)

/** Starts everything for the current scope. */
export const make = Effect.fnUntraced(function*(options: DeploymentOptions) {
  const scope = yield* Scope.Scope
  const logs = join(options.directory, "logs")
  mkdirSync(logs, { recursive: true })
  const sideEffectsFile = join(options.directory, "side-effects.log")

  const kills: Array<Kill> = []
  const unplanned: Array<UnplannedExit> = []
  /** Processes being killed on purpose (their exit is no finding). */
  const planned = new Set<Running>()
  let closing = false
  const now = Clock.currentTimeMillis

  const postgres = yield* PostgresProcess.make
  const redis = options.subscriber === "redis_streams" ? yield* RedisProcess.make : undefined
  const ports = yield* Effect.forEach(Array.from({ length: options.replicas }), () => Effect.promise(freePort))
  const baseUrls = ports.map((port) => `http://127.0.0.1:${port}`)

  const isDown = (running: Running | undefined) =>
    running === undefined || running.child.exitCode !== null || running.child.signalCode !== null

  /** Spawns `script` in the deployment's scope; its output is kept in its log, and an exit nobody caused is recorded. */
  const launch = (name: string, script: string, env: Record<string, string>, onUnplannedExit: Effect.Effect<void>) =>
    Effect.gen(function*() {
      const running = yield* spawnNode(script, env).pipe(Scope.provide(scope))
      const logged = running.exited.then((exit) =>
        appendFileSync(join(logs, `${name}.log`), `${exit.stdout}${exit.stderr}--- exited (${exit.code ?? exit.signal})\n`)
      )
      // Closing the scope kills it and waits for its log (the watcher below is interrupted first).
      yield* Scope.addFinalizer(scope, Effect.promise(() => {
        if (!isDown(running)) running.child.kill("SIGKILL")
        return logged
      }))
      yield* Effect.promise(() => running.exited).pipe(
        Effect.flatMap((exit) =>
          Effect.gen(function*() {
            if (planned.delete(running) || closing) return
            unplanned.push({ process: name, at: yield* now, code: exit.code, signal: exit.signal })
            yield* onUnplannedExit
          })
        ),
        Effect.forkIn(scope)
      )
      return running
    })

  // Servers. `held` replicas are being crashed or started by someone; the keeper leaves them alone.
  const servers = baseUrls.map(() => ({ running: undefined as Running | undefined, held: false }))
  const serverEnv = (replica: number): Record<string, string> => ({
    DATABASE_URL: postgres.url,
    ...(redis !== undefined ? { REDIS_URL: redis.url, REDIS_PREFIX: "aiki-chaos" } : {}),
    PORT: String(ports[replica]),
    HOST: "127.0.0.1",
    REAPER_INTERVAL_MS: String(options.reaperIntervalMs),
    REPUBLISH_AFTER_MS: String(options.republishAfterMs),
    // The chaos kills a random worker every ~2 s, so a run can lose three holders in a row before any of them made
    // progress without being the cause (seen on a slow machine: runs failed as poisoned with the default of 3).
    // Poison detection has its own test (`Timeouts.test.ts`); here it would only turn bad luck into failed runs.
    POISON_AFTER_LAPSES: "20",
    // Private processes on 127.0.0.1: no keys, and the server must be told that is deliberate.
    AUTH: "off"
  })
  /** SIGKILLs `running` on purpose and waits until it is gone. */
  const crash = (running: Running | undefined) =>
    Effect.promise(async () => {
      if (running === undefined || isDown(running)) return
      planned.add(running)
      running.child.kill("SIGKILL")
      await running.exited
    })
  /**
   * Starts replica `replica` and waits until it is healthy; false if it exited first (recorded as an unplanned
   * exit) or never became healthy (then it is killed, so the next try gets its port).
   */
  const startServer = (replica: number) =>
    Effect.gen(function*() {
      const running = yield* launch(`server-${replica}`, serverMain, serverEnv(replica), Effect.void)
      servers[replica]!.running = running
      // Up once `/health` says so (a server listens, answering 503, until its database is ready). A minute: on a
      // busy 2-core machine a server took 15 s to start.
      const up = () => answers(`${baseUrls[replica]}/health`)
      yield* until(async () => isDown(running) || (await up()), 60_000)
      if (isDown(running)) return false
      if (yield* Effect.promise(() => up().catch(() => false))) return true
      yield* crash(running)
      return false
    })
  /** Starts replica `replica` again and again until it is healthy (it exits at start while Postgres is down). */
  const bringBack = (replica: number) =>
    startServer(replica).pipe(
      Effect.repeat({ until: (healthy) => healthy, schedule: Schedule.spaced("500 millis") }),
      Effect.asVoid
    )
  // Workers, spread across the replicas; a replacement takes the replica of the worker it replaces.
  /** Whether a worker has registered and subscribed (it says so once). */
  const receiving = (running: Running) => running.output().includes("receiving runs")
  const workers = new Map<string, { readonly running: Running; readonly replica: number }>()
  const replicaOf = new Map<string, number>()
  let spawned = 0
  const startWorker = (replica: number): Effect.Effect<void> =>
    Effect.gen(function*() {
      const id = `w${++spawned}`
      replicaOf.set(id, replica)
      const running = yield* launch(id, workerMain, {
        AIKI_URL: baseUrls[replica]!,
        ...(redis !== undefined ? { REDIS_URL: redis.url } : {}),
        WORKER_ID: id,
        MAX_RUNS: String(options.workerConcurrency),
        HEARTBEAT_MS: String(options.heartbeatMs),
        CLAIM_MIN_IDLE_MS: String(options.claimMinIdleMs),
        SIDE_EFFECTS_FILE: sideEffectsFile,
        TASK_MS: String(options.taskMs)
      }, Effect.suspend(() => {
        workers.delete(id)
        return startWorker(replica)
      }))
      workers.set(id, { running, replica })
    })
  // Servers and workers start side by side (workers retry until their server answers): Node takes seconds to
  // start on a busy machine. The chaos starts once every worker receives runs.
  yield* Effect.all([
    Effect.forEach(servers, (_, replica) => bringBack(replica), { concurrency: "unbounded", discard: true }),
    Effect.forEach(Array.from({ length: options.workers }), (_, i) => startWorker(i % options.replicas), { discard: true })
  ], { concurrency: "unbounded" })
  yield* until(async () => [...workers.values()].every((worker) => receiving(worker.running)), 120_000)

  // A server that died on its own is started again (after it was recorded).
  yield* Effect.gen(function*() {
    for (let replica = 0; replica < servers.length; replica++) {
      const server = servers[replica]!
      if (server.held || !isDown(server.running)) continue
      server.held = true
      yield* bringBack(replica).pipe(Effect.ensuring(Effect.sync(() => (server.held = false))))
    }
  }).pipe(Effect.repeat(Schedule.spaced("500 millis")), Effect.forkIn(scope))

  const record = (kill: Kill) => Effect.sync(() => kills.push(kill))

  const killWorker = Effect.gen(function*() {
    // A worker still starting holds nothing yet: killing it would test nothing, so wait for one that receives.
    let ready = [...workers.keys()].filter((id) => receiving(workers.get(id)!.running))
    while (ready.length === 0) {
      yield* Effect.sleep("100 millis")
      ready = [...workers.keys()].filter((id) => receiving(workers.get(id)!.running))
    }
    const id = yield* Random.choice(ready).pipe(Effect.orDie)
    const worker = workers.get(id)!
    const at = yield* now
    workers.delete(id)
    yield* crash(worker.running)
    yield* startWorker(worker.replica)
    const kill: Kill = { kind: "worker", target: id, at, back: at }
    yield* record(kill)
    return kill
  })

  /** Waits until the replica is not being restarted by someone else, then holds it for `effect`. */
  const holding = <A>(replica: number, effect: Effect.Effect<A>) =>
    Effect.gen(function*() {
      const server = servers[replica]!
      while (server.held) yield* Effect.sleep("50 millis")
      server.held = true
      return yield* effect.pipe(Effect.ensuring(Effect.sync(() => (server.held = false))))
    })

  const crashServer = (replica: number) =>
    holding(replica, Effect.gen(function*() {
      const at = yield* now
      yield* crash(servers[replica]!.running)
      yield* Effect.sleep(options.outageMs)
      yield* bringBack(replica)
      const kill: Kill = { kind: "server", target: `server-${replica}`, at, back: yield* now }
      yield* record(kill)
      return kill
    }))

  const restartRedis = redis === undefined ? undefined : Effect.gen(function*() {
    const at = yield* now
    yield* redis.stop
    yield* Effect.sleep(options.outageMs)
    yield* redis.start
    const kill: Kill = { kind: "redis", target: "redis", at, back: yield* now }
    yield* record(kill)
    return kill
  })

  const crashPostgres = Effect.gen(function*() {
    const at = yield* now
    yield* postgres.stop
    yield* Effect.sleep(options.outageMs)
    yield* postgres.start
    // Back means: the servers work again, not merely that Postgres accepts connections.
    yield* Effect.forEach(baseUrls, (url) => until(() => answers(`${url}/health/database`), 60_000), { discard: true })
    const kill: Kill = { kind: "postgres", target: "postgres", at, back: yield* now }
    yield* record(kill)
    return kill
  })

  yield* Effect.addFinalizer(() => Effect.sync(() => (closing = true)))

  return {
    baseUrls,
    databaseUrl: postgres.url,
    sideEffectsFile,
    replicaOf: (workerId) => replicaOf.get(workerId),
    killWorker,
    crashServer,
    restartRedis,
    crashPostgres,
    kills: () => kills,
    unplannedExits: () => unplanned
  } satisfies Deployment
})
