#!/usr/bin/env bash
# Side-by-side pgbench: PostgreSQL direct vs PgBouncer vs TideGate, interleaved in one run.
# Everything runs on loopback in a throw-away temp dir that is removed on exit.
# Usage (as root): bench/pgbench.sh        see bench/README.md for the knobs.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

SCALE=${SCALE:-10}
POOL=${POOL:-8}
CLIENTS=${CLIENTS:-8}
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-2}
REPLICAS=${REPLICAS:-0}   # >0: also TideGate with this many streaming replicas ("tidegate+rep")
SYSCALLS=${SYSCALLS:-1}   # 1: one extra run per select-only workload under strace -c, syscalls per transaction
PLUGINS=${PLUGINS:-0}     # 1: also TideGate with the four first-party plugins on ("tidegate+plugins")
PLUGIN_DIR=${PLUGIN_DIR:-$BENCH_ROOT/plugins/target/wasm32-wasip2/release}

require_root
require_positive SCALE POOL CLIENTS DURATION ROUNDS
[[ $REPLICAS =~ ^[0-9]$ ]] || die "REPLICAS must be 0..9 (got '$REPLICAS')"
if [[ $REPLICAS -gt 0 && $TIDEGATE == skip ]]; then die "REPLICAS needs TideGate"; fi
[[ $PLUGINS =~ ^[01]$ ]] || die "PLUGINS must be 0 or 1 (got '$PLUGINS')"
if [[ $PLUGINS -eq 1 && ! -f $PLUGIN_DIR/audit.wasm ]]; then
    die "plugins not built in $PLUGIN_DIR; build them with: cd plugins && cargo build --release --target wasm32-wasip2 --target-dir target"
fi
check_tidegate allow-skip
check_tools timeout

make_tmp tidegate-bench
TG_PID="" TG2_PID="" TG3_PID=""
# The replicas' ports, space-separated, end up in REP_PORTS.
read -r PG_PORT PGB_PORT TG_PORT TG2_PORT TG3_PORT REP_PORTS < <(free_ports $((5 + REPLICAS)))

# ---- 1. PostgreSQL, replicas, PgBouncer --------------------------------------------------
start_postgres
pgbench_init "$SCALE"
REPLICA_LIST=""
if [[ $REPLICAS -gt 0 ]]; then
    read -r -a rports <<<"$REP_PORTS"
    for i in $(seq 0 $((REPLICAS - 1))); do
        start_replica "$i" "${rports[$i]}"
        REPLICA_LIST+="${REPLICA_LIST:+, }\"127.0.0.1:${rports[$i]}\""
    done
fi
start_pgbouncer "$POOL"

# ---- 2. TideGate -----------------------------------------------------------------------
if [[ $TIDEGATE != skip ]]; then
    echo "== TideGate on 127.0.0.1:$TG_PORT"
    tg_config "$TG_PORT" >"$TMP/tidegate.toml"
    start_tidegate TideGate "$TG_PORT" "$TMP/tidegate.toml" "$TMP/tidegate.log"
    TG_PID=$STARTED_PID
    if [[ $REPLICAS -gt 0 ]]; then
        echo "== TideGate with $REPLICAS replicas on 127.0.0.1:$TG2_PORT"
        { tg_config "$TG2_PORT"; printf '[upstream]\nreplicas = [%s]\n' "$REPLICA_LIST"; } >"$TMP/tidegate-rep.toml"
        start_tidegate "TideGate (replicas)" "$TG2_PORT" "$TMP/tidegate-rep.toml" "$TMP/tidegate-rep.log"
        TG2_PID=$STARTED_PID
        sleep 2   # let the health monitor see the replicas before the first read
    fi
    if [[ $PLUGINS -eq 1 ]]; then
        echo "== TideGate with the four plugins on 127.0.0.1:$TG3_PORT"
        tg_config "$TG3_PORT" >"$TMP/tidegate-plugins.toml"
        cat >>"$TMP/tidegate-plugins.toml" <<EOF
