#!/usr/bin/env bash
# TideGate result cache benchmark, in one run:
#  1. a TSBS-style per-host, per-hour aggregate over a 1M-row cpu table, one connection:
#     p50/p95 latency direct vs TideGate cache hit vs TideGate cache miss;
#  2. pgbench -S through TideGate with the cache on (Redis) vs off, with PgBouncer and direct
#     PostgreSQL for reference, interleaved.
# Everything runs on loopback in a throw-away temp dir that is removed on exit.
# Usage (as root): bench/cache.sh        see bench/README.md for the knobs.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

SCALE=${SCALE:-10}
POOL=${POOL:-8}
CLIENTS=${CLIENTS:-8}
DURATION=${DURATION:-20}           # seconds per pgbench -S run (part 2)
AGG_DURATION=${AGG_DURATION:-15}   # seconds per one-connection aggregate run (part 1)
ROUNDS=${ROUNDS:-2}
ROWS=${ROWS:-1000000}
HOSTS=${HOSTS:-100}
TIMESCALE=${TIMESCALE:-auto}       # auto | 1 (require TimescaleDB) | 0 (plain table)
REDIS=${REDIS:-1}                  # 1: cache in our own redis-server; 0: in-process cache
ADMISSION=${ADMISSION:-adaptive}   # cache.admission: adaptive | always

MAX_RESULT_BYTES=1048576
DATA_START="2024-01-01 00:00:00+00"      # data covers 3 days from here
Q_FROM="2024-01-01 00:00:00+00"          # the aggregate reads 2 of them
Q_TO="2024-01-03 00:00:00+00"

require_root
require_positive SCALE POOL CLIENTS DURATION AGG_DURATION ROUNDS ROWS HOSTS
[[ $HOSTS -le 10000 ]] || die "HOSTS must be at most 10000 (got $HOSTS)"
[[ $ROWS -ge $HOSTS ]] || die "ROWS ($ROWS) must be at least HOSTS ($HOSTS)"
[[ $REDIS =~ ^[01]$ ]] || die "REDIS must be 0 or 1 (got '$REDIS')"
[[ $ADMISSION =~ ^(adaptive|always)$ ]] || die "ADMISSION must be adaptive or always (got '$ADMISSION')"
check_tidegate allow-skip
if [[ $REDIS -eq 1 && ! -x $REDIS_SERVER ]]; then die "missing redis-server ($REDIS_SERVER); or run with REDIS=0"; fi
check_tools timeout md5sum
detect_timescale

make_tmp tidegate-cache-bench
TG_PID="" TG2_PID=""
read -r PG_PORT PGB_PORT TG_PORT TG2_PORT REDIS_PORT < <(free_ports 5)

# ---- 1. PostgreSQL and the cpu table -----------------------------------------------------
start_postgres
pgbench_init "$SCALE"

PER_HOST=$((ROWS / HOSTS))
NROWS=$((PER_HOST * HOSTS))
if [[ $USE_TS -eq 1 ]]; then
    TABLE_KIND="TimescaleDB hypertable (1-day chunks)"
    BUCKET="time_bucket(INTERVAL '1 hour', time)"
    OVERLOAD="time_bucket(interval,timestamptz)"
else
    TABLE_KIND="plain table"
    BUCKET="date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
    OVERLOAD="date_bin(interval,timestamptz,timestamptz)"
fi
echo "== cpu: $NROWS rows, $HOSTS hosts x $PER_HOST readings over 3 days from $DATA_START, $TABLE_KIND"
{
    echo "SET client_min_messages = warning;"
    if [[ $USE_TS -eq 1 ]]; then echo "CREATE EXTENSION timescaledb;"; fi
    echo "CREATE TABLE cpu (time timestamptz NOT NULL, hostname text NOT NULL,
                            usage_user double precision, usage_system double precision);"
    if [[ $USE_TS -eq 1 ]]; then
        echo "SELECT create_hypertable('cpu', 'time', chunk_time_interval => INTERVAL '1 day');"
    fi
    # Time-ordered: host h's i-th reading is at start + i * (3 days / PER_HOST).
    echo "INSERT INTO cpu
          SELECT TIMESTAMPTZ '$DATA_START' + i * (INTERVAL '259200 seconds' / $PER_HOST),
                 'host_' || lpad(h::text, 4, '0'), random() * 100, random() * 100
          FROM generate_series(0, $PER_HOST - 1) AS i, generate_series(1, $HOSTS) AS h
          ORDER BY 1, 2;"
    echo "CREATE INDEX ON cpu (hostname, time DESC);"
    echo "VACUUM ANALYZE cpu;"
} >"$TMP/cpu.sql"
SECONDS=0
timeout --foreground 1800 psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d bench \
    -f "$TMP/cpu.sql" >"$TMP/cpu.log" 2>&1 ||
    { cat "$TMP/cpu.log" >&2; die "creating the cpu table failed"; }
