# The Aiki server. Node 22 runs the TypeScript sources directly (type stripping); the only build step is the
# dashboard's (static files, built in a stage of its own), and the image holds the server's production dependencies
# only.
#
#   docker build -t aiki/server .
#   docker run -p 9090:9090 -e DATABASE_URL=postgres://… -e REDIS_URL=redis://… -e API_KEY=… aiki/server
#
# Migrations run when the server starts; `docker run … aiki/server node packages/server/src/migrate.ts` runs them
# alone.

FROM node:22-slim AS deps
WORKDIR /app
RUN npm install -g pnpm@12.21.0
# Manifests first, so dependency layers are reused while only sources change.
COPY package.json pnpm-lock.yaml pnpm-workspace.yaml ./
COPY packages/contract/package.json packages/contract/
COPY packages/server/package.json packages/server/
COPY packages/dashboard/package.json packages/dashboard/
RUN pnpm install --frozen-lockfile --prod --filter "@aiki/server..."

# The dashboard: built with its dev dependencies (Vite, Preact, Chart.js); only its output reaches the image.
FROM node:22-slim AS dashboard
WORKDIR /app
RUN npm install -g pnpm@12.21.0
COPY package.json pnpm-lock.yaml pnpm-workspace.yaml ./
COPY packages/contract/package.json packages/contract/
COPY packages/dashboard/package.json packages/dashboard/
COPY packages/sdk/package.json packages/sdk/
COPY packages/testing/package.json packages/testing/
RUN pnpm install --frozen-lockfile --filter "@aiki/dashboard..."
COPY tsconfig.base.json ./
COPY packages/contract/tsconfig.json packages/contract/
COPY packages/contract/src packages/contract/src
COPY packages/dashboard packages/dashboard
RUN node packages/dashboard/scripts/build.ts

FROM node:22-slim
ENV NODE_ENV=production PORT=9090 HOST=0.0.0.0 DASHBOARD_DIR=/app/packages/dashboard/dist/app
WORKDIR /app
COPY --from=deps --chown=node:node /app ./
COPY --chown=node:node packages/contract/src packages/contract/src
COPY --chown=node:node packages/server/src packages/server/src
COPY --from=dashboard --chown=node:node /app/packages/dashboard/dist/app packages/dashboard/dist/app
USER node
EXPOSE 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+(process.env.PORT||9090)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
CMD ["node", "packages/server/src/main.ts"]
