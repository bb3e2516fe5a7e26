#!/usr/bin/env bash
# TideGate result cache benchmark, in one run:
#  1. a TSBS-style per-host, per-hour aggregate over a 1M-row cpu table, one connection:
#     p50/p95 latency direct vs TideGate cache hit vs TideGate cache miss;
#  2. pgbench -S through TideGate with the cache on (Redis) vs off, with PgBouncer and direct
#     PostgreSQL for reference, interleaved.
# Everything runs on loopback in a throw-away temp dir that is removed on exit.
# Usage (as root): bench/cache.sh        see bench/README.md for the knobs.
set -euo pipefail

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
TIDEGATE=${TIDEGATE:-$(cd "$(dirname "$0")/.." && pwd)/target/release/tidegate}   # "skip" = without TideGate
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}

MAX_RESULT_BYTES=1048576
DATA_START="2024-01-01 00:00:00+00"      # data covers 3 days from here
Q_FROM="2024-01-01 00:00:00+00"          # the aggregate reads 2 of them
Q_TO="2024-01-03 00:00:00+00"

die() { echo "cache.sh: $*" >&2; exit 1; }
warn() { echo "   WARNING: $*" >&2; }
as_pg() { runuser -u postgres -- "$@"; }

[[ $(id -u) -eq 0 ]] || die "run as root (PostgreSQL and PgBouncer are started as the postgres user)"
for n in SCALE POOL CLIENTS DURATION AGG_DURATION ROUNDS ROWS HOSTS; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer (got '${!n}')"
done
[[ $HOSTS -le 10000 ]] || die "HOSTS must be at most 10000 (got $HOSTS)"
[[ $ROWS -ge $HOSTS ]] || die "ROWS ($ROWS) must be at least HOSTS ($HOSTS)"
[[ $TIMESCALE =~ ^(auto|0|1)$ ]] || die "TIMESCALE must be auto, 0 or 1 (got '$TIMESCALE')"
[[ $REDIS =~ ^[01]$ ]] || die "REDIS must be 0 or 1 (got '$REDIS')"
if [[ $TIDEGATE != skip && ! -x $TIDEGATE ]]; then
    die "TideGate binary not found at $TIDEGATE; build it with: cargo build --release -p tidegate"
fi
for b in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBOUNCER"; do [[ -x $b ]] || die "missing $b"; done
if [[ $REDIS -eq 1 && ! -x $REDIS_SERVER ]]; then die "missing redis-server ($REDIS_SERVER); or run with REDIS=0"; fi
for b in pgbench psql pg_isready python3 timeout md5sum; do command -v "$b" >/dev/null || die "missing $b"; done

TS_CONTROL=/usr/share/postgresql/15/extension/timescaledb.control
USE_TS=0
if [[ $TIMESCALE != 0 ]]; then
    if [[ -f $TS_CONTROL ]] && compgen -G "$PGBIN/../lib/timescaledb*.so" >/dev/null; then
        USE_TS=1
    elif [[ $TIMESCALE == 1 ]]; then
        die "TIMESCALE=1 but TimescaleDB is not installed ($TS_CONTROL or its library is missing)"
    fi
fi

