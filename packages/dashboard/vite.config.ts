/**
 * The dashboard's build: one page and its content-hashed assets in `dist/app`, which the Aiki server serves at
 * `/`. `pnpm --filter @aiki/dashboard dev` serves the sources with the API proxied to a server on :9090.
 */
import { defineConfig } from "vite"

const api = ["/workflows", "/workflow-runs", "/workers", "/auth", "/health", "/docs", "/openapi.json"]

export default defineConfig({
  root: import.meta.dirname,
  base: "/",
  build: {
    outDir: "dist/app",
    emptyOutDir: true,
    target: "es2022",
    // The page's script must be a file: the server's Content-Security-Policy allows no inline script.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    reportCompressedSize: true
  },
  server: {
    proxy: Object.fromEntries(api.map((path) => [path, { target: "http://localhost:9090", changeOrigin: false }]))
  }
})
