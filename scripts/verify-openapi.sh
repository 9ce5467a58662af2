#!/usr/bin/env bash
# Verifies the OpenAPI document and the running gateway against it:
#   - openapi/openapi.json is what `audience-gateway openapi` prints (no drift)
#   - openapi-spec-validator: a valid OpenAPI 3.1 document
#   - Redocly CLI lint, recommended ruleset (redocly.yaml): no error, no warning
#   - Spectral lint, spectral:oas (.spectral.yaml): no error, no warning
#   - against `audience-gateway sandbox` (simulated upstream + gateway, on a free port):
#     - Swagger UI in headless Chromium (tests/browser/swagger.mjs): Authorize, "Try it out"
#       on GET /v1/audiences/{id}, authorization persisted across a reload
#     - Schemathesis, every check, positive and negative data (schemathesis.toml): no
#       failure, so every response is documented and no input gives a 5xx
# Rule exceptions live, each with its reason, in redocly.yaml, .spectral.yaml and
# schemathesis.toml.
#
# Tools are installed when missing, at pinned versions, into .tools/ (git ignores it):
# pip packages into .tools/openapi-venv, npm packages into .tools/node; Debian's chromium
# with apt when /usr/bin/chromium is missing. No tool downloads a browser of its own.
# Logs, reports and a screenshot go to target/openapi-verify/.
# Environment: SCHEMATHESIS_SEED (default 1; "random" for a new one each run),
# SCHEMATHESIS_MAX_EXAMPLES (default 100 per operation).
# Ends with "N passed, N failed"; exits 1 when any check failed.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${repo_root}"

# Versions the checks were validated with; bump on purpose, then re-run this script.
py_packages=("schemathesis==4.32.5" "openapi-spec-validator==0.9.0")
npm_packages=("@redocly/cli@2.77.0" "@stoplight/spectral-cli@6.16.3" "playwright-core@1.65.1")

out="${repo_root}/target/openapi-verify"
venv="${repo_root}/.tools/openapi-venv"
node_tools="${repo_root}/.tools/node"
chromium=/usr/bin/chromium
mkdir -p "${out}"

log() { printf '\n== %s\n' "$*"; }

as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  log "installing $* (apt)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# ---------------------------------------------------------------- tools
# A stamp names the pinned set a tool folder was built with; a different pin reinstalls.
install_python_tools() {
  local stamp="${venv}/.pinned" want="${py_packages[*]}"
  [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]] && return 0
  log "installing ${want} into .tools/openapi-venv"
  rm -rf "${venv}"
  if ! python3 -m venv "${venv}" 2>/dev/null; then
    apt_install python3-venv
    python3 -m venv "${venv}"
  fi
  "${venv}/bin/pip" install --quiet --disable-pip-version-check "${py_packages[@]}"
  printf '%s' "${want}" >"${stamp}"
}