echo "   loaded in ${SECONDS}s: $(sql "$PG_PORT" -c "SELECT count(*) || ' rows, ' || count(DISTINCT hostname) || ' hosts, ' \
    || min(time) || ' .. ' || max(time) FROM cpu")"

# The cache only stores statements whose functions are all IMMUTABLE: make sure the overload
# the query resolves to is.
echo "== function volatility (pg_proc): i = immutable, s = stable, v = volatile"
sql "$PG_PORT" -F ' ' -c "SELECT proname, provolatile, count(*) FROM pg_proc
    WHERE proname IN ('date_bin', 'time_bucket') GROUP BY 1, 2 ORDER BY 1, 2" |
    awk '{printf "   %-12s %s: %d overload(s)\n", $1, $2, $3}'
sql "$PG_PORT" -F ' ' -c "SELECT oid::regprocedure, provolatile FROM pg_proc
    WHERE proname IN ('date_bin', 'time_bucket') AND provolatile <> 'i' ORDER BY 1::text" |
    sed 's/^/   not immutable: /'
VOL=$(sql "$PG_PORT" -c "SELECT provolatile FROM pg_proc WHERE oid = '$OVERLOAD'::regprocedure") ||
    die "cannot look up $OVERLOAD"
echo "   the query uses $OVERLOAD: provolatile = $VOL"
[[ $VOL == i ]] || die "$OVERLOAD is not IMMUTABLE here, so the cache would never store the query"

AGG="SELECT hostname, $BUCKET AS hour, avg(usage_user), max(usage_system) FROM cpu \
WHERE time >= '$Q_FROM' AND time < '$Q_TO'"
AGG_TAIL="GROUP BY 1, 2 ORDER BY 1, 2"
echo "$AGG $AGG_TAIL;" >"$TMP/agg-same.sql"
printf '\\set n random(1, 1000000000)\n%s AND :n > 0 %s;\n' "$AGG" "$AGG_TAIL" >"$TMP/agg-new.sql"
echo "== aggregate: $AGG $AGG_TAIL"
echo "   miss variant (a new text each time): $(tail -n 1 "$TMP/agg-new.sql")"
AGG_ROWS=$(sql "$PG_PORT" -c "SELECT count(*) FROM ($AGG $AGG_TAIL) q")
AGG_MD5=$(sql "$PG_PORT" -c "$AGG $AGG_TAIL" | md5sum | cut -d' ' -f1)
# DataRow: type, length, column count, then a length and the text of each of the 4 columns.
AGG_BYTES=$(sql "$PG_PORT" -c "SELECT coalesce(sum(23 + octet_length(h) + octet_length(b::text)
    + coalesce(octet_length(a::text), 0) + coalesce(octet_length(m::text), 0)), 0)
    FROM ($AGG $AGG_TAIL) AS q(h, b, a, m)")
echo "   returns $AGG_ROWS rows, about $((AGG_BYTES / 1024)) KiB of DataRows (result md5 $AGG_MD5)"
if [[ $AGG_BYTES -gt $MAX_RESULT_BYTES ]]; then
    warn "the result is larger than max_result_bytes ($MAX_RESULT_BYTES): TideGate will not store it" \
         "(lower HOSTS)"
fi

# ---- 2. PgBouncer and Redis ------------------------------------------------------------
start_pgbouncer "$POOL"
if [[ $REDIS -eq 1 ]]; then
    start_redis
    if [[ $TIDEGATE == skip ]]; then echo "   (unused: TIDEGATE=skip)"; fi
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    CACHE_BACKEND=redis
else
    REDIS_URL=""
    CACHE_BACKEND=memory
fi

# ---- 3. TideGate -----------------------------------------------------------------------
cache_config() {  # port cache-enabled: lib's tg_config plus [cache]
    tg_config "$1"
    cat <<EOF
[cache]
enabled = $2
redis_url = "$REDIS_URL"
max_result_bytes = $MAX_RESULT_BYTES
admission = "$ADMISSION"
EOF
    # A plain table's time column, so its settled ranges get the long TTL as a hypertable's do.
    if [[ $USE_TS -eq 0 ]]; then echo 'time_columns = ["cpu.time"]'; fi
}

