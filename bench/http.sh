#!/usr/bin/env bash
# TideGate HTTP/JSON benchmark, in one run, on loopback in a throw-away temp dir:
#  1. ingest: the same ROWS points loaded (a) directly with psql \copy (CSV), (b) with psql
#     \copy through PgBouncer, (c) as NDJSON batches of BATCH rows POSTed to
#     /v1/series/time_series_data/points (one COPY per request, acknowledged after commit);
#     rows/s and the ratio TideGate / direct;
#  2. p50 latency of get_range, get_aggregated and get_latest through HTTP (curl, one
#     connection per request) vs the same SQL direct and through PgBouncer (pgbench, one
#     connection, per-transaction log).
# Usage (as root): bench/http.sh        knobs: ROWS BATCH SERIES RUNS ROUNDS TIMESCALE
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

ROWS=${ROWS:-500000}
BATCH=${BATCH:-50000}
SERIES=${SERIES:-50}
RUNS=${RUNS:-200}          # requests per latency measurement
ROUNDS=${ROUNDS:-3}        # ingest rounds (alternating)
TIMESCALE=${TIMESCALE:-auto}
PG_CONF="-c shared_buffers=256MB"

require_root
require_positive ROWS BATCH SERIES RUNS ROUNDS
check_tidegate no-skip
check_tools curl
detect_timescale

make_tmp tidegate-http-bench
read -r PG_PORT PGB_PORT TG_PORT HTTP_PORT < <(free_ports 4)

start_postgres

TOKEN=bench-token-0123456789abcdef
cat >"$TMP/tidegate.toml" <<EOF
[listen]
sql = "127.0.0.1:$TG_PORT"
http = "127.0.0.1:$HTTP_PORT"
[upstream.primary]
host = "127.0.0.1"
port = $PG_PORT
user = "postgres"
database = "bench"
[pool]
size = 8
[http]
max_body_bytes = 268435456
[[http.tokens]]
user = "bench"
token = "$TOKEN"
[[users]]
name = "bench"
password = "bench"
EOF
echo "== tidegate migrate (v001-v003: time_series_data, indexes, partitioning)"
"$TIDEGATE" migrate --config "$TMP/tidegate.toml" | sed 's/^/   /'
spawn_tidegate TideGate "$TMP/tidegate.toml" "$TMP/tidegate.log"
wait_http TideGate "http://127.0.0.1:$HTTP_PORT/healthz" "$TMP/tidegate.log"
start_pgbouncer 8

# ---- data: the same points as CSV (for \copy) and as NDJSON batches ----------------------
echo "== $ROWS points, $SERIES series, 3 days; NDJSON in batches of $BATCH"
python3 - "$TMP" "$ROWS" "$BATCH" "$SERIES" <<'PYEOF'
import sys, datetime, random, json
tmp, rows, batch, series = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
random.seed(7)
start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
step = 259200 / rows
csv = open(f"{tmp}/points.csv", "w")
out, n, part = None, 0, 0
for i in range(rows):
    t = (start + datetime.timedelta(seconds=i * step)).isoformat()
    s = i % series + 1
    v = round(random.uniform(0, 100), 3)
    csv.write(f'{t},{s},{v},"{{""sensor"": ""s{s}""}}"\n')
    if n == 0:
        out = open(f"{tmp}/batch-{part:05d}.ndjson", "w")
        part += 1
    out.write(json.dumps({"time": t, "series_id": s, "value": v, "metadata": {"sensor": f"s{s}"}}) + "\n")
    n += 1
    if n == batch:
        out.close(); n = 0
if out: out.close()
PYEOF

now() { date +%s.%N; }
rate() { python3 -c "print(f'{$1 / ($3 - $2):.0f}')"; }
truncate_points() { sql "$PG_PORT" -c "TRUNCATE time_series_data"; sql "$PG_PORT" -c "CHECKPOINT"; }
copy_via() {  # port
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$1" -U postgres -d bench \
        -c "\\copy time_series_data (time, series_id, value, metadata) FROM '$TMP/points.csv' CSV"
}
http_ingest() {
    local f
    for f in "$TMP"/batch-*.ndjson; do
        curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/x-ndjson' \
            --data-binary "@$f" "http://127.0.0.1:$HTTP_PORT/v1/series/time_series_data/points" ||
            die "an ingest request failed"
    done
}
declare -A BEST=([direct]=0 [pgbouncer]=0 [tidegate]=0)
echo "== ingest ($ROUNDS rounds, alternating; best rows/s of each)"
for r in $(seq "$ROUNDS"); do
    for who in direct pgbouncer tidegate; do
        truncate_points
        t0=$(now)
        case $who in
            direct) copy_via "$PG_PORT" ;;
            pgbouncer) copy_via "$PGB_PORT" ;;
            tidegate) http_ingest ;;
        esac
        t1=$(now)
        got=$(sql "$PG_PORT" -c "SELECT count(*) FROM time_series_data")
        [[ $got -eq $ROWS ]] || die "$who loaded $got rows, not $ROWS"
        rs=$(rate "$ROWS" "$t0" "$t1")
        printf '   round %d  %-10s %9s rows/s\n' "$r" "$who" "$rs"
        (( rs > BEST[$who] )) && BEST[$who]=$rs
    done
