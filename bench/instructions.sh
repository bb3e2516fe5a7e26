#!/usr/bin/env bash
# User-space instructions per transaction of TideGate and of PgBouncer, counted by Valgrind's
# callgrind under the same pgbench -S run: a figure the machine's load cannot move, for
# comparing the two brokers' own work (system calls and the kernel are not counted; see
# pgbench.sh for those and for throughput).
# Usage (as root): bench/instructions.sh        see bench/README.md for the knobs.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

SCALE=${SCALE:-1}
POOL=${POOL:-8}
CLIENTS=${CLIENTS:-8}
TXS=${TXS:-1000}      # transactions per client in the measured run
WARMUP=${WARMUP:-200} # transactions per client before it (connections, caches, statistics)

require_root
require_positive SCALE POOL CLIENTS TXS WARMUP
check_tidegate no-skip
check_tools valgrind

make_tmp tidegate-instructions
read -r PG_PORT < <(free_ports 1)
start_postgres
pgbench_init "$SCALE"

# Callgrind counts from the start, so each broker runs twice, WARMUP then WARMUP+TXS (the
# second with one more measured run of TXS): the difference is TXS transactions per client of
# steady state, without start-up, connection set-up or the exit.
# The profile is written by the process itself at exit; PgBouncer has switched to the
# postgres user by then, so the file is made beforehand and given to it.
callgrind_total() {  # out-file
    sed -n 's/^totals: *\([0-9]*\).*/\1/p; s/^summary: *\([0-9]*\).*/\1/p' "$1" | head -n 1
}

# Run `broker` (tidegate or pgbouncer) under callgrind with `runs` measured pgbench runs after
# the warm-up; print its total instruction count.
measure() {  # broker mode runs
    local broker=$1 mode=$2 runs=$3 port pid out
    read -r port < <(free_ports 1)
    out=$TMP/callgrind.$broker.$mode.$runs
    install -m 0666 -o postgres /dev/null "$out"
    if [[ $broker == tidegate ]]; then
        tg_config "$port" >"$TMP/tg.$port.toml"
        setsid valgrind --tool=callgrind --callgrind-out-file="$out" \
            "$TIDEGATE" serve --config "$TMP/tg.$port.toml" >"$TMP/$broker.$port.log" 2>&1 </dev/null &
    else
        pgbouncer_ini "pgb.$port" "$port" "$POOL"
        setsid valgrind --tool=callgrind --callgrind-out-file="$out" \
            "$PGBOUNCER" -q -u postgres "$TMP/pgb.$port.ini" >"$TMP/$broker.$port.log" 2>&1 </dev/null &
    fi
    pid=$!
    for _ in $(seq 240); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.5; done
    pg_isready -q -h 127.0.0.1 -p "$port" || { tail -n 20 "$TMP/$broker.$port.log" >&2; die "$broker did not start under valgrind"; }
    local n=$((WARMUP + runs * TXS))
    # One client run of n transactions: the same connections throughout.
    pgbench -n -S -M "$mode" -c "$CLIENTS" -j 2 -t "$n" -h 127.0.0.1 -p "$port" -U postgres bench \
        >"$TMP/pgbench.$broker.$mode.$runs" 2>&1 || { cat "$TMP/pgbench.$broker.$mode.$runs" >&2; die "pgbench through $broker failed"; }
    kill -INT "$pid"
    wait "$pid" 2>/dev/null || true
    local total
    total=$(callgrind_total "$out")
    [[ -n $total ]] || { tail -n 20 "$TMP/$broker.$port.log" >&2; die "no callgrind totals from $broker"; }
    echo "$total"
}

echo "== user-space instructions per transaction (callgrind), pgbench -S -c $CLIENTS, $TXS measured transactions per client"
declare -A PER_TX=()
for mode in simple extended; do
    for broker in pgbouncer tidegate; do
        a=$(measure "$broker" "$mode" 0)
        b=$(measure "$broker" "$mode" 1)
        [[ -n $a && -n $b ]] || die "$broker ($mode) was not measured"
        PER_TX[$broker.$mode]=$(awk -v a="$a" -v b="$b" -v n=$((TXS * CLIENTS)) 'BEGIN {printf "%.0f\n", (b - a) / n}')
        echo "   $mode  $broker  ${PER_TX[$broker.$mode]}"
    done
done

echo
echo "Machine: $(nproc) CPUs ($(uname -m)), $(valgrind --version), $("$PGBOUNCER" --version | head -n 1), TIDEGATE=$TIDEGATE"
printf '%-22s | %16s | %16s | %18s\n' workload "pgbouncer Ir/tx" "tidegate Ir/tx" "tidegate/pgbouncer"
for mode in simple extended; do
    printf '%-22s | %16s | %16s | %18s\n' "select-only $mode" "${PER_TX[pgbouncer.$mode]}" "${PER_TX[tidegate.$mode]}" \
        "$(ratio "${PER_TX[tidegate.$mode]}" "${PER_TX[pgbouncer.$mode]}")"
done
echo "Ir/tx = instructions the broker process executed in user space (its own code, libraries, libc)"
echo "per transaction; system calls and the kernel's work for them are not counted."
