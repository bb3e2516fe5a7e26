#!/usr/bin/env bash
# A local demo: a private PostgreSQL 15, TideGate in front of it, and a query through it with
# psql. TideGate keeps running in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh

cargo build --release -p tidegate
# The policy plugins the example configuration enables (WebAssembly components).
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
(cd plugins && cargo build --target-dir target --release --target wasm32-wasip2)
demo=$(pwd)/target/demo
pg_port=${DEMO_PG_PORT:-54329}
pg_bin=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

mkdir -p "$demo"
[ "$(id -u)" -ne 0 ] || chown postgres:postgres "$demo"
if [ ! -f "$demo/data/PG_VERSION" ]; then
  as_pg "$pg_bin/initdb" -D "$demo/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
fi
as_pg "$pg_bin/pg_ctl" -D "$demo/data" -l "$demo/postgres.log" -w \
  -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$demo" start >/dev/null
trap 'kill "$tg" 2>/dev/null || true; wait "$tg" 2>/dev/null || true; as_pg "$pg_bin/pg_ctl" -D "$demo/data" -m fast stop >/dev/null' EXIT

export TIDEGATE__UPSTREAM__PRIMARY__PORT=$pg_port
# TideGate's schema: the seed's time_series_data and the series registry (migrations/); then
# the roles sync: the access-control role `reader` becomes the read-only PostgreSQL role
# tidegate_reader, which the broker user `reader` acts as (`tidegate roles sync --plan` shows
# what a sync would change).
./target/release/tidegate migrate --config config/tidegate.example.toml
./target/release/tidegate serve --config config/tidegate.example.toml &
tg=$!
for _ in $(seq 50); do pg_isready -q -h 127.0.0.1 -p 6543 && break; sleep 0.1; done

echo
echo "PostgreSQL on 127.0.0.1:$pg_port, TideGate on 127.0.0.1:6543 (user app, password app)."
echo "A query through TideGate:"
PGPASSWORD=app psql -X -h 127.0.0.1 -p 6543 -U app -d postgres \
  -c "SELECT 'hello through TideGate' AS greeting, current_user AS acting_as, version()"
echo "The read-only user 'reader' is stopped by the access-control plugin:"
PGPASSWORD=reader psql -X -h 127.0.0.1 -p 6543 -U reader -d postgres \
  -c "CREATE TABLE demo_denied (id int)" || true
echo "It acts as tidegate_reader, which PostgreSQL itself lets only read:"
PGPASSWORD=reader psql -X -h 127.0.0.1 -p 6543 -U reader -d postgres \
  -c "SELECT current_user AS acting_as, has_table_privilege('time_series_data', 'DELETE') AS may_delete"
echo "Both statements left HMAC-chained audit records (tidegate audit verify checks the chain):"
sleep 0.2
TIDEGATE__UPSTREAM__PRIMARY__PORT=$pg_port ./target/release/tidegate audit logs --config config/tidegate.example.toml --limit 5 || true
TIDEGATE__UPSTREAM__PRIMARY__PORT=$pg_port ./target/release/tidegate audit verify --config config/tidegate.example.toml || true
echo "Over HTTP/JSON (127.0.0.1:8543): store a point, then read a day of series 1:"
curl -sS -u app:app -H 'Content-Type: application/x-ndjson' \
  --data-binary '{"time": "2024-01-01T00:00:00Z", "series_id": 1, "value": 25.6, "metadata": {"sensor": "temperature"}}' \
  http://127.0.0.1:8543/v1/series/time_series_data/points
echo
curl -sS -u app:app 'http://127.0.0.1:8543/v1/series/time_series_data?series_id=1&from=2024-01-01T00:00:00Z&to=2024-01-02T00:00:00Z'
echo
echo "Try it yourself:  PGPASSWORD=app psql -h 127.0.0.1 -p 6543 -U app postgres"
echo "            or:  curl -u app:app -H 'Content-Type: application/json' -d '{\"sql\": \"SELECT now()\"}' http://127.0.0.1:8543/v1/sql"
echo "TideGate is running; press Ctrl-C to stop."
wait "$tg"
