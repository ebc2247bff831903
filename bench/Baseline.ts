/**
 * The yardstick for `pnpm bench`: the same burst as Aiki's, done as plainly as Postgres allows — five autocommitted
 * statements per run with `pg` (insert the run, its three tasks, mark it completed), one connection per concurrent
 * client, in a database of its own on the same Postgres. Every commit waits for its fsync as Aiki's do, so the
 * ratio Aiki / baseline compares across machines that are faster, slower or busier than this one.
 */
import pg from "pg"
import { randomUUID } from "node:crypto"

const schema = [
  `CREATE TABLE runs (id uuid PRIMARY KEY, state text NOT NULL, payload jsonb NOT NULL, result jsonb,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now())`,
  `CREATE TABLE tasks (run_id uuid NOT NULL REFERENCES runs (id), sequence int NOT NULL, state text NOT NULL,
    payload jsonb NOT NULL, result jsonb, PRIMARY KEY (run_id, sequence))`
]

const connect = async (url: string) => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  return client
}

/** Runs `runs` runs, `concurrency` at a time, against the (empty) database at `url`; returns runs per second. */
export const burst = async (url: string, runs: number, concurrency: number): Promise<number> => {
  const setup = await connect(url)
  for (const statement of schema) await setup.query(statement)
  await setup.end()
  const clients = await Promise.all(Array.from({ length: concurrency }, () => connect(url)))
  let next = 0
  const started = performance.now()
  await Promise.all(clients.map(async (client) => {
    while (next < runs) {
      const n = next++
      const id = randomUUID()
      await client.query("INSERT INTO runs (id, state, payload) VALUES ($1, 'running', $2)", [id, JSON.stringify(n)])
      for (let sequence = 0; sequence < 3; sequence++) {
        await client.query(
          "INSERT INTO tasks (run_id, sequence, state, payload, result) VALUES ($1, $2, 'completed', $3, $3)",
          [id, sequence, JSON.stringify(n + sequence)]
        )
      }
      await client.query("UPDATE runs SET state = 'completed', result = $2, updated_at = now() WHERE id = $1", [
        id,
        JSON.stringify(n + 2)
      ])
    }
  }))
  const seconds = (performance.now() - started) / 1000
  await Promise.all(clients.map((client) => client.end()))
  return runs / seconds
}
