#!/usr/bin/env bash
# The project's test command: installs what the tests need (apt, pip, npm), then runs the
# Rust tests (unit + black-box, with real Redis deployments and a PostgreSQL server), the
# OpenAPI verification (linters, Schemathesis, a headless-Chromium Swagger UI test), the
# TypeScript client's checks (generated types current, tsc --strict, its Node test) and the
# deployment checks (hadolint, helm lint, kubernetes-validate, the Dockerfile's build
# commands outside Docker).
# Nothing is skipped silently: a tool that cannot be installed fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt)"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The shared-state tests start real Redis deployments: one server, TLS (certificates made
# with the openssl CLI), Sentinel (redis-sentinel) and a Cluster (redis-cli --cluster create).
apt_install redis-server redis-sentinel redis-tools openssl
for tool in redis-server redis-sentinel redis-cli openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
# The ledger tests start their own PostgreSQL servers from /usr/lib/postgresql/<v>/bin
# (as the postgres user when run as root); the package's cluster service is not used.
apt_install postgresql
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { echo "postgresql is required" >&2; exit 1; }

# The /metrics test parses the scrape with the Prometheus Python client's OpenMetrics parser.
test_venv=.tools/test-venv
if ! "$test_venv/bin/python3" -c 'import prometheus_client' >/dev/null 2>&1; then
  log "installing prometheus-client into $test_venv (pip)"
  python3 -m venv "$test_venv" || { apt_install python3-venv && python3 -m venv "$test_venv"; }
  "$test_venv/bin/pip" install --quiet --disable-pip-version-check "prometheus-client==0.26.0"
fi
export PATH="$PWD/$test_venv/bin:$PATH"

log "cargo test (unit and black-box tests)"
cargo test --workspace --locked --all-targets

log "OpenAPI verification"
scripts/verify-openapi.sh

log "TypeScript client"
scripts/test-client.sh

log "deployment checks"
scripts/check-deploy.sh --chef

log "all tests passed"