declare -A CS=()   # the last SHOW tidegate.cache, name -> value
COUNTERS=(hits misses bypasses stores invalidations errors bytes_served bytes_stored shared unadmitted)
read_cache() {  # fills CS from TideGate (cache on)
    local k v
    CS=()
    while read -r k v; do [[ -n $k ]] && CS[$k]=$v; done < <(
        psql -X -q -A -t -F ' ' -h 127.0.0.1 -p "$TG_PORT" -U postgres -d bench \
            -c 'SHOW tidegate.cache' 2>"$TMP/show-cache.err" || true)
}
cache_line() {  # label: prints every counter
    local k line="backend=${CS[backend]:-?}"
    for k in "${COUNTERS[@]}"; do line+=" $k=${CS[$k]:-?}"; done
    echo "   SHOW tidegate.cache after $1: $line"
}
cget() { echo "${CS[$1]:-0}"; }

if [[ $TIDEGATE != skip ]]; then
    echo "== TideGate, cache on ($CACHE_BACKEND), on 127.0.0.1:$TG_PORT"
    cache_config "$TG_PORT" true >"$TMP/tidegate.toml"
    start_tidegate "TideGate (cache on)" "$TG_PORT" "$TMP/tidegate.toml" "$TMP/tidegate.log"
    TG_PID=$STARTED_PID
    read_cache
    if [[ ${CS[backend]:-} != "$CACHE_BACKEND" ]]; then
        cat "$TMP/show-cache.err" "$TMP/tidegate.log" >&2
        die "SHOW tidegate.cache through TideGate did not report the $CACHE_BACKEND backend (got '${CS[backend]:-nothing}')"
    fi
    cache_line startup
    echo "== TideGate, cache off, on 127.0.0.1:$TG2_PORT"
    cache_config "$TG2_PORT" false >"$TMP/tidegate-nocache.toml"
    start_tidegate "TideGate (cache off)" "$TG2_PORT" "$TMP/tidegate-nocache.toml" "$TMP/tidegate-nocache.log"
    TG2_PID=$STARTED_PID

    # The cache must give back exactly what PostgreSQL gives (psql's own key: fill, then hit).
    h0=$(cget hits)
    md5_fill=$(sql "$TG_PORT" -c "$AGG $AGG_TAIL" 2>>"$TMP/check.err" | md5sum | cut -d' ' -f1) || md5_fill="error"
    md5_hit=$(sql "$TG_PORT" -c "$AGG $AGG_TAIL" 2>>"$TMP/check.err" | md5sum | cut -d' ' -f1) || md5_hit="error"
    read_cache
    if [[ $md5_fill == "$AGG_MD5" && $md5_hit == "$AGG_MD5" && $(($(cget hits) - h0)) -ge 1 ]]; then
        echo "   result check: direct, TideGate (miss) and TideGate (hit) return identical rows"
    else
        warn "result check failed: md5 direct $AGG_MD5, miss $md5_fill, hit $md5_hit, hits +$(($(cget hits) - h0))"
        if [[ -s $TMP/check.err ]]; then sed 's/^/     /' "$TMP/check.err" >&2; fi
    fi
    cache_line "result check"
else
    echo "== TideGate skipped (TIDEGATE=skip)"
fi

# ---- 4. Part 1: aggregate latency over one connection -----------------------------------
cat >"$TMP/pct.py" <<'EOF'
# Per-transaction pgbench logs -> "n p50 p95 mean" in ms (nearest rank); column 3 is the
# latency in µs (failed transactions have a word there and are left out).
import math, sys
v = []
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            c = line.split()
            if len(c) >= 6 and c[2].isdigit():
                v.append(int(c[2]) / 1000.0)
v.sort()
if not v:
    print("0 - - -")
else:
    rank = lambda p: v[max(1, math.ceil(p / 100 * len(v))) - 1]
    print(len(v), "%.3f" % rank(50), "%.3f" % rank(95), "%.3f" % (sum(v) / len(v)))
EOF

LAT_TARGETS=(direct hit miss)
declare -A LAT_PORT=([direct]=$PG_PORT [hit]=$TG_PORT [miss]=$TG_PORT)
declare -A LAT_SCRIPT=([direct]=agg-same.sql [hit]=agg-same.sql [miss]=agg-new.sql)
declare -A LAT_NAME=([direct]="direct" [hit]="tidegate cache hit" [miss]="tidegate cache miss")

