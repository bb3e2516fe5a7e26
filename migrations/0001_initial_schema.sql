-- v1 (initial schema): TideGate's schemas and tables — the time-series table the seed data
-- goes in, the audit table exactly as audit::store::ensure() creates tidegate_audit.events
-- (same columns and index names, so ensure() afterwards changes nothing), and the series
-- registry with its first entry — plus the TimescaleDB extension where the server can load it.

CREATE SCHEMA IF NOT EXISTS tidegate;

CREATE TABLE IF NOT EXISTS public.time_series_data (
    time timestamptz NOT NULL,
    series_id integer NOT NULL,
    value double precision,
    metadata jsonb
);

CREATE SCHEMA IF NOT EXISTS "tidegate_audit";

CREATE TABLE IF NOT EXISTS "tidegate_audit"."events" (
    seq bigint NOT NULL,
    at timestamptz NOT NULL,
    plugin text NOT NULL,
    username text NOT NULL,
    role text NOT NULL,
    database text NOT NULL,
    kind text NOT NULL,
    tables text NOT NULL,
    fingerprint text NOT NULL,
    decision text NOT NULL,
    decided_by text,
    rows bigint NOT NULL,
    duration_us bigint NOT NULL,
    sqlstate text,
    labels text NOT NULL,
    key_id integer NOT NULL,
    hash bytea NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS "events_seq" ON "tidegate_audit"."events" (seq, at);
CREATE INDEX IF NOT EXISTS "events_user_at" ON "tidegate_audit"."events" (username, at);

CREATE TABLE IF NOT EXISTS tidegate.series_tables (
    table_schema text NOT NULL DEFAULT 'public',
    table_name text NOT NULL,
    time_column text NOT NULL,
    series_column text NOT NULL,
    value_columns text[] NOT NULL,
    metadata_column text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_schema, table_name)
);

INSERT INTO tidegate.series_tables
    (table_schema, table_name, time_column, series_column, value_columns, metadata_column)
VALUES ('public', 'time_series_data', 'time', 'series_id', ARRAY['value'], 'metadata')
ON CONFLICT (table_schema, table_name) DO NOTHING;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'timescaledb') THEN
        RAISE NOTICE 'TimescaleDB is not available on this server: not creating the extension';
        RETURN;
    END IF;
    -- Loading timescaledb when it is not in shared_preload_libraries is FATAL (the connection
    -- closes), not an error a handler could catch. The loader defines this boolean setting
    -- only when it was preloaded (and it is visible without privileges, unlike
    -- shared_preload_libraries itself).
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_settings
                   WHERE name = 'timescaledb.disable_load' AND vartype = 'bool') THEN
        RAISE NOTICE 'TimescaleDB is available but not in shared_preload_libraries: not creating the extension';
        RETURN;
    END IF;
    CREATE EXTENSION IF NOT EXISTS timescaledb;
END
$$;
