#!/usr/bin/env bash
# Side-by-side pgbench: PostgreSQL direct vs PgBouncer vs TideGate, interleaved in one run.
# Everything runs on loopback in a throw-away temp dir that is removed on exit.
# Usage (as root): bench/pgbench.sh        see bench/README.md for the knobs.
set -euo pipefail

SCALE=${SCALE:-10}
POOL=${POOL:-8}
CLIENTS=${CLIENTS:-8}
DURATION=${DURATION:-20}
ROUNDS=${ROUNDS:-2}
REPLICAS=${REPLICAS:-0}   # >0: also TideGate with this many streaming replicas ("tidegate+rep")
PLUGINS=${PLUGINS:-0}     # 1: also TideGate with the four first-party plugins on ("tidegate+plugins")
PLUGIN_DIR=${PLUGIN_DIR:-$(cd "$(dirname "$0")/.." && pwd)/plugins/target/wasm32-wasip2/release}
TIDEGATE=${TIDEGATE:-$(cd "$(dirname "$0")/.." && pwd)/target/release/tidegate}   # "skip" = benchmark without TideGate
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}

die() { echo "pgbench.sh: $*" >&2; exit 1; }
as_pg() { runuser -u postgres -- "$@"; }

[[ $(id -u) -eq 0 ]] || die "run as root (PostgreSQL and PgBouncer are started as the postgres user)"
for n in SCALE POOL CLIENTS DURATION ROUNDS; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer (got '${!n}')"
done
[[ $REPLICAS =~ ^[0-9]$ ]] || die "REPLICAS must be 0..9 (got '$REPLICAS')"
if [[ $REPLICAS -gt 0 && $TIDEGATE == skip ]]; then die "REPLICAS needs TideGate"; fi
[[ $PLUGINS =~ ^[01]$ ]] || die "PLUGINS must be 0 or 1 (got '$PLUGINS')"
if [[ $PLUGINS -eq 1 && ! -f $PLUGIN_DIR/audit.wasm ]]; then
    die "plugins not built in $PLUGIN_DIR; build them with: cd plugins && cargo build --release --target wasm32-wasip2 --target-dir target"
fi
if [[ $TIDEGATE != skip && ! -x $TIDEGATE ]]; then
    die "TideGate binary not found at $TIDEGATE; build it with: cargo build --release -p tidegate"
fi
for b in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBOUNCER"; do [[ -x $b ]] || die "missing $b"; done
for b in pgbench psql pg_isready python3 timeout; do command -v "$b" >/dev/null || die "missing $b"; done