run_lat() {  # target round
    local t=$1 r=$2 prefix="$TMP/lat-$1-r$2" out="$TMP/lat-$1-r$2.out" stats d_hits d_miss avg
    # Warm-up on the same kind of connection (for "hit" this fills the entry pgbench's key
    # finds: the key includes the session's startup settings).
    pgbench -n -c 1 -t 2 -M simple -f "$TMP/${LAT_SCRIPT[$t]}" -h 127.0.0.1 -p "${LAT_PORT[$t]}" \
        -U postgres bench >"$out.warmup" 2>&1 || { warn "$t warm-up failed:"; tail -n 5 "$out.warmup" >&2; }
    if [[ $t != direct ]]; then read_cache; fi
    local h0 m0
    h0=$(cget hits) m0=$(cget misses)
    timeout --foreground -k 10 $((AGG_DURATION + 300)) pgbench -n -c 1 -j 1 -T "$AGG_DURATION" -M simple \
        -f "$TMP/${LAT_SCRIPT[$t]}" --log --log-prefix="$prefix" \
        -h 127.0.0.1 -p "${LAT_PORT[$t]}" -U postgres bench >"$out" 2>&1 || true
    if ! compgen -G "$prefix.*" >/dev/null; then
        warn "no transaction log from $t (round $r); last lines of $out:"
        tail -n 5 "$out" | sed 's/^/     /' >&2
        return 0
    fi
    read -r -a stats < <(python3 "$TMP/pct.py" "$prefix".*)
    # pgbench's own average, as a cross-check of the log's mean.
    avg=$(sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' "$out")
    printf '   round %d  %-20s  n %6s  p50 %10s ms  p95 %10s ms  mean %10s ms (pgbench: %s ms)' "$r" \
        "${LAT_NAME[$t]}" "${stats[0]}" "${stats[1]}" "${stats[2]}" "${stats[3]}" "${avg:-?}"
    if [[ $t == direct ]]; then echo; return 0; fi
    read_cache
    d_hits=$(($(cget hits) - h0)) d_miss=$(($(cget misses) - m0))
    echo "  (cache: +$d_hits hits, +$d_miss misses)"
    cache_line "${LAT_NAME[$t]}, round $r"
    if [[ $t == hit && $d_hits -lt $((stats[0] * 95 / 100)) ]]; then
        warn "only $d_hits of ${stats[0]} repeated aggregates were cache hits"
    fi
    if [[ $t == miss && ($d_hits -gt 0 || $d_miss -lt $((stats[0] * 95 / 100))) ]]; then
        warn "the miss run should only miss: ${stats[0]} runs, +$d_hits hits, +$d_miss misses"
    fi
}

echo "== part 1: aggregate, pgbench -n -c 1 -T $AGG_DURATION -M simple (per-transaction log)  x $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
    for t in "${LAT_TARGETS[@]}"; do
        if [[ $t != direct && $TIDEGATE == skip ]]; then continue; fi
        run_lat "$t" "$r"
    done
done
declare -A LAT_ALL=()   # target -> "n p50 p95 mean" over every round
for t in "${LAT_TARGETS[@]}"; do
    if compgen -G "$TMP/lat-$t-r*.*" >/dev/null; then
        LAT_ALL[$t]=$(python3 "$TMP/pct.py" "$TMP"/lat-"$t"-r*.*)
    else
        LAT_ALL[$t]="- - - -"
    fi
done

# ---- 5. Part 2: pgbench -S -----------------------------------------------------------------
TARGETS=(direct pgbouncer)
if [[ $TIDEGATE != skip ]]; then TARGETS+=(cache-off cache-on); fi
declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$PGB_PORT [cache-off]=$TG2_PORT [cache-on]=$TG_PORT)
declare -A PID=([pgbouncer]=$PGB_PID [cache-off]=$TG2_PID [cache-on]=$TG_PID)
declare -A TNAME=([direct]="direct" [pgbouncer]="pgbouncer" [cache-off]="tidegate cache off"
                  [cache-on]="tidegate cache on")
S_HITS=0 S_MISSES=0 S_BYPASSES=0

run_one() {  # target round
    local t=$1 r=$2 h0=0 m0=0 b0=0 extra=""
    if [[ $t == cache-on ]]; then read_cache; h0=$(cget hits) m0=$(cget misses) b0=$(cget bypasses); fi
    pgbench_run "$t" "${PORT[$t]}" "${PID[$t]:-}" "$TMP/select-$t-$r.log" "$t (round $r)" -S -M simple
    if [[ $t == cache-on ]]; then
        read_cache
        local dh dm db
        dh=$(($(cget hits) - h0)) dm=$(($(cget misses) - m0)) db=$(($(cget bypasses) - b0))
        S_HITS=$((S_HITS + dh)) S_MISSES=$((S_MISSES + dm)) S_BYPASSES=$((S_BYPASSES + db))
        extra="  cache +$dh hits +$dm misses +$db bypasses"
    fi
    printf '   round %d  %-18s  tps %10s  failed %s%s\n' "$r" "${TNAME[$t]}" "$RUN_TPS" "${RUN_FAIL:-?}" "$extra"
    if [[ $t == cache-on ]]; then cache_line "select-only, round $r"; fi
}

