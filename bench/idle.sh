#!/usr/bin/env bash
# Idle clients: what each costs TideGate and PgBouncer in memory, and whether they tax the
# active ones; and a SCRAM connection storm against TideGate.
# Usage (as root): bench/idle.sh        see bench/README.md for the knobs.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

COUNTS=${COUNTS:-"1000 10000"}   # idle clients held, one measurement each
POOL=${POOL:-8}
CLIENTS=${CLIENTS:-8}            # pgbench -S clients beside the idle ones
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
STORM=${STORM:-2000}             # SCRAM connections opened at once

require_root
require_positive POOL CLIENTS DURATION ROUNDS STORM
check_tidegate no-skip
check_tools ss timeout
python3 -c 'import psycopg' 2>/dev/null || die "the storm needs Python's psycopg (scripts/deps.sh installs it)"
max_n=0
for n in $COUNTS; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "COUNTS must be positive integers"; ((n > max_n)) && max_n=$n; done
# One holder and one broker each keep max_n sockets open (the hard limit is per process).
ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) > max_n + 500)) || die "open-files limit $(ulimit -n) is too low for $max_n clients"
export PGB_MAX_CLIENTS=$((max_n + 100))

make_tmp tidegate-idle
read -r PG_PORT PGB_PORT TG_PORT TG2_PORT < <(free_ports 4)
start_postgres
pgbench_init 1
printf '\\sleep 1 s\n' >"$TMP/idle.sql"

# Print a process's resident set size in KiB.
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Print the number of established client connections to port.
established() { ss -Htn state established "( sport = :$1 )" | wc -l; }
# Hold n idle clients on port (pgbench clients that only \sleep: started up, never a statement);
# waits until all n are established; sets HOLDER.
hold() {  # port n
    pgbench -n -c "$2" -j 2 -T 3600 -f "$TMP/idle.sql" -h 127.0.0.1 -p "$1" -U postgres bench \
        >"$TMP/holder.log" 2>&1 &
    HOLDER=$!
    for _ in $(seq 600); do
        (($(established "$1") >= $2)) && return 0
        kill -0 "$HOLDER" 2>/dev/null || { tail -n 5 "$TMP/holder.log" >&2; die "the holder of $2 clients exited"; }
        sleep 0.2
    done
    die "only $(established "$1") of $2 idle clients connected to port $1"
}
release() {
    kill "$HOLDER" 2>/dev/null || true
    wait "$HOLDER" 2>/dev/null || true
    for _ in $(seq 300); do (($(established "$1") == 0)) && return 0; sleep 0.1; done
}
start_tg() {  # port
    { tg_config "$1"; printf '[limits]\nmax_client_connections = %d\n' "$PGB_MAX_CLIENTS"; } >"$TMP/tidegate-$1.toml"
    start_tidegate TideGate "$1" "$TMP/tidegate-$1.toml" "$TMP/tidegate-$1.log"
    TG_PID=$STARTED_PID
}
stop_broker() { stop_pid "$1"; }