TMP=$(mktemp -d /tmp/tidegate-cache-bench.XXXXXX)
chown postgres: "$TMP"
TG_PID="" TG2_PID="" REDIS_PID=""
stop_pid() {  # pid: SIGTERM, up to 10 s, then SIGKILL
    kill -0 "$1" 2>/dev/null || return 0
    kill -TERM "$1"
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done
    kill -KILL "$1" 2>/dev/null
}
cleanup() {
    set +e
    local p
    for p in $TG_PID $TG2_PID; do stop_pid "$p"; done
    if [[ -s $TMP/pgbouncer.pid ]]; then stop_pid "$(<"$TMP/pgbouncer.pid")"; fi
    if [[ -n $REDIS_PID ]]; then stop_pid "$REDIS_PID"; fi
    if [[ -s $TMP/data/postmaster.pid ]]; then
        as_pg "$PGBIN/pg_ctl" -D "$TMP/data" -m fast -t 30 stop >/dev/null 2>&1
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Distinct free loopback ports (sockets held open together so they differ).
read -r PG_PORT PGB_PORT TG_PORT TG2_PORT REDIS_PORT < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')

wait_ready() {  # name port: up to 30 s for pg_isready
    for _ in $(seq 150); do
        pg_isready -q -h 127.0.0.1 -p "$2" -U postgres -d bench -t 2 && return 0
        sleep 0.2
    done
    die "$1 did not become ready on port $2"
}
sql() {  # port sql...: unaligned, tuples only, stop on error
    local port=$1
    shift
    psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d bench "$@"
}

# ---- 1. PostgreSQL ---------------------------------------------------------------------
PG_OPTS="-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$TMP \
 -c max_connections=200 -c shared_buffers=256MB"
if [[ $USE_TS -eq 1 ]]; then
    PG_OPTS+=" -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off"
fi
PG_NOTE=""
if [[ $USE_TS -eq 1 ]]; then PG_NOTE=", TimescaleDB preloaded"; fi
echo "== PostgreSQL 15 on 127.0.0.1:$PG_PORT (data in $TMP/data)$PG_NOTE"
as_pg "$PGBIN/initdb" -D "$TMP/data" -A trust --no-sync -U postgres >"$TMP/initdb.log" 2>&1 ||
    { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
as_pg "$PGBIN/pg_ctl" -D "$TMP/data" -l "$TMP/postgres.log" -w -t 60 -o "$PG_OPTS" start >/dev/null ||
    { tail -n 20 "$TMP/postgres.log" >&2; die "PostgreSQL did not start"; }
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'CREATE DATABASE bench'
echo "== pgbench -i -s $SCALE"
timeout --foreground 1800 pgbench -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench \
    >"$TMP/init.log" 2>&1 || { cat "$TMP/init.log" >&2; die "pgbench -i failed"; }

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

# ---- 3. Redis --------------------------------------------------------------------------
redis_ping() {
    python3 - "$REDIS_PORT" <<'EOF' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(b"PING\r\n")
sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
EOF
}
if [[ $REDIS -eq 1 ]]; then
    echo "== Redis on 127.0.0.1:$REDIS_PORT ($("$REDIS_SERVER" --version | cut -d' ' -f1-3), no persistence)"
    "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$TMP" --logfile "$TMP/redis.log" --daemonize no &
    REDIS_PID=$!
    for _ in $(seq 50); do redis_ping && break; sleep 0.2; done
    redis_ping || { tail -n 20 "$TMP/redis.log" >&2; die "Redis did not answer PING on port $REDIS_PORT"; }
    if [[ $TIDEGATE == skip ]]; then echo "   (unused: TIDEGATE=skip)"; fi
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    CACHE_BACKEND=redis
else
    REDIS_URL=""
    CACHE_BACKEND=memory
fi

# ---- 4. TideGate -----------------------------------------------------------------------
tg_config() {  # port cache-enabled
    cat <<EOF
[listen]
sql = "127.0.0.1:$1"
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
[cache]
enabled = $2
redis_url = "$REDIS_URL"
max_result_bytes = $MAX_RESULT_BYTES
EOF
    # A plain table's time column, so its settled ranges get the long TTL as a hypertable's do.
    if [[ $USE_TS -eq 0 ]]; then echo 'time_columns = ["cpu.time"]'; fi
    echo '[[users]]'
    echo 'name = "postgres"'
}
start_tg() {  # name port config log -> sets STARTED_PID
    "$TIDEGATE" serve --config "$3" >"$4" 2>&1 &
    STARTED_PID=$!
    sleep 0.2
    kill -0 "$STARTED_PID" 2>/dev/null || { cat "$4" >&2; die "$1 exited at startup"; }
    wait_ready "$1" "$2"
}

declare -A CS=()   # the last SHOW tidegate.cache, name -> value
COUNTERS=(hits misses bypasses stores invalidations errors bytes_served bytes_stored shared)
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
    tg_config "$TG_PORT" true >"$TMP/tidegate.toml"
    start_tg "TideGate (cache on)" "$TG_PORT" "$TMP/tidegate.toml" "$TMP/tidegate.log"
    TG_PID=$STARTED_PID
    read_cache
    if [[ ${CS[backend]:-} != "$CACHE_BACKEND" ]]; then
        cat "$TMP/show-cache.err" "$TMP/tidegate.log" >&2
        die "SHOW tidegate.cache through TideGate did not report the $CACHE_BACKEND backend (got '${CS[backend]:-nothing}')"
    fi
    cache_line startup
    echo "== TideGate, cache off, on 127.0.0.1:$TG2_PORT"
    tg_config "$TG2_PORT" false >"$TMP/tidegate-nocache.toml"
    start_tg "TideGate (cache off)" "$TG2_PORT" "$TMP/tidegate-nocache.toml" "$TMP/tidegate-nocache.log"
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

# ---- 5. Part 1: aggregate latency over one connection -----------------------------------
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
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a+0>0 && b+0>0) printf "%.2f\n", a/b; else print "-"}'; }

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