done
sql "$PG_PORT" -c "VACUUM ANALYZE time_series_data"

# ---- latency: the endpoint's SQL, direct vs PgBouncer vs HTTP -----------------------------
FROM="2024-01-02T00:00:00Z"; TO="2024-01-02T06:00:00Z"
if [[ $USE_TS -eq 1 ]]; then
    BUCKET="time_bucket('300000 milliseconds'::interval, \"time\")"
else
    BUCKET="date_bin('300000 milliseconds'::interval, \"time\", TIMESTAMPTZ '2000-01-03 00:00:00+00')"
fi
RANGE_SQL="SELECT \"time\", \"series_id\", \"value\", \"metadata\" FROM \"public\".\"time_series_data\" WHERE \"time\" >= '$FROM'::timestamptz AND \"time\" < '$TO'::timestamptz AND \"series_id\" = ANY ('{\"7\"}') ORDER BY \"time\" ASC, \"series_id\""
AGG_SQL="SELECT $BUCKET AS bucket, \"series_id\" AS \"series_id\", avg(\"value\") AS \"value_avg\", max(\"value\") AS \"value_max\" FROM \"public\".\"time_series_data\" WHERE \"time\" >= '$FROM'::timestamptz AND \"time\" < '$TO'::timestamptz GROUP BY 1, 2 ORDER BY 1, 2"
LATEST_SQL="WITH RECURSIVE ids AS ( (SELECT \"series_id\" AS id FROM \"public\".\"time_series_data\" ORDER BY \"series_id\" LIMIT 1) UNION ALL SELECT (SELECT \"series_id\" FROM \"public\".\"time_series_data\" WHERE \"series_id\" > ids.id ORDER BY \"series_id\" LIMIT 1) FROM ids WHERE ids.id IS NOT NULL) SELECT p.\"time\", p.\"series_id\", p.\"value\", p.\"metadata\" FROM ids CROSS JOIN LATERAL (SELECT * FROM \"public\".\"time_series_data\" x WHERE x.\"series_id\" = ids.id ORDER BY x.\"time\" DESC LIMIT 1) p WHERE ids.id IS NOT NULL ORDER BY p.\"series_id\", p.\"time\" DESC"
if [[ $USE_TS -eq 1 ]]; then  # TideGate asks TimescaleDB for DISTINCT ON (SkipScan) when limit = 1
    LATEST_SQL="SELECT DISTINCT ON (\"series_id\") p.\"time\", p.\"series_id\", p.\"value\", p.\"metadata\" FROM \"public\".\"time_series_data\" p ORDER BY p.\"series_id\", p.\"time\" DESC"
fi
declare -A URL=(
    [range]="v1/series/time_series_data?from=$FROM&to=$TO&series_id=7"
    [aggregate]="v1/series/time_series_data/aggregate?from=$FROM&to=$TO&interval=5m&agg=value:avg,value:max"
    [latest]="v1/series/time_series_data/latest"
)
declare -A SQLS=([range]=$RANGE_SQL [aggregate]=$AGG_SQL [latest]=$LATEST_SQL)
p50_pgbench() {  # port file → p50 ms from pgbench's per-transaction log
    (cd "$TMP" && rm -f pgbench_log.* && pgbench -n -c 1 -t "$RUNS" -f "$2" -l -h 127.0.0.1 -p "$1" -U postgres bench >/dev/null 2>&1) ||
        die "pgbench on port $1 failed"
    cat "$TMP"/pgbench_log.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]/1000}'
}
p50_http() {  # path → p50 ms over RUNS curl requests
    for _ in $(seq "$RUNS"); do
        curl -sf -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$HTTP_PORT/$1" ||
            die "GET /$1 failed"
    done | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)]*1000}'
}
echo "== p50 latency over $RUNS requests (ms); the HTTP figure includes a new TCP connection per request"
printf '   %-10s %9s %10s %9s %14s\n' query direct pgbouncer http "http/direct"
for q in range aggregate latest; do
    echo "${SQLS[$q]};" >"$TMP/$q.sql"
    rows=$(sql "$PG_PORT" -c "SELECT count(*) FROM (${SQLS[$q]}) q")
    d=$(p50_pgbench "$PG_PORT" "$TMP/$q.sql")
    b=$(p50_pgbench "$PGB_PORT" "$TMP/$q.sql")
    h=$(p50_http "${URL[$q]}")
    printf '   %-10s %9s %10s %9s %13sx   (%s rows)\n' "$q" "$d" "$b" "$h" "$(ratio "$h" "$d")" "$rows"
done

echo "== ingest summary (best of $ROUNDS)"
for who in direct pgbouncer tidegate; do printf '   %-10s %9s rows/s\n' "$who" "${BEST[$who]}"; done
echo "   tidegate HTTP NDJSON / direct \\copy: $(ratio "${BEST[tidegate]}" "${BEST[direct]}")"
echo "   tidegate HTTP NDJSON / PgBouncer \\copy: $(ratio "${BEST[tidegate]}" "${BEST[pgbouncer]}")"