[plugins]
dir = "$PLUGIN_DIR"
watch = false
[[plugins.keys]]
name = "pii"
id = 1
secret = "YmVuY2gtb25seS1waWkta2V5LTMyLWJ5dGVzLWxvbmc="
[[plugins.keys]]
name = "audit"
id = 1
secret = "YmVuY2gtb25seS1hdWRpdC1rZXktMzItYnl0ZXMtbG8="
[[plugins.chain]]
name = "access-control"
file = "access_control.wasm"
kind = "access_control"
[plugins.chain.config]
deny_by_default = true
[plugins.chain.config.roles]
reader = [{ kinds = ["read", "utility"], tables = ["*"] }]
admin = [{ kinds = ["*"], tables = ["*"] }]
[plugins.chain.config.users]
postgres = ["admin"]
[[plugins.chain]]
name = "optimizer"
file = "optimizer.wasm"
kind = "optimizer"
[plugins.chain.config]
hypertables = ["pgbench_history"]
time_column = "mtime"
[[plugins.chain]]
name = "encryption"
file = "encryption.wasm"
kind = "encryption"
keys = ["pii"]
[plugins.chain.config.columns]
"public.pgbench_branches.filler" = { key = "pii", readers = ["admin"] }
[[plugins.chain]]
name = "audit"
file = "audit.wasm"
kind = "audit"
[plugins.chain.config]
labels = { env = "bench" }
[audit]
key = "audit"
EOF
        start_tidegate "TideGate (plugins)" "$TG3_PORT" "$TMP/tidegate-plugins.toml" "$TMP/tidegate-plugins.log" 0.5
        TG3_PID=$STARTED_PID
    fi
else
    echo "== TideGate skipped (TIDEGATE=skip)"
fi

# ---- 3. Workloads ----------------------------------------------------------------------
WORKLOADS=("select-only simple|-S -M simple" "select-only extended|-S -M extended"
           "select-only prepared|-S -M prepared" "tpc-b simple|-M simple")
TARGETS=(direct pgbouncer tidegate)
if [[ $REPLICAS -gt 0 ]]; then TARGETS+=(tidegate+rep); fi
if [[ $PLUGINS -eq 1 ]]; then TARGETS+=(tidegate+plugins); fi
declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$PGB_PORT [tidegate]=$TG_PORT [tidegate+rep]=$TG2_PORT
                 [tidegate+plugins]=$TG3_PORT)
declare -A PID=([pgbouncer]=$PGB_PID [tidegate]=$TG_PID [tidegate+rep]=$TG2_PID [tidegate+plugins]=$TG3_PID)
# pgbench_run keys its totals (TPS, FAILED, TXS, TICKS) "workload|target".
NA_PGB="n/a (pgbouncer 1.18 lacks prepared statements in transaction mode)"

skipped() {  # target workload-args -> reason, or nothing if it runs
    if [[ $1 == tidegate && $TIDEGATE == skip ]]; then echo "skipped (TIDEGATE=skip)"
    elif [[ $1 == pgbouncer && $2 == *prepared* ]]; then echo "$NA_PGB"
    elif [[ $1 == tidegate+rep && $2 != *-S* ]]; then echo "select-only only"
    elif [[ $1 == tidegate+plugins && $2 != *-S* ]]; then echo "select-only only"; fi
}

run_one() {  # name args target round
    local name=$1 args=$2 t=$3 r=$4
    # shellcheck disable=SC2086  # $args is a deliberate word list
    pgbench_run "$name|$t" "${PORT[$t]}" "${PID[$t]:-}" "$TMP/run-${name// /_}-$t-$r.log" \
        "$t ($name, round $r)" $args
    printf '   round %d  %-12s  tps %10s  failed %s\n' "$r" "$t" "$RUN_TPS" "${RUN_FAIL:-?}"
}

