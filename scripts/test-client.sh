#!/usr/bin/env bash
# Checks the TypeScript client in clients/typescript:
#   - src/schema.ts is what scripts/gen-client.sh generates from openapi/openapi.json
#   - the package type-checks with `tsc --strict`
#   - its Node test (node --test) drives a sandbox gateway (the debug build of
#     `audience-gateway sandbox`) through the client
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

if ! command -v npm >/dev/null; then
  [[ "$(id -u)" -eq 0 ]] || { echo "test-client.sh: npm is required" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

cargo build --locked --bin audience-gateway
gateway="${CARGO_TARGET_DIR:-${repo_root}/target}/debug/audience-gateway"

generated=clients/typescript/src/schema.ts
committed="$(mktemp)"
trap 'rm -f "${committed}"' EXIT
cp "${generated}" "${committed}"
scripts/gen-client.sh
diff -u "${committed}" "${generated}" \
  || { echo "${generated} was stale: commit the file scripts/gen-client.sh wrote" >&2; exit 1; }

cd clients/typescript
npx tsc --strict --noEmit
AUDIENCE_GATEWAY_BIN="${gateway}" npm test