# ---- 1. memory per idle client: a fresh broker for each count -----------------------------
declare -A PER=()
for n in $COUNTS; do
    echo "== $n idle clients"
    start_tg "$TG_PORT"
    start_pgbouncer "$POOL"
    for target in tidegate pgbouncer; do
        if [[ $target == tidegate ]]; then port=$TG_PORT pid=$TG_PID; else port=$PGB_PORT pid=$PGB_PID; fi
        # One statement first, so that the pool and its server connection exist.
        psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d bench -c 'SELECT 1' >/dev/null
        before=$(rss_kb "$pid")
        hold "$port" "$n"
        sleep 2
        after=$(rss_kb "$pid")
        PER[$target,$n]=$(awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN {printf "%.1f", (a-b)/n}')
        echo "   $target: RSS $before KiB -> $after KiB with $n idle clients: ${PER[$target,$n]} KiB each"
        release "$port"
    done
    stop_broker "$TG_PID"
    stop_broker "$PGB_PID"
    rm -f "$TMP/pgbouncer.pid"
done

# ---- 2. pgbench -S beside the largest count of idle clients ------------------------------
echo "== pgbench -S -c $CLIENTS, alone and beside $max_n idle clients ($ROUNDS rounds, interleaved)"
start_tg "$TG_PORT"
TG_BENCH=$TG_PID
start_pgbouncer "$POOL"
for r in $(seq "$ROUNDS"); do
    for target in tidegate pgbouncer; do
        if [[ $target == tidegate ]]; then port=$TG_PORT pid=$TG_BENCH; else port=$PGB_PORT pid=$PGB_PID; fi
        pgbench_run "$target,alone" "$port" "$pid" "$TMP/alone-$target-$r.log" "$target alone" -S
        hold "$port" "$max_n"
        pgbench_run "$target,idle" "$port" "$pid" "$TMP/idle-$target-$r.log" "$target beside $max_n idle" -S
        release "$port"
    done
done

# ---- 3. a SCRAM connection storm ---------------------------------------------------------
echo "== $STORM SCRAM connections opened at once through TideGate"
{
    tg_config "$TG2_PORT" scram
    printf '[limits]\nmax_client_connections = %d\n[[users]]\nname = "storm"\npassword = "storm-pw"\n' "$((STORM + 100))"
} >"$TMP/tidegate-storm.toml"
start_tidegate "TideGate (SCRAM)" "$TG2_PORT" "$TMP/tidegate-storm.toml" "$TMP/tidegate-storm.log"
storm_t0=$(cpu_ticks "$STARTED_PID")
STORM_OUT=$(python3 - "$TG2_PORT" "$STORM" <<'PY'
import asyncio, sys, time
import psycopg

port, n = int(sys.argv[1]), int(sys.argv[2])
dsn = f"host=127.0.0.1 port={port} dbname=bench user=storm password=storm-pw sslmode=disable"

async def one():
    t0 = time.perf_counter()
    try:
        c = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    except Exception as e:  # counted, with its message
        return None, str(e).splitlines()[0]
    took = time.perf_counter() - t0
    return (c, took), None

async def wave(limit):
    gate = asyncio.Semaphore(limit)
    async def gated():
        async with gate:
            return await one()
    t0 = time.perf_counter()
    results = await asyncio.gather(*[gated() for _ in range(n)])
    wall = time.perf_counter() - t0
    ok = [r for r, e in results if r]
    errors = [e for r, e in results if e]
    times = sorted(t for _, t in ok)
    for c, _ in ok:
        await c.close()
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000 if times else float("nan")
    how = "all at once" if limit >= n else f"{limit} at a time"
    print(f"{how}: {len(ok)} ok, {len(errors)} failed in {wall:.2f} s; time to ReadyForQuery "
          f"p50 {p(0.50):.0f} ms, p99 {p(0.99):.0f} ms, max {times[-1]*1000 if times else 0:.0f} ms")
    for e in sorted(set(errors))[:5]:
        print(f"   error: {e}")

async def main():
    # libpq computes the client's SCRAM proof (PBKDF2) in this one process: all at once, every
    # login waits for the others' proofs; a few at a time shows each login's own latency.
    await wave(n)
    await wave(16)

asyncio.run(main())
PY
)
storm_cpu=$(us_per_tx $(($(cpu_ticks "$STARTED_PID") - storm_t0)) $((2 * STORM)))
echo "$STORM_OUT" | sed 's/^/   /'
echo "   TideGate CPU per SCRAM login: $storm_cpu µs"

# ---- report ------------------------------------------------------------------------------
echo
echo "== Idle clients"
machine_line
printf '%-10s %20s %20s\n' "clients" "TideGate KiB/client" "PgBouncer KiB/client"
for n in $COUNTS; do printf '%-10s %20s %20s\n' "$n" "${PER[tidegate,$n]}" "${PER[pgbouncer,$n]}"; done
printf '\n%-10s %14s %22s %8s\n' "pgbench -S" "alone (tps)" "beside $max_n idle" "ratio"
for target in tidegate pgbouncer; do
    a=$(tps_median "$target,alone") b=$(tps_median "$target,idle")
    printf '%-10s %14s %22s %8s\n' "$target" "$a" "$b" "$(ratio "$b" "$a")"
done
echo "failed transactions: ${FAILED[tidegate,alone]:-0} ${FAILED[tidegate,idle]:-0} (TideGate), ${FAILED[pgbouncer,alone]:-0} ${FAILED[pgbouncer,idle]:-0} (PgBouncer)"
echo "SCRAM storm, $STORM logins (TideGate CPU $storm_cpu µs per login):"
echo "$STORM_OUT" | sed 's/^/   /'
echo "KiB/client = (VmRSS with the idle clients connected - VmRSS before) / clients, a fresh broker per count."