for w in "${WORKLOADS[@]}"; do
    name=${w%%|*} args=${w#*|}
    echo "== $name: pgbench -n -c $CLIENTS -j 2 -T $DURATION $args  x $ROUNDS rounds"
    for r in $(seq "$ROUNDS"); do
        for t in "${TARGETS[@]}"; do
            if [[ -z $(skipped "$t" "$args") ]]; then run_one "$name" "$args" "$t" "$r"; fi
        done
    done
done

# ---- 3b. Syscalls per transaction ------------------------------------------------------
# One short run of each broker under `strace -c -f` (which slows it: its TPS is not reported),
# counting every system call of the broker process and its threads per transaction.
declare -A SYSC=()
syscalls_per_tx() {  # name args target
    local name=$1 args=$2 t=$3 out="$TMP/strace-${1// /_}-$3" log="$TMP/strace-run-${1// /_}-$3.log" tx calls
    strace -c -f -q -p "${PID[$t]}" -o "$out" & local st=$!
    sleep 0.5
    # shellcheck disable=SC2086  # $args is a deliberate word list
    timeout --foreground -k 10 $((DURATION + 60)) pgbench -n -c "$CLIENTS" -j 2 -T 5 $args \
        -h 127.0.0.1 -p "${PORT[$t]}" -U postgres bench >"$log" 2>&1 || true
    kill -INT "$st" 2>/dev/null; wait "$st" 2>/dev/null || true
    tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$log")
    calls=$(awk '$NF == "total" {print $4}' "$out" 2>/dev/null)
    SYSC[$name|$t]=$(awk -v c="${calls:-0}" -v n="${tx:-0}" 'BEGIN {if (n>0 && c>0) printf "%.2f", c/n; else print "-"}')
}
if [[ $SYSCALLS -eq 1 && $TIDEGATE != skip ]]; then
    command -v strace >/dev/null || die "SYSCALLS=1 needs strace (apt-get install strace), or SYSCALLS=0"
    echo "== syscalls per transaction: pgbench -T 5 under strace -c -f (TPS not reported)"
    for w in "${WORKLOADS[@]:0:2}"; do
        name=${w%%|*} args=${w#*|}
        for t in pgbouncer tidegate; do syscalls_per_tx "$name" "$args" "$t"; done
        printf '   %-21s  pgbouncer %s  tidegate %s\n' "$name" "${SYSC[$name|pgbouncer]}" "${SYSC[$name|tidegate]}"
    done
fi

# ---- 4. Report -------------------------------------------------------------------------
echo
machine_line
echo "Settings: SCALE=$SCALE POOL=$POOL CLIENTS=$CLIENTS DURATION=${DURATION}s ROUNDS=$ROUNDS (median TPS)," \
     "PostgreSQL max_connections=200 shared_buffers=256MB, TIDEGATE=$TIDEGATE"
echo
fmt='%-21s | %10s | %13s | %12s | %15s | %18s | %18s | %16s | %17s | %s\n'
# shellcheck disable=SC2059  # $fmt is a format string on purpose
printf "$fmt" workload "direct tps" "pgbouncer tps" "tidegate tps" tidegate/direct tidegate/pgbouncer \
    "same round (tg/pgb)" "tidegate µs/tx" "pgbouncer µs/tx" "failed tx (direct/pgb/tg)"
notes=()
for w in "${WORKLOADS[@]}"; do
    name=${w%%|*} args=${w#*|}
    declare -A med=() cpu=() fl=()
    for t in "${TARGETS[@]}"; do
        why=$(skipped "$t" "$args")
        if [[ -n $why ]]; then
            med[$t]="n/a" cpu[$t]="n/a" fl[$t]="-"
            if [[ $t == pgbouncer ]]; then notes+=("$name: pgbouncer $why"); fi
            continue
        fi
        med[$t]=$(tps_median "$name|$t")
        cpu[$t]=$(us_per_tx "${TICKS[$name|$t]}" "${TXS[$name|$t]}")
        fl[$t]=${FAILED[$name|$t]}
    done
    # shellcheck disable=SC2059
    printf "$fmt" "$name" "${med[direct]}" "${med[pgbouncer]}" "${med[tidegate]}" \
        "$(ratio "${med[tidegate]}" "${med[direct]}")" "$(ratio "${med[tidegate]}" "${med[pgbouncer]}")" \
        "$(paired_ratio "$name|tidegate" "$name|pgbouncer")" "${cpu[tidegate]}" "${cpu[pgbouncer]}" "${fl[direct]}/${fl[pgbouncer]}/${fl[tidegate]}"
    unset med cpu fl
done
if [[ $REPLICAS -gt 0 ]]; then
    echo
    echo "TideGate with $REPLICAS streaming replicas (reads spread over them) vs PgBouncer on the primary alone:"
    fmt2='%-21s | %18s | %13s | %21s | %17s | %s\n'
    # shellcheck disable=SC2059
    printf "$fmt2" workload "tidegate+rep tps" "pgbouncer tps" "tidegate+rep/pgbouncer" "tidegate+rep µs/tx" failed
    for w in "${WORKLOADS[@]}"; do
        name=${w%%|*} args=${w#*|}
        [[ -z $(skipped tidegate+rep "$args") ]] || continue
        rep=$(tps_median "$name|tidegate+rep")
        pgb="n/a"
        [[ -n $(skipped pgbouncer "$args") ]] || pgb=$(tps_median "$name|pgbouncer")
        # shellcheck disable=SC2059
        printf "$fmt2" "$name" "$rep" "$pgb" "$(ratio "$rep" "$pgb")" \
            "$(us_per_tx "${TICKS[$name|tidegate+rep]}" "${TXS[$name|tidegate+rep]}")" "${FAILED[$name|tidegate+rep]}"
    done
    echo "note: all servers share this machine's $(nproc) CPUs, so replicas add no CPU here; on separate hosts they would."
fi
if [[ $PLUGINS -eq 1 ]]; then
    echo
    echo "TideGate with access-control, optimizer, encryption and audit (every statement audited) vs plugins off:"
    fmt3='%-21s | %20s | %12s | %15s | %22s | %13s | %22s | %21s | %s\n'
    # shellcheck disable=SC2059
    printf "$fmt3" workload "tidegate+plugins tps" "tidegate tps" "plugins on/off" "on/off, same round" \
        "pgbouncer tps" "plugins on/pgbouncer" "tidegate+plugins µs/tx" failed
    for w in "${WORKLOADS[@]}"; do
        name=${w%%|*} args=${w#*|}
        [[ -z $(skipped tidegate+plugins "$args") ]] || continue
        on=$(tps_median "$name|tidegate+plugins")
        off=$(tps_median "$name|tidegate")
        pgb="n/a"
        [[ -n $(skipped pgbouncer "$args") ]] || pgb=$(tps_median "$name|pgbouncer")
        # The two run back to back in each round.
        paired=$(paired_ratio "$name|tidegate+plugins" "$name|tidegate")
        # shellcheck disable=SC2059
        printf "$fmt3" "$name" "$on" "$off" "$(ratio "$on" "$off")" "$paired" \
            "$pgb" "$(ratio "$on" "$pgb")" \
            "$(us_per_tx "${TICKS[$name|tidegate+plugins]}" "${TXS[$name|tidegate+plugins]}")" \
            "${FAILED[$name|tidegate+plugins]}"
    done
    audited=$(psql -X -A -t -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench \
        -c 'SELECT count(*) FROM tidegate_audit.events' 2>/dev/null || echo "?")
    echo "audit records written by tidegate+plugins: $audited"
fi
echo
for n in "${notes[@]}"; do echo "note: $n"; done
if [[ $TIDEGATE == skip ]]; then echo "note: TideGate was skipped (TIDEGATE=skip, a debugging aid)"; fi
cpu_note