TMP=$(mktemp -d /tmp/tidegate-bench.XXXXXX)
chown postgres: "$TMP"
TG_PID="" TG2_PID="" TG3_PID=""
cleanup() {
    set +e
    local p
    for p in $TG_PID $TG2_PID $TG3_PID; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p"
            for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
            kill -KILL "$p" 2>/dev/null
        fi
    done
    if [[ -s $TMP/pgbouncer.pid ]]; then
        local p
        p=$(<"$TMP/pgbouncer.pid")
        kill -TERM "$p" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    fi
    for d in "$TMP"/rep* "$TMP/data"; do
        if [[ -s $d/postmaster.pid ]]; then
            as_pg "$PGBIN/pg_ctl" -D "$d" -m fast -t 30 stop >/dev/null 2>&1
        fi
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Distinct free loopback ports (sockets held open together so they differ).
read -r PG_PORT PGB_PORT TG_PORT TG2_PORT TG3_PORT REP_PORTS < <(python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(5 + int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
ps = [s.getsockname()[1] for s in ss]
print(*ps[:5], ",".join(map(str, ps[5:])))' "$REPLICAS")

wait_ready() {  # name port: up to 30 s for pg_isready
    for _ in $(seq 150); do
        pg_isready -q -h 127.0.0.1 -p "$2" -U postgres -d bench -t 2 && return 0
        sleep 0.2
    done
    die "$1 did not become ready on port $2"
}

# ---- 1. PostgreSQL ---------------------------------------------------------------------
echo "== PostgreSQL 15 on 127.0.0.1:$PG_PORT (data in $TMP/data)"
as_pg "$PGBIN/initdb" -D "$TMP/data" -A trust --no-sync -U postgres >"$TMP/initdb.log" 2>&1 ||
    { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
as_pg "$PGBIN/pg_ctl" -D "$TMP/data" -l "$TMP/postgres.log" -w -t 60 -o \
    "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$TMP \
     -c max_connections=200 -c shared_buffers=256MB" start >/dev/null ||
    { tail -n 20 "$TMP/postgres.log" >&2; die "PostgreSQL did not start"; }
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'CREATE DATABASE bench'
echo "== pgbench -i -s $SCALE"
timeout --foreground 1800 pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench \
    >"$TMP/init.log" 2>&1 || { cat "$TMP/init.log" >&2; die "pgbench -i failed"; }

REPLICA_LIST=""
if [[ $REPLICAS -gt 0 ]]; then
    IFS=, read -r -a rports <<<"$REP_PORTS"
    for i in $(seq 0 $((REPLICAS - 1))); do
        port=${rports[$i]}
        echo "== streaming replica $((i + 1)) on 127.0.0.1:$port (pg_basebackup -R)"
        as_pg "$PGBIN/pg_basebackup" -D "$TMP/rep$i" -R -X stream -c fast -h 127.0.0.1 -p "$PG_PORT" -U postgres \
            >"$TMP/basebackup$i.log" 2>&1 || { cat "$TMP/basebackup$i.log" >&2; die "pg_basebackup failed"; }
        as_pg "$PGBIN/pg_ctl" -D "$TMP/rep$i" -l "$TMP/replica$i.log" -w -t 60 -o \
            "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$TMP \
             -c max_connections=200 -c shared_buffers=256MB" start >/dev/null ||
            { tail -n 20 "$TMP/replica$i.log" >&2; die "replica $i did not start"; }
        REPLICA_LIST+="${REPLICA_LIST:+, }\"127.0.0.1:$port\""
    done
fi

# ---- 2. PgBouncer ----------------------------------------------------------------------
echo "== PgBouncer on 127.0.0.1:$PGB_PORT"
echo '"postgres" ""' >"$TMP/userlist.txt"
cat >"$TMP/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir =
auth_type = trust
auth_file = $TMP/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = 200
ignore_startup_parameters = extra_float_digits
logfile = $TMP/pgbouncer.log
pidfile = $TMP/pgbouncer.pid
EOF
chown postgres: "$TMP/userlist.txt" "$TMP/pgbouncer.ini"
as_pg "$PGBOUNCER" -d -q "$TMP/pgbouncer.ini" || die "PgBouncer did not start (see $TMP/pgbouncer.log)"
wait_ready PgBouncer "$PGB_PORT"
PGB_PID=$(<"$TMP/pgbouncer.pid")

# ---- 3. TideGate -----------------------------------------------------------------------
if [[ $TIDEGATE != skip ]]; then
    echo "== TideGate on 127.0.0.1:$TG_PORT"
    cat >"$TMP/tidegate.toml" <<EOF
[listen]
sql = "127.0.0.1:$TG_PORT"
http = "off"
[upstream.primary]
host = "127.0.0.1"
port = $PG_PORT
user = "postgres"
database = "bench"
[pool]
size = $POOL
[auth]
method = "trust"
[log]
level = "warn"
[[users]]
name = "postgres"
EOF
    "$TIDEGATE" serve --config "$TMP/tidegate.toml" >"$TMP/tidegate.log" 2>&1 &
    TG_PID=$!
    sleep 0.2
    kill -0 "$TG_PID" 2>/dev/null || { cat "$TMP/tidegate.log" >&2; die "TideGate exited at startup"; }
    wait_ready TideGate "$TG_PORT"
    if [[ $REPLICAS -gt 0 ]]; then
        echo "== TideGate with $REPLICAS replicas on 127.0.0.1:$TG2_PORT"
        sed -e "s/127.0.0.1:$TG_PORT/127.0.0.1:$TG2_PORT/" "$TMP/tidegate.toml" >"$TMP/tidegate-rep.toml"
        printf '[upstream]\nreplicas = [%s]\n' "$REPLICA_LIST" >>"$TMP/tidegate-rep.toml"
        "$TIDEGATE" serve --config "$TMP/tidegate-rep.toml" >"$TMP/tidegate-rep.log" 2>&1 &
        TG2_PID=$!
        sleep 0.2
        kill -0 "$TG2_PID" 2>/dev/null || { cat "$TMP/tidegate-rep.log" >&2; die "TideGate (replicas) exited"; }
        wait_ready "TideGate (replicas)" "$TG2_PORT"
        sleep 2   # let the health monitor see the replicas before the first read
    fi
    if [[ $PLUGINS -eq 1 ]]; then
        echo "== TideGate with the four plugins on 127.0.0.1:$TG3_PORT"
        sed -e "s/127.0.0.1:$TG_PORT/127.0.0.1:$TG3_PORT/" "$TMP/tidegate.toml" >"$TMP/tidegate-plugins.toml"
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
        "$TIDEGATE" serve --config "$TMP/tidegate-plugins.toml" >"$TMP/tidegate-plugins.log" 2>&1 &
        TG3_PID=$!
        sleep 0.5
        kill -0 "$TG3_PID" 2>/dev/null || { cat "$TMP/tidegate-plugins.log" >&2; die "TideGate (plugins) exited"; }
        wait_ready "TideGate (plugins)" "$TG3_PORT"
    fi
else
    echo "== TideGate skipped (TIDEGATE=skip)"
fi

# ---- 4. Workloads ----------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {  # utime+stime of a process (all threads), fields 14 and 15 of /proc/PID/stat
    local s f
    s=$(<"/proc/$1/stat")
    read -r -a f <<<"${s##*) }"   # drop "pid (comm) " so f[0] is field 3
    echo $((f[11] + f[12]))
}
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "-"; else printf "%.1f\n", (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a+0>0 && b+0>0) printf "%.2f\n", a/b; else print "-"}'; }
us_per_tx() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN {if (n>0) printf "%.1f\n", t/hz*1e6/n; else print "-"}'; }

WORKLOADS=("select-only simple|-S -M simple" "select-only extended|-S -M extended"
           "select-only prepared|-S -M prepared" "tpc-b simple|-M simple")
TARGETS=(direct pgbouncer tidegate)
if [[ $REPLICAS -gt 0 ]]; then TARGETS+=(tidegate+rep); fi
if [[ $PLUGINS -eq 1 ]]; then TARGETS+=(tidegate+plugins); fi
declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$PGB_PORT [tidegate]=$TG_PORT [tidegate+rep]=$TG2_PORT
                 [tidegate+plugins]=$TG3_PORT)
declare -A PID=([pgbouncer]=$PGB_PID [tidegate]=$TG_PID [tidegate+rep]=$TG2_PID [tidegate+plugins]=$TG3_PID)
declare -A TPS FAILED TXS TICKS   # keyed "workload|target"
NA_PGB="n/a (pgbouncer 1.18 lacks prepared statements in transaction mode)"

skipped() {  # target workload-args -> reason, or nothing if it runs
    if [[ $1 == tidegate && $TIDEGATE == skip ]]; then echo "skipped (TIDEGATE=skip)"
    elif [[ $1 == pgbouncer && $2 == *prepared* ]]; then echo "$NA_PGB"
    elif [[ $1 == tidegate+rep && $2 != *-S* ]]; then echo "select-only only"
    elif [[ $1 == tidegate+plugins && $2 != *-S* ]]; then echo "select-only only"; fi
}

run_one() {  # name args target round
    local name=$1 args=$2 t=$3 r=$4 key="$1|$3" out t0=0 t1=0 tps tx fail
    out="$TMP/run-${name// /_}-$t-$r.log"
    if [[ -n ${PID[$t]:-} ]]; then t0=$(cpu_ticks "${PID[$t]}"); fi
    # shellcheck disable=SC2086  # $args is a deliberate word list
    timeout --foreground -k 10 $((DURATION + 120)) pgbench -n -c "$CLIENTS" -j 2 -T "$DURATION" $args \
        -h 127.0.0.1 -p "${PORT[$t]}" -U postgres bench >"$out" 2>&1 || true
    if [[ -n ${PID[$t]:-} ]]; then t1=$(cpu_ticks "${PID[$t]}"); fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$out")
    tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    fail=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
    if [[ -z $tps ]]; then
        echo "   WARNING: no tps from $t ($name, round $r); last lines of $out:" >&2
        tail -n 5 "$out" | sed 's/^/     /' >&2
        tps=0
    fi
    TPS[$key]+="$tps "
    FAILED[$key]=$(( ${FAILED[$key]:-0} + ${fail:-0} ))
    TXS[$key]=$(( ${TXS[$key]:-0} + ${tx:-0} ))
    TICKS[$key]=$(( ${TICKS[$key]:-0} + t1 - t0 ))
    printf '   round %d  %-12s  tps %10s  failed %s\n' "$r" "$t" "$tps" "${fail:-?}"
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

# ---- 5. Report -------------------------------------------------------------------------
echo
echo "Machine: $(nproc) CPUs ($(uname -m)), $(pgbench --version), $("$PGBOUNCER" --version | head -n 1)"
echo "Settings: SCALE=$SCALE POOL=$POOL CLIENTS=$CLIENTS DURATION=${DURATION}s ROUNDS=$ROUNDS (median TPS)," \
     "PostgreSQL max_connections=200 shared_buffers=256MB, TIDEGATE=$TIDEGATE"
echo
fmt='%-21s | %10s | %13s | %12s | %15s | %18s | %16s | %17s | %s\n'
# shellcheck disable=SC2059  # $fmt is a format string on purpose
printf "$fmt" workload "direct tps" "pgbouncer tps" "tidegate tps" tidegate/direct tidegate/pgbouncer \
    "tidegate µs/tx" "pgbouncer µs/tx" "failed tx (direct/pgb/tg)"
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
        med[$t]=$(tr ' ' '\n' <<<"${TPS[$name|$t]}" | grep . | median)
        cpu[$t]=$(us_per_tx "${TICKS[$name|$t]}" "${TXS[$name|$t]}")
        fl[$t]=${FAILED[$name|$t]}
    done
    # shellcheck disable=SC2059
    printf "$fmt" "$name" "${med[direct]}" "${med[pgbouncer]}" "${med[tidegate]}" \
        "$(ratio "${med[tidegate]}" "${med[direct]}")" "$(ratio "${med[tidegate]}" "${med[pgbouncer]}")" \
        "${cpu[tidegate]}" "${cpu[pgbouncer]}" "${fl[direct]}/${fl[pgbouncer]}/${fl[tidegate]}"
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
        rep=$(tr ' ' '\n' <<<"${TPS[$name|tidegate+rep]}" | grep . | median)
        pgb="n/a"
        [[ -n $(skipped pgbouncer "$args") ]] || pgb=$(tr ' ' '\n' <<<"${TPS[$name|pgbouncer]}" | grep . | median)
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
        on=$(tr ' ' '\n' <<<"${TPS[$name|tidegate+plugins]}" | grep . | median)
        off=$(tr ' ' '\n' <<<"${TPS[$name|tidegate]}" | grep . | median)
        pgb="n/a"
        [[ -n $(skipped pgbouncer "$args") ]] || pgb=$(tr ' ' '\n' <<<"${TPS[$name|pgbouncer]}" | grep . | median)
        # The two run back to back in each round: the median of those ratios is steadier
        # than the ratio of medians when the machine's speed drifts between rounds.
        paired=$(paste -d' ' <(tr ' ' '\n' <<<"${TPS[$name|tidegate+plugins]}" | grep .) \
                            <(tr ' ' '\n' <<<"${TPS[$name|tidegate]}" | grep .) |
                 awk '$1>0 && $2>0 {print $1/$2}' | sort -g |
                 awk '{v[NR]=$1} END {if (NR==0) print "-"; else printf "%.2f\n", (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}')
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
echo "µs/tx = broker process CPU (user+sys, all threads, /proc/PID/stat) / transactions processed."