# ---- 6. Part 2: pgbench -S -----------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() {  # utime+stime of a process (all threads), fields 14 and 15 of /proc/PID/stat
    local s f
    s=$(<"/proc/$1/stat")
    read -r -a f <<<"${s##*) }"   # drop "pid (comm) " so f[0] is field 3
    echo $((f[11] + f[12]))
}
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "-"; else printf "%.1f\n", (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
us_per_tx() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN {if (n>0) printf "%.1f\n", t/hz*1e6/n; else print "-"}'; }

TARGETS=(direct pgbouncer)
if [[ $TIDEGATE != skip ]]; then TARGETS+=(cache-off cache-on); fi
declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$PGB_PORT [cache-off]=$TG2_PORT [cache-on]=$TG_PORT)
declare -A PID=([pgbouncer]=$PGB_PID [cache-off]=$TG2_PID [cache-on]=$TG_PID)
declare -A TNAME=([direct]="direct" [pgbouncer]="pgbouncer" [cache-off]="tidegate cache off"
                  [cache-on]="tidegate cache on")
declare -A TPS=() FAILED=() TXS=() TICKS=()
S_HITS=0 S_MISSES=0 S_BYPASSES=0

run_one() {  # target round
    local t=$1 r=$2 out="$TMP/select-$1-$2.log" t0=0 t1=0 tps tx fail h0=0 m0=0 b0=0 extra=""
    if [[ -n ${PID[$t]:-} ]]; then t0=$(cpu_ticks "${PID[$t]}"); fi
    if [[ $t == cache-on ]]; then read_cache; h0=$(cget hits) m0=$(cget misses) b0=$(cget bypasses); fi
    timeout --foreground -k 10 $((DURATION + 120)) pgbench -n -c "$CLIENTS" -j 2 -T "$DURATION" -S -M simple \
        -h 127.0.0.1 -p "${PORT[$t]}" -U postgres bench >"$out" 2>&1 || true
    if [[ -n ${PID[$t]:-} ]]; then t1=$(cpu_ticks "${PID[$t]}"); fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$out")
    tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    fail=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
    if [[ -z $tps ]]; then
        warn "no tps from $t (round $r); last lines of $out:"
        tail -n 5 "$out" | sed 's/^/     /' >&2
        tps=0
    fi
    TPS[$t]+="$tps "
    FAILED[$t]=$(( ${FAILED[$t]:-0} + ${fail:-0} ))
    TXS[$t]=$(( ${TXS[$t]:-0} + ${tx:-0} ))
    TICKS[$t]=$(( ${TICKS[$t]:-0} + t1 - t0 ))
    if [[ $t == cache-on ]]; then
        read_cache
        local dh dm db
        dh=$(($(cget hits) - h0)) dm=$(($(cget misses) - m0)) db=$(($(cget bypasses) - b0))
        S_HITS=$((S_HITS + dh)) S_MISSES=$((S_MISSES + dm)) S_BYPASSES=$((S_BYPASSES + db))
        extra="  cache +$dh hits +$dm misses +$db bypasses"
    fi
    printf '   round %d  %-18s  tps %10s  failed %s%s\n' "$r" "${TNAME[$t]}" "$tps" "${fail:-?}" "$extra"
    if [[ $t == cache-on ]]; then cache_line "select-only, round $r"; fi
}

echo "== part 2: select-only, pgbench -n -c $CLIENTS -j 2 -T $DURATION -S -M simple  x $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do run_one "$t" "$r"; done
done

# ---- 7. Report -------------------------------------------------------------------------
echo
echo "Machine: $(nproc) CPUs ($(uname -m)), $(pgbench --version), $("$PGBOUNCER" --version | head -n 1)"
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
for t in "${TARGETS[@]}"; do med[$t]=$(tr ' ' '\n' <<<"${TPS[$t]}" | grep . | median); done
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
echo "µs/tx = broker process CPU (user+sys, all threads, /proc/PID/stat) / transactions processed."
