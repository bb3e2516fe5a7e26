# shellcheck shell=bash
# Shared setup for the bench/*.sh scripts. Source it, do not run it:
#     source "$(dirname "$0")/lib.sh"
# Sourcing only sets the defaults below and defines functions. A script then calls, in order:
# require_root, its knob checks, check_tidegate, check_tools, make_tmp, sets its ports from
# free_ports (PG_PORT and PGB_PORT, plus REDIS_PORT for start_redis), and the start_* functions.
# Everything listens on 127.0.0.1; cleanup (run on exit) stops what the start_* functions started
# and removes TMP.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TIDEGATE=${TIDEGATE:-$BENCH_ROOT/target/release/tidegate}   # "skip" = without TideGate, where supported
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGBOUNCER=${PGBOUNCER:-/usr/sbin/pgbouncer}
REDIS_SERVER=${REDIS_SERVER:-$(command -v redis-server || echo /usr/bin/redis-server)}

# Settings for the clusters start_postgres and start_replica start (http.sh overrides it).
PG_CONF="-c max_connections=200 -c shared_buffers=256MB"
USE_TS=0             # 1: clusters preload TimescaleDB (set by detect_timescale)
TMP=""               # the run's temp dir (set by make_tmp)
TG_PIDS=()           # TideGates started by spawn_tidegate
PG_DIRS=()           # data dirs of the clusters started, oldest first
REDIS_PID=""         # redis-server started by start_redis
PGB_PID=""           # PgBouncer started by start_pgbouncer
STARTED_PID=""       # the last TideGate spawn_tidegate started
CLK_TCK=$(getconf CLK_TCK)
declare -A TPS=() FAILED=() TXS=() TICKS=()   # pgbench_run's totals per key
RUN_TPS="" RUN_FAIL=""                        # pgbench_run's last run

# ---- messages and checks ---------------------------------------------------------------

