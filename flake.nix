{
  description = "Aiki: durable workflow engine for TypeScript";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      devShells = forAllSystems (pkgs:
        let
          # Postgres and Redis for the tests, kept under ./.aiki (git-ignored).
          servicesUp = pkgs.writeShellScriptBin "aiki-services-up" ''
            set -euo pipefail
            mkdir -p .aiki
            if [ ! -d .aiki/pg ]; then
              ${pkgs.postgresql_16}/bin/initdb -D .aiki/pg -U postgres --auth=trust >/dev/null
            fi
            ${pkgs.postgresql_16}/bin/pg_ctl -D .aiki/pg -l .aiki/pg.log \
              -o "-h 127.0.0.1 -p 5432 -k $PWD/.aiki" start
            ${pkgs.redis}/bin/redis-server --daemonize yes --bind 127.0.0.1 --port 6379 \
              --save "" --appendonly no --dir "$PWD/.aiki" --logfile "$PWD/.aiki/redis.log"
            echo "Postgres on 127.0.0.1:5432 (user postgres), Redis on 127.0.0.1:6379"
          '';
          servicesDown = pkgs.writeShellScriptBin "aiki-services-down" ''
            ${pkgs.postgresql_16}/bin/pg_ctl -D .aiki/pg stop || true
            ${pkgs.redis}/bin/redis-cli -h 127.0.0.1 -p 6379 shutdown nosave || true
          '';
        in
        {
          default = pkgs.mkShell {
            # openssl: the Redis TLS tests make throwaway certificates; redis brings redis-cli for the cluster tests.
            packages = [ pkgs.nodejs_22 pkgs.pnpm pkgs.postgresql_16 pkgs.redis pkgs.openssl servicesUp servicesDown ];
            shellHook = ''
              echo "Aiki dev shell: node $(node --version), pnpm $(pnpm --version)"
              echo "  aiki-services-up    start Postgres and Redis for the tests (data in ./.aiki)"
              echo "  aiki-services-down  stop them"
              echo "  pnpm install && pnpm test"
            '';
          };
        });
    };
}