echo "== part 2: select-only, pgbench -n -c $CLIENTS -j 2 -T $DURATION -S -M simple  x $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do run_one "$t" "$r"; done
done

# ---- 6. Report -------------------------------------------------------------------------
echo
machine_line
echo "Settings: ROWS=$NROWS HOSTS=$HOSTS ($TABLE_KIND) AGG_DURATION=${AGG_DURATION}s SCALE=$SCALE POOL=$POOL" \
     "CLIENTS=$CLIENTS DURATION=${DURATION}s ROUNDS=$ROUNDS, cache backend $CACHE_BACKEND" \
     "(max_result_bytes=$MAX_RESULT_BYTES), TIDEGATE=$TIDEGATE"
echo
echo "Part 1: per-host hourly aggregate over 2 days ($AGG_ROWS result rows), one connection," \
     "all rounds' transactions pooled"
fmt='%-21s | %7s | %11s | %11s | %11s | %s\n'
# shellcheck disable=SC2059  # $fmt is a format string on purpose
printf "$fmt" target runs "p50 ms" "p95 ms" "mean ms" "p50 vs direct"
for t in "${LAT_TARGETS[@]}"; do
    read -r -a s <<<"${LAT_ALL[$t]}"
    read -r -a d <<<"${LAT_ALL[direct]}"
    # shellcheck disable=SC2059
    printf "$fmt" "${LAT_NAME[$t]}" "${s[0]}" "${s[1]}" "${s[2]}" "${s[3]}" "$(ratio "${s[1]}" "${d[1]}")"
done
read -r -a d <<<"${LAT_ALL[direct]}"
read -r -a h <<<"${LAT_ALL[hit]}"
read -r -a m <<<"${LAT_ALL[miss]}"
speedup=$(ratio "${d[1]}" "${h[1]}")
verdict=$(awk -v s="$speedup" 'BEGIN {if (s == "-") print "n/a"; else if (s+0 >= 20) print "met"; else print "NOT met"}')
echo "hit speedup   = direct p50 / hit p50  = ${speedup}$([[ $speedup == - ]] || echo x)   (goal >= 20x: $verdict)"
echo "miss overhead = miss p50 / direct p50 = $(ratio "${m[1]}" "${d[1]}")   (p95: $(ratio "${m[2]}" "${d[2]}"))"

echo
echo "Part 2: pgbench -S -M simple, -c $CLIENTS, median TPS of $ROUNDS"
declare -A med=()
for t in "${TARGETS[@]}"; do med[$t]=$(tps_median "$t"); done
for t in cache-off cache-on; do med[$t]=${med[$t]:-n/a}; done
fmt2='%-19s | %10s | %9s | %12s | %13s | %14s | %s\n'
# shellcheck disable=SC2059
printf "$fmt2" target tps "/ direct" "/ pgbouncer" "/ cache off" "broker µs/tx" failed
for t in direct pgbouncer cache-off cache-on; do
    cpu="-" fl="-"
    if [[ -n ${TXS[$t]:-} ]]; then
        fl=${FAILED[$t]}
        if [[ -n ${PID[$t]:-} ]]; then cpu=$(us_per_tx "${TICKS[$t]}" "${TXS[$t]}"); fi
    fi
    # shellcheck disable=SC2059
    printf "$fmt2" "${TNAME[$t]}" "${med[$t]}" "$(ratio "${med[$t]}" "${med[direct]}")" \
        "$(ratio "${med[$t]}" "${med[pgbouncer]}")" "$(ratio "${med[$t]}" "${med[cache-off]}")" "$cpu" "$fl"
done
echo "cache on / cache off = $(ratio "${med[cache-on]}" "${med[cache-off]}")"
if [[ $TIDEGATE != skip ]]; then
    lookups=$((S_HITS + S_MISSES))
    echo "select-only through the cache: $S_HITS hits, $S_MISSES misses, $S_BYPASSES bypasses" \
         "(hit ratio $(awk -v h="$S_HITS" -v n="$lookups" 'BEGIN {if (n>0) printf "%.1f%%", 100*h/n; else print "-"}'); aids are random over $((SCALE * 100000)) rows)"
    read_cache
    cache_line "everything"
fi
echo
if [[ $TIDEGATE == skip ]]; then echo "note: TideGate was skipped (TIDEGATE=skip, a debugging aid)"; fi
cpu_note
