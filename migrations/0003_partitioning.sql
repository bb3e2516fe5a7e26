-- v3 (partitioning): with TimescaleDB installed in this database, time_series_data becomes a
-- hypertable (1-day chunks, 4 hash partitions on series_id, compression segmented by series_id
-- and ordered by time DESC) and the audit table a hypertable on `at`, as
-- audit::store::ensure() makes it. Without TimescaleDB both stay plain tables, with a notice.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'timescaledb') THEN
        RAISE NOTICE 'TimescaleDB is not installed: time_series_data stays a plain table (no hypertable, space partitioning or compression)';
        RETURN;
    END IF;
    PERFORM create_hypertable('public.time_series_data', by_range('time', INTERVAL '1 day'),
                              if_not_exists => true, migrate_data => true);
    -- The space dimension must come before compression is enabled (and while the table has
    -- no chunks, as on a fresh database).
    PERFORM add_dimension('public.time_series_data', by_hash('series_id', 4),
                          if_not_exists => true);
    ALTER TABLE public.time_series_data SET (
        timescaledb.compress,
        timescaledb.compress_segmentby = 'series_id',
        timescaledb.compress_orderby = 'time DESC'
    );
    PERFORM create_hypertable('tidegate_audit.events', by_range('at'),
                              if_not_exists => true, migrate_data => true);
END
$$;