# Print "<script>: message" on stderr and exit 1.
die() { echo "${0##*/}: $*" >&2; exit 1; }
# Print an indented warning on stderr.
warn() { echo "   WARNING: $*" >&2; }
# Run a command as the postgres OS user.
as_pg() { runuser -u postgres -- "$@"; }
# Exit unless running as root.
require_root() {
    [[ $(id -u) -eq 0 ]] || die "run as root (PostgreSQL and PgBouncer are started as the postgres user)"
}
# Exit unless each named variable holds a positive integer.
require_positive() {
    local n
    for n in "$@"; do
        [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer (got '${!n}')"
    done
}
# Exit unless TIDEGATE is an executable; with allow-skip (not no-skip), "skip" passes too.
check_tidegate() {  # allow-skip|no-skip
    if [[ $TIDEGATE == skip && $1 == allow-skip ]]; then return 0; fi
    [[ -x $TIDEGATE ]] || die "TideGate binary not found at $TIDEGATE; build it with: cargo build --release -p tidegate"
}
# Exit unless initdb, pg_ctl, PgBouncer, pgbench, psql, pg_isready, python3 and the given commands exist.
check_tools() {
    local b
    for b in "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBOUNCER"; do [[ -x $b ]] || die "missing $b"; done
    for b in pgbench psql pg_isready python3 "$@"; do command -v "$b" >/dev/null || die "missing $b"; done
}
# Check TIMESCALE (auto|0|1) and set USE_TS=1 if it is not 0 and TimescaleDB is installed; exit if 1 and not.
detect_timescale() {
    local control=/usr/share/postgresql/15/extension/timescaledb.control
    [[ $TIMESCALE =~ ^(auto|0|1)$ ]] || die "TIMESCALE must be auto, 0 or 1 (got '$TIMESCALE')"
    USE_TS=0
    if [[ $TIMESCALE == 0 ]]; then return 0; fi
    if [[ -f $control ]] && compgen -G "$PGBIN/../lib/timescaledb*.so" >/dev/null; then
        USE_TS=1
    elif [[ $TIMESCALE == 1 ]]; then
        die "TIMESCALE=1 but TimescaleDB is not installed ($control or its library is missing)"
    fi
}

# ---- temp dir, ports, cleanup ----------------------------------------------------------

# Create TMP=/tmp/<name>.XXXXXX owned by postgres; install the cleanup trap (Ctrl-C/SIGTERM exit 130).
make_tmp() {
    TMP=$(mktemp -d "/tmp/$1.XXXXXX")
    chown postgres: "$TMP"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}
# Print N distinct free loopback ports (sockets held open together so they differ).
free_ports() {
    python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])' "$1"
}
# Stop a process: SIGTERM, up to 10 s, then SIGKILL.
stop_pid() {
    kill -0 "$1" 2>/dev/null || return 0
    kill -TERM "$1"
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.2; done
    kill -KILL "$1" 2>/dev/null
}
# EXIT trap: stop the TideGates, PgBouncer, Redis, then the clusters newest first; remove TMP.
cleanup() {
    set +e
    local p i
    for p in "${TG_PIDS[@]}"; do stop_pid "$p"; done
    if [[ -s $TMP/pgbouncer.pid ]]; then stop_pid "$(<"$TMP/pgbouncer.pid")"; fi
    if [[ -n $REDIS_PID ]]; then stop_pid "$REDIS_PID"; fi
    for ((i = ${#PG_DIRS[@]} - 1; i >= 0; i--)); do
        if [[ -s ${PG_DIRS[i]}/postmaster.pid ]]; then
            as_pg "$PGBIN/pg_ctl" -D "${PG_DIRS[i]}" -m fast -t 30 stop >/dev/null 2>&1
        fi
    done
    if [[ -n $TMP ]]; then rm -rf "$TMP"; fi
}

# ---- readiness and SQL -----------------------------------------------------------------

# Wait up to 30 s for pg_isready on 127.0.0.1:port (database bench); exit if it never answers.
wait_ready() {  # name port
    for _ in $(seq 150); do
        pg_isready -q -h 127.0.0.1 -p "$2" -U postgres -d bench -t 2 && return 0
        sleep 0.2
    done
    die "$1 did not become ready on port $2"
}
# Wait up to 10 s for a 2xx from url; else print log and exit.
wait_http() {  # name url log
    for _ in $(seq 100); do curl -sf "$2" >/dev/null && return 0; sleep 0.1; done
    cat "$3" >&2
    die "$1 did not start"
}
# psql to database bench on 127.0.0.1:port: unaligned, tuples only, stop on error.
sql() {  # port psql-args...
    local port=$1
    shift
    psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d bench "$@"
}

# ---- servers ---------------------------------------------------------------------------

# pg_ctl start a cluster in dir on port with PG_CONF (and TimescaleDB if USE_TS=1); exit if it fails.
pg_ctl_start() {  # dir port log name
    local opts="-c listen_addresses=127.0.0.1 -p $2 -c unix_socket_directories=$TMP $PG_CONF"
    if [[ $USE_TS -eq 1 ]]; then
        opts+=" -c shared_preload_libraries=timescaledb -c timescaledb.telemetry_level=off"
    fi
    as_pg "$PGBIN/pg_ctl" -D "$1" -l "$3" -w -t 60 -o "$opts" start >/dev/null ||
        { tail -n 20 "$3" >&2; die "$4 did not start"; }
}
# initdb TMP/data (trust auth), start it on PG_PORT and create the database bench.
start_postgres() {
    local note=""
    if [[ $USE_TS -eq 1 ]]; then note=", TimescaleDB preloaded"; fi
    echo "== PostgreSQL 15 on 127.0.0.1:$PG_PORT (data in $TMP/data)$note"
    PG_DIRS+=("$TMP/data")
    as_pg "$PGBIN/initdb" -D "$TMP/data" -A trust --no-sync -U postgres >"$TMP/initdb.log" 2>&1 ||
        { cat "$TMP/initdb.log" >&2; die "initdb failed"; }
    pg_ctl_start "$TMP/data" "$PG_PORT" "$TMP/postgres.log" PostgreSQL
    psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c 'CREATE DATABASE bench'
}
# Start streaming replica <index> (pg_basebackup -R of the primary into TMP/rep<index>) on port.
start_replica() {  # index port
    local i=$1 port=$2
    echo "== streaming replica $((i + 1)) on 127.0.0.1:$port (pg_basebackup -R)"
    PG_DIRS+=("$TMP/rep$i")
    as_pg "$PGBIN/pg_basebackup" -D "$TMP/rep$i" -R -X stream -c fast -h 127.0.0.1 -p "$PG_PORT" -U postgres \
        >"$TMP/basebackup$i.log" 2>&1 || { cat "$TMP/basebackup$i.log" >&2; die "pg_basebackup failed"; }
    pg_ctl_start "$TMP/rep$i" "$port" "$TMP/replica$i.log" "replica $i"
}
# pgbench -i -s <scale> into bench on PG_PORT (up to 30 min).
pgbench_init() {  # scale
    echo "== pgbench -i -s $1"
    timeout --foreground 1800 pgbench -i -q -s "$1" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench \
        >"$TMP/init.log" 2>&1 || { cat "$TMP/init.log" >&2; die "pgbench -i failed"; }
}
# Write TMP/<name>.ini: PgBouncer on port in front of bench on PG_PORT (transaction mode,
# trust auth, no Unix socket), logging to TMP/<name>.log.
pgbouncer_ini() {  # name port pool-size
    echo '"postgres" ""' >"$TMP/userlist.txt"
    cat >"$TMP/$1.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
auth_type = trust
auth_file = $TMP/userlist.txt
pool_mode = transaction
default_pool_size = $3
max_client_conn = ${PGB_MAX_CLIENTS:-200}
ignore_startup_parameters = extra_float_digits
logfile = $TMP/$1.log
pidfile = $TMP/$1.pid
EOF
    chown postgres: "$TMP/userlist.txt" "$TMP/$1.ini"
}
# Start PgBouncer on PGB_PORT in front of bench on PG_PORT (transaction mode, trust auth); sets PGB_PID.
start_pgbouncer() {  # pool-size
    echo "== PgBouncer on 127.0.0.1:$PGB_PORT"
    pgbouncer_ini pgbouncer "$PGB_PORT" "$1"
    # Started as root with -u (it switches to postgres), so that it inherits this shell's
    # open-files limit (runuser would apply the login limits).
    "$PGBOUNCER" -d -q -u postgres "$TMP/pgbouncer.ini" || die "PgBouncer did not start (see $TMP/pgbouncer.log)"
    wait_ready PgBouncer "$PGB_PORT"
    # shellcheck disable=SC2034  # read by the scripts
    PGB_PID=$(<"$TMP/pgbouncer.pid")
}
# Exit 0 if the Redis on REDIS_PORT answers PING.
redis_ping() {
    python3 - "$REDIS_PORT" <<'EOF' 2>/dev/null
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.sendall(b"PING\r\n")
sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)
EOF
}
# Start REDIS_SERVER on REDIS_PORT without persistence and wait up to 10 s for PING; sets REDIS_PID.
start_redis() {
    echo "== Redis on 127.0.0.1:$REDIS_PORT ($("$REDIS_SERVER" --version | cut -d' ' -f1-3), no persistence)"
    # Its own session, as every server here (see spawn_tidegate).
    setsid "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$TMP" --logfile "$TMP/redis.log" --daemonize no &
    REDIS_PID=$!
    for _ in $(seq 50); do redis_ping && break; sleep 0.2; done
    redis_ping || { tail -n 20 "$TMP/redis.log" >&2; die "Redis did not answer PING on port $REDIS_PORT"; }
}
# Print TideGate's config for SQL on port: upstream bench on PG_PORT, [pool] size = POOL, log
# warn; trust auth and the user postgres, or with "scram" SCRAM and no user (append [[users]]).
tg_config() {  # port [scram]
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
[log]
level = "warn"
EOF
    if [[ ${2:-} != scram ]]; then
        printf '[auth]\nmethod = "trust"\n[[users]]\nname = "postgres"\n'
    fi
}
# Start `tidegate serve --config config` in the background; exit if it is gone after settle s (0.2); sets STARTED_PID.
# In a session of its own, as PgBouncer (-d) and PostgreSQL (pg_ctl) are: with the kernel's
# autogroup scheduling (sched_autogroup_enabled) a process in this script's session shares one
# CPU share with the pgbench clients it serves, and the brokers would not be scheduled alike.
spawn_tidegate() {  # name config log [settle]
    setsid "$TIDEGATE" serve --config "$2" >"$3" 2>&1 &
    STARTED_PID=$!
    TG_PIDS+=("$STARTED_PID")
    sleep "${4:-0.2}"
    kill -0 "$STARTED_PID" 2>/dev/null || { cat "$3" >&2; die "$1 exited at startup"; }
}
# spawn_tidegate, then wait_ready on its SQL port; sets STARTED_PID.
start_tidegate() {  # name port config log [settle]
    spawn_tidegate "$1" "$3" "$4" "${5:-0.2}"
    wait_ready "$1" "$2"
}

# ---- measuring and reporting ------------------------------------------------------------

# Print utime+stime of a process (all threads) in ticks: fields 14 and 15 of /proc/PID/stat.
cpu_ticks() {  # pid
    local s f
    s=$(<"/proc/$1/stat")
    read -r -a f <<<"${s##*) }"   # drop "pid (comm) " so f[0] is field 3
    echo $((f[11] + f[12]))
}
# One `pgbench -n -c CLIENTS -j 2 -T DURATION args` run against port; sets RUN_TPS (0 if missing)
# and RUN_FAIL, and adds tps, failed and processed transactions and pid's CPU ticks under key.
pgbench_run() {  # key port pid-or-empty out label pgbench-args...
    local key=$1 port=$2 pid=$3 out=$4 label=$5 t0=0 t1=0 tx
    shift 5
    if [[ -n $pid ]]; then t0=$(cpu_ticks "$pid"); fi
    timeout --foreground -k 10 $((DURATION + 120)) pgbench -n -c "$CLIENTS" -j 2 -T "$DURATION" "$@" \
        -h 127.0.0.1 -p "$port" -U postgres bench >"$out" 2>&1 || true
    if [[ -n $pid ]]; then t1=$(cpu_ticks "$pid"); fi
    RUN_TPS=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$out")
    tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    RUN_FAIL=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out")
    if [[ -z $RUN_TPS ]]; then
        warn "no tps from $label; last lines of $out:"
        tail -n 5 "$out" | sed 's/^/     /' >&2
        RUN_TPS=0
    fi
    TPS[$key]+="$RUN_TPS "
    FAILED[$key]=$(( ${FAILED[$key]:-0} + ${RUN_FAIL:-0} ))
    TXS[$key]=$(( ${TXS[$key]:-0} + ${tx:-0} ))
    TICKS[$key]=$(( ${TICKS[$key]:-0} + t1 - t0 ))
}
# Print the median of the numbers on stdin, one a line, with one decimal ("-" if none).
median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) print "-"; else printf "%.1f\n", (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
# Print the median TPS recorded under key by pgbench_run.
tps_median() { tr ' ' '\n' <<<"${TPS[$1]:-}" | grep . | median; }  # key
# Print the median over rounds of key a's TPS / key b's TPS in the same round (pgbench_run
# keys): steadier than the ratio of medians when the machine's speed drifts between rounds.
paired_ratio() {  # key-a key-b
    paste -d' ' <(tr ' ' '\n' <<<"${TPS[$1]:-}" | grep .) <(tr ' ' '\n' <<<"${TPS[$2]:-}" | grep .) |
        awk '$1>0 && $2>0 {print $1/$2}' | sort -g |
        awk '{v[NR]=$1} END {if (NR==0) print "-"; else printf "%.2f\n", (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}
# Print a/b with two decimals, or "-" unless both are positive numbers.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a+0>0 && b+0>0) printf "%.2f\n", a/b; else print "-"}'; }
# Print CPU µs per transaction from ticks and a transaction count ("-" if no transactions).
us_per_tx() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN {if (n>0) printf "%.1f\n", t/hz*1e6/n; else print "-"}'; }  # ticks transactions
# Print the report's "Machine:" line: CPUs, architecture, pgbench and PgBouncer versions.
machine_line() { echo "Machine: $(nproc) CPUs ($(uname -m)), $(pgbench --version), $("$PGBOUNCER" --version | head -n 1)"; }
# Print the report's closing line that defines µs/tx.
cpu_note() { echo "µs/tx = broker process CPU (user+sys, all threads, /proc/PID/stat) / transactions processed."; }
