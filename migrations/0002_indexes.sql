-- v2 (indexes): time_series_data's lookups — one series over a time range, newest first, and
-- containment queries on its metadata.

CREATE INDEX IF NOT EXISTS time_series_data_series_id_time_idx
    ON public.time_series_data (series_id, time DESC);

CREATE INDEX IF NOT EXISTS time_series_data_metadata_gin_idx
    ON public.time_series_data USING gin (metadata);
