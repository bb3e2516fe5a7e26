#!/usr/bin/env bash
# Installs what TideGate's demo and tests need on a Debian machine, skipping what is present:
# PostgreSQL 15 (+ contrib), Redis, PgBouncer, psql/pgbench, curl, Chromium (headless, for the
# report test), Python's psycopg and psycopg_pool, and a Rust toolchain with rustfmt
# and clippy. Sourced by demo.sh and test.sh.
set -euo pipefail

need_apt=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql-15 postgresql-contrib-15)
command -v psql >/dev/null || need_apt+=(postgresql-client-15)
command -v pgbench >/dev/null || need_apt+=(postgresql-contrib-15)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v pgbouncer >/dev/null || need_apt+=(pgbouncer)
command -v runuser >/dev/null || need_apt+=(util-linux)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
# `tidegate analyze`'s report is checked in a real browser (tests/tests/analyze.rs).
command -v chromium >/dev/null || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # Debian starts these as services; TideGate's demo and tests start their own.
  $SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || true
fi

# The client-fidelity tests drive TideGate with Python's psycopg and its connection pool.
if ! python3 -c 'import psycopg, psycopg_pool' 2>/dev/null; then
  echo "installing: psycopg, psycopg_pool" >&2
  # pip where the Python allows it; Debian's own Python (externally managed) takes its packages.
  if ! python3 -m pip install -q 'psycopg[binary]' psycopg_pool 2>/dev/null; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-psycopg python3-psycopg-pool >/dev/null
  fi
fi

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    echo "installing the Rust toolchain (rustup)" >&2
    command -v curl >/dev/null || { SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"; $SUDO apt-get install -y -qq curl >/dev/null; }
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  }
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