install_node_tools() {
  local stamp="${node_tools}/.pinned" want="${npm_packages[*]}"
  [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" ]] && return 0
  command -v npm >/dev/null || apt_install nodejs npm
  log "installing ${want} into .tools/node"
  rm -rf "${node_tools}"
  mkdir -p "${node_tools}"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "${node_tools}" --no-audit \
    --no-fund --loglevel=error "${npm_packages[@]}" >/dev/null
  printf '%s' "${want}" >"${stamp}"
}

install_python_tools
install_node_tools
[[ -x "${chromium}" ]] || apt_install chromium
for tool in "${venv}/bin/schemathesis" "${venv}/bin/openapi-spec-validator" \
  "${node_tools}/node_modules/.bin/redocly" "${node_tools}/node_modules/.bin/spectral" "${chromium}"; do
  [[ -x "${tool}" ]] || { echo "verify-openapi.sh: ${tool} is missing after install" >&2; exit 1; }
done
redocly="${node_tools}/node_modules/.bin/redocly"
spectral="${node_tools}/node_modules/.bin/spectral"
# No update check and no telemetry: nothing but the registries is reachable from CI.
export REDOCLY_SUPPRESS_UPDATE_NOTICE=true REDOCLY_TELEMETRY=off
echo "tools: $("${venv}/bin/schemathesis" --version); openapi-spec-validator $("${venv}/bin/python" -c 'import importlib.metadata as m; print(m.version("openapi-spec-validator"))');" \
  "redocly $("${redocly}" --version 2>/dev/null | tail -n1); spectral $("${spectral}" --version);" \
  "playwright-core $(node -p "require('${node_tools}/node_modules/playwright-core/package.json').version"); $("${chromium}" --version 2>/dev/null)"

# ---------------------------------------------------------------- build
log "cargo build --bin audience-gateway"
cargo build --locked --bin audience-gateway
gateway="${CARGO_TARGET_DIR:-${repo_root}/target}/debug/audience-gateway"

passed=0
failed=0
failures=()
last_log=""
last_ok=false
# check NAME CMD...: runs CMD into target/openapi-verify/NAME.log; shows the log on failure.
check() {
  local name="$1"; shift
  last_log="${out}/${name// /-}.log"
  if "$@" >"${last_log}" 2>&1; then
    passed=$((passed + 1)); last_ok=true; echo "PASS ${name}"
  else
    failed=$((failed + 1)); last_ok=false; failures+=("${name}")
    echo "FAIL ${name} (${last_log#"${repo_root}"/})"
    sed 's/^/    /' "${last_log}"
  fi
}

# ---------------------------------------------------------------- the document
spec_is_current() {
  diff -u openapi/openapi.json <("${gateway}" openapi) \
    || { echo "openapi/openapi.json is stale: cargo run -q -- openapi --output openapi/openapi.json"; return 1; }
}

# Fails on any error or warning; the exceptions are in redocly.yaml.
redocly_lint() {
  "${redocly}" lint --format=stylish || true
  "${redocly}" lint --format=json 2>/dev/null | python3 -c '
import json, sys
totals = json.load(sys.stdin)["totals"]
print(f"redocly: {totals}")
sys.exit(1 if totals["errors"] or totals["warnings"] else 0)'
}

log "the document"
check "openapi.json is generated" spec_is_current
check "openapi-spec-validator" "${venv}/bin/openapi-spec-validator" openapi/openapi.json
check "redocly lint" redocly_lint
check "spectral lint" "${spectral}" lint --fail-severity=warn --ruleset=.spectral.yaml openapi/openapi.json

# ---------------------------------------------------------------- the running gateway
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:${port}"
log "starting audience-gateway sandbox on ${base}"
# Activations are rate-limited; lifted so that Schemathesis tests the operation, not the limit.
# The activation ledger starts empty in a directory of this run.
rm -rf "${out}/ledger"
GATEWAY_LEDGER__DIR="${out}/ledger" \
  GATEWAY_RATE_LIMIT__PER_CALLER_PER_MINUTE=1000000 GATEWAY_RATE_LIMIT__PER_CALLER_BURST=1000000 \
  GATEWAY_RATE_LIMIT__GLOBAL_PER_MINUTE=1000000 GATEWAY_RATE_LIMIT__GLOBAL_BURST=1000000 \
  GATEWAY_LOG__LEVEL="${GATEWAY_LOG__LEVEL:-warn}" \
  "${gateway}" sandbox --port "${port}" >"${out}/sandbox.log" 2>&1 &
sandbox_pid=$!
stop_sandbox() {
  kill "${sandbox_pid}" 2>/dev/null || true
  wait "${sandbox_pid}" 2>/dev/null || true
}
trap stop_sandbox EXIT
for _ in $(seq 1 100); do
  "${gateway}" healthcheck --url "${base}/readyz" --timeout-ms 500 2>/dev/null && break
  kill -0 "${sandbox_pid}" 2>/dev/null || { cat "${out}/sandbox.log"; echo "the sandbox exited" >&2; exit 1; }
  sleep 0.1
done
"${gateway}" healthcheck --url "${base}/readyz" || { cat "${out}/sandbox.log"; exit 1; }
token="$("${gateway}" token)"

# First, while the seeded audience 1001 exists (Schemathesis deletes audiences).
log "Swagger UI in headless Chromium"
check "swagger ui" env BASE_URL="${base}" TOKEN="${token}" NODE_TOOLS="${node_tools}" \
  CHROMIUM="${chromium}" SCREENSHOT="${out}/swagger.png" node tests/browser/swagger.mjs
"${last_ok}" && sed 's/^/    /' "${last_log}"

log "Schemathesis"
seed="${SCHEMATHESIS_SEED:-1}"
seed_args=(--seed "${seed}")
[[ "${seed}" == random ]] && seed_args=()
schemathesis_run() {
  # From target/, where Hypothesis keeps its example database. One worker: on CPython 3.11,
  # Hypothesis' source inspection in parallel threads fails with "AST constructor recursion
  # depth mismatch" (a CPython bug), which Schemathesis reports as an error.
  (cd "${out}" && "${venv}/bin/schemathesis" --no-color --config-file "${repo_root}/schemathesis.toml" \
    run "${base}/openapi.json" --checks all --mode all --workers 1 "${seed_args[@]}" \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-100}" \
    --header "Authorization: Bearer ${token}" \
    --report junit --report-dir "${out}/schemathesis")
}
check "schemathesis" schemathesis_run
"${last_ok}" && sed -n '/^=* SUMMARY =*$/,$p' "${last_log}" | sed 's/^/    /'

# ---------------------------------------------------------------- result
echo
if ((failed > 0)); then
  printf 'failed: %s\n' "${failures[@]}"
fi
echo "${passed} passed, ${failed} failed"
((failed == 0))
