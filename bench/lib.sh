# bench/lib.sh — what bench/run and bench/profile share: starting and stopping the servers,
# the gateway's environment for each row, keys, tokens and request bodies. Sourced, not run;
# the caller sets ROOT (the checkout), OUT (its run directory), BIN (the directory holding
# audience-gateway and examples/) and SERVER_CPU, and calls `trap cleanup EXIT`.
# shellcheck shell=bash

SECRET="bench-only-hs256-secret-0123456789abcdef"
# Browser frontends: the CORS rows configure this origin and send it.
ORIGIN=https://app.example.com
# Row d's body, and the vendor call the forwarder baselines make for it.
ACTIVATION='{"accountId":501,"name":"bench segment","description":"bench/run","startDate":"2030-01-01T00:00:00Z","endDate":"2030-02-01T00:00:00Z"}'
VENDOR_ACTIVATION='{"audienceId":1002,"accountId":501,"name":"bench segment","description":"bench/run","startDate":"2030-01-01T00:00:00Z","endDate":"2030-02-01T00:00:00Z"}'

log() { printf '[bench] %s\n' "$*" >&2; }

ensure_apt() { # command package... : installs the first package that installs when command is missing
    local cmd=$1 pkg; shift
    command -v "$cmd" >/dev/null && return 0
    for pkg in "$@"; do
        log "installing $pkg"
        apt-get install -y "$pkg" >&2 || { apt-get update >&2 && apt-get install -y "$pkg" >&2; } || continue
        command -v "$cmd" >/dev/null && return 0
    done
    log "cannot install $cmd (tried: $*)"; return 1
}

# --- processes -------------------------------------------------------------------------
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    # Keep the tail of the logs only; the line counts are in the results.
    for f in "$OUT"/*.log; do
        [[ -f $f ]] && tail -n 200 "$f" >"$f.tail" && mv "$f.tail" "$f"
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # url; env WAIT_TRIES (tenths of a second, default 300)
    for _ in $(seq 1 "${WAIT_TRIES:-300}"); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    log "no answer from $1"; return 1
}

# Each start_* function leaves the new process id in LAST_PID.
LAST_PID=
# Unset any GATEWAY_* of the caller: every setting of a run is spelled out here.
CLEAN_ENV=()
while read -r v; do CLEAN_ENV+=(-u "$v"); done < <(compgen -e | grep '^GATEWAY_' || true)

start_sim() { # name port workers seed latency_ms cpu
    taskset -c "$6" "$BIN/examples/bench_upstream" --addr "127.0.0.1:$2" --workers "$3" \
        --seed-audiences "$4" --latency-ms "$5" >"$OUT/$1.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_http "http://127.0.0.1:$2/__sim/faults"
}

# The command the gateway runs under (bench/profile: valgrind); empty: none.
GATEWAY_WRAP=()

# start_gateway name port upstream_url [VAR=value...]; env BENCH_GATEWAY_BIN: another binary.
# One worker, limiter off, JSON log (access lines included) to $OUT/<name>.log. It runs in
# $OUT/ledger-<name>/, where its default ledger (ledger.dir ".": the SQLite file and the
# spool file) is made, so every gateway of every run starts on an empty ledger of its own.
start_gateway() {
    local name=$1 port=$2 upstream=$3; shift 3
    local bin=${BENCH_GATEWAY_BIN:-$BIN/audience-gateway}
    mkdir -p "$OUT/ledger-$name"
    (cd "$OUT/ledger-$name" && exec env "${CLEAN_ENV[@]}" \
        GATEWAY_SERVER__HOST=127.0.0.1 GATEWAY_SERVER__PORT="$port" GATEWAY_SERVER__WORKERS=1 \
        GATEWAY_UPSTREAM__BASE_URL="$upstream" GATEWAY_UPSTREAM__USERNAME=sandbox \
        GATEWAY_UPSTREAM__PASSWORD=sandbox-password \
        GATEWAY_AUTH__HS256_SECRET="$SECRET" \
        GATEWAY_AUTH__PUBLIC_KEY_PEM_FILE="$OUT/rsa_public.pem" \
        GATEWAY_RATE_LIMIT__ENABLED=false \
        GATEWAY_LOG__FORMAT=json GATEWAY_LOG__LEVEL=info "$@" \
        taskset -c "$SERVER_CPU" "${GATEWAY_WRAP[@]}" "$bin" serve) >"$OUT/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_http "http://127.0.0.1:$port/healthz"
}

# The gateway settings of a row beyond start_gateway's, into ROW_ENV: rows a, b and d run on
# the defaults (cache on), cors with an allowed origin, c with the cache off.
row_env() { # row
    case "$1" in
        a|b|d) ROW_ENV=() ;;
        cors) ROW_ENV=(GATEWAY_SERVER__CORS_ALLOWED_ORIGINS="$ORIGIN") ;;
        c) ROW_ENV=(GATEWAY_CACHE__ENABLED=false) ;;
        *) log "unknown row $1"; return 1 ;;
    esac
}

start_baseline() { # name port mode args...
    local name=$1 port=$2; shift 2
    taskset -c "$SERVER_CPU" "$BIN/examples/bench_baseline" --addr "127.0.0.1:$port" "$@" \
        >"$OUT/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_http "http://127.0.0.1:$port/v1/audiences/1001"
}

kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

sim_login() { # sim_url -> "digitalAudience=..."
    curl -s -D - -o /dev/null -X POST "$1/account/login" -H 'content-type: application/json' \
        -d '{"userName":"sandbox","password":"sandbox-password"}' |
        awk -F'[ ;]' 'tolower($1) == "set-cookie:" {print $2}' | tr -d '\r'
}

metric() { # gateway_port name -> value
    curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'
}

# An RSA key pair under $OUT (the gateway verifies RS256 with the public half) and the
# tokens of the rows: HS_TOKEN (rows a, c, d) and RS_TOKEN (row b), valid for two hours.
make_tokens() {
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$OUT/rsa_private.pem" 2>/dev/null
    openssl pkey -in "$OUT/rsa_private.pem" -pubout -out "$OUT/rsa_public.pem"
    HS_TOKEN=$("$BIN/examples/bench_token" --alg HS256 --secret "$SECRET" --ttl-secs 7200)
    RS_TOKEN=$("$BIN/examples/bench_token" --alg RS256 --key "$OUT/rsa_private.pem" --ttl-secs 7200)
}

sqlite_rows() { # file -> rows of its activations table ("" when it cannot be read)
    python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM activations").fetchone()[0])' \
        "$1" 2>/dev/null || true
}
