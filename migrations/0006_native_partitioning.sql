-- v6 (native partitioning): without TimescaleDB, time_series_data becomes a declaratively
-- partitioned table — PARTITION BY RANGE (time), one partition per UTC day from yesterday to
-- a week ahead, and a default partition for every other time — with its rows moved into it,
-- so a query on a time range reads only that range's partitions. `tidegate timescale apply`
-- keeps partitions ahead of time as [[timescale.hypertables]] declares (chunk_interval).
-- With TimescaleDB (a hypertable since v3) nothing changes.

DO $$
DECLARE
    day date;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'timescaledb') THEN
        RETURN;
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class c
        WHERE c.oid = 'public.time_series_data'::regclass) <> 'r' THEN
        RETURN;
    END IF;
    ALTER TABLE public.time_series_data RENAME TO time_series_data_v5;
    CREATE TABLE public.time_series_data (LIKE public.time_series_data_v5
        INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS INCLUDING STORAGE)
        PARTITION BY RANGE (time);
    CREATE TABLE public.time_series_data_default PARTITION OF public.time_series_data DEFAULT;
    FOR day IN SELECT d::date FROM generate_series(
        (now() AT TIME ZONE 'UTC')::date - 1, (now() AT TIME ZONE 'UTC')::date + 7,
        interval '1 day') d
    LOOP
        EXECUTE format(
            'CREATE TABLE public.%I PARTITION OF public.time_series_data FOR VALUES FROM (%L) TO (%L)',
            'time_series_data_p' || to_char(day, 'YYYYMMDD"_"HH24MISS'),
            day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
    END LOOP;
    INSERT INTO public.time_series_data SELECT * FROM public.time_series_data_v5;
    DROP TABLE public.time_series_data_v5;
    CREATE INDEX time_series_data_series_id_time_idx
        ON public.time_series_data (series_id, time DESC);
    CREATE INDEX time_series_data_metadata_gin_idx
        ON public.time_series_data USING gin (metadata);
    RAISE NOTICE 'TimescaleDB is not installed: time_series_data is partitioned natively, by day (PARTITION BY RANGE (time))';
END
$$;
