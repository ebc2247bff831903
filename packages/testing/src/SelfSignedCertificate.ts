/**
 * A throwaway TLS certificate for 127.0.0.1 and localhost, made with `openssl` in a temporary directory that is
 * removed with the test's scope. Self-signed, so the certificate is its own CA: trust `certFile` as the CA.
 */
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

export interface SelfSignedCertificate {
  /** PEM certificate; also the CA file a client trusts. */
  readonly certFile: string
  /** PEM private key. */
  readonly keyFile: string
}

export const make = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = mkdtempSync(join(tmpdir(), "aiki-cert-"))
    const certFile = join(dir, "cert.pem")
    const keyFile = join(dir, "key.pem")
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
      "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
      "-keyout", keyFile, "-out", certFile
    ], { stdio: "ignore" })
    return { dir, certFile, keyFile }
  }),
  ({ dir }) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
).pipe(Effect.map(({ certFile, keyFile }): SelfSignedCertificate => ({ certFile, keyFile })))
