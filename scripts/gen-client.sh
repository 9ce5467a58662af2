#!/usr/bin/env bash
# Generates the TypeScript client's types, clients/typescript/src/schema.ts, from the
# committed OpenAPI document (openapi/openapi.json) with the openapi-typescript version
# pinned in clients/typescript/package-lock.json. The same document always gives the same
# file: run this after `cargo run -q -- openapi --output openapi/openapi.json` and commit
# both. scripts/test-client.sh fails when the committed file is not what this generates.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../clients/typescript"

command -v npm >/dev/null || { echo "gen-client.sh: npm is required (apt-get install nodejs npm)" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error
npm run --silent generate
