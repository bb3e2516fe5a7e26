//! What the classifier knows about functions without asking the database.

/// How a function behaves, for routing and caching. Ordered from best to worst: the `max` of
/// two volatilities is the one to assume when either may apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Volatility {
    /// Same result for the same arguments, no side effects: replica-safe and cacheable.
    Immutable,
    /// No side effects, but the result depends on time, settings or the snapshot (`now()`,
    /// `current_user`): replica-safe, never cached.
    Stable,
    /// No side effects but a different result each call (`random()`): replica-safe, never
    /// cached.
    VolatileReadOnly,
    /// Writes, takes locks, or changes session state (`nextval`, `pg_advisory_lock`,
    /// `set_config`): primary only.
    Writes,
}

/// Volatility of functions the built-in table does not know (user functions), e.g. looked up
/// once from `pg_proc` by the caller. `None` = unknown, which routes to the primary.
pub trait FunctionLookup {
    /// `schema` is given when the call was qualified; `name` is lower-cased.
    fn volatility(&self, schema: Option<&str>, name: &str) -> Option<Volatility>;

    /// A verdict that beats the built-in table as well (configured allow and deny lists).
    /// Consulted first; `None` (the default) lets the built-in table, then
    /// [`volatility`](Self::volatility), decide.
    fn override_volatility(&self, _schema: Option<&str>, _name: &str) -> Option<Volatility> {
        None
    }
}

/// Knows nothing beyond the built-in table.
pub struct NoLookup;

impl FunctionLookup for NoLookup {
    fn volatility(&self, _: Option<&str>, _: &str) -> Option<Volatility> {
        None
    }
}

/// Whether a built-in function that PostgreSQL calls STABLE is stable only through session
/// settings that are part of every result-cache key (`TimeZone`, `DateStyle`, `IntervalStyle`,
/// `lc_time`), so that its result is determined by its arguments and the key: such a call may be
/// cached. Those that read the clock, the catalog or the session (`now()`, `current_user`,
/// one-argument `age`) are not among them. `name` must be lower-cased; `args` is the number of
/// arguments.
pub fn determined_by_settings(name: &str, args: usize) -> bool {
    match name {
        "date_trunc" | "date_part" | "extract" | "to_char" | "timezone" | "to_timestamp"
        | "make_timestamptz" | "date_bin" => true,
        // age(timestamp) measures from current_date.
        "age" => args == 2,
        _ => false,
    }
}

/// Built-in PostgreSQL and TimescaleDB functions. `name` must be lower-cased.
pub fn builtin_volatility(name: &str) -> Option<Volatility> {
    use Volatility::*;
    Some(match name {
        // Side effects: sequences, locks, settings, notifications, transaction ids, I/O.
        "nextval" | "setval" | "currval" | "lastval" | "set_config" | "pg_notify" | "txid_current"
        | "pg_current_xact_id" | "pg_advisory_lock" | "pg_advisory_lock_shared"
        | "pg_try_advisory_lock" | "pg_try_advisory_lock_shared" | "pg_advisory_xact_lock"
        | "pg_advisory_xact_lock_shared" | "pg_try_advisory_xact_lock"
        | "pg_try_advisory_xact_lock_shared" | "pg_advisory_unlock" | "pg_advisory_unlock_all"
        | "pg_advisory_unlock_shared" | "lo_import" | "lo_export" | "lo_create" | "lo_unlink"
        | "pg_terminate_backend" | "pg_cancel_backend" | "pg_reload_conf" | "pg_switch_wal"
        | "pg_create_restore_point" | "pg_logical_emit_message" | "dblink" | "dblink_exec"
        | "pg_stat_reset" | "pg_promote" | "pg_wal_replay_pause" | "pg_wal_replay_resume"
        // TimescaleDB administration.
        | "create_hypertable" | "create_distributed_hypertable" | "add_dimension"
        | "add_retention_policy" | "remove_retention_policy" | "add_compression_policy"
        | "remove_compression_policy" | "add_continuous_aggregate_policy"
        | "remove_continuous_aggregate_policy" | "refresh_continuous_aggregate"
        | "compress_chunk" | "decompress_chunk" | "drop_chunks" | "add_job" | "alter_job"
        | "delete_job" | "run_job" | "set_chunk_time_interval" | "attach_tablespace"
        | "detach_tablespace" | "add_reorder_policy" | "remove_reorder_policy" | "reorder_chunk"
        | "move_chunk" | "timescaledb_pre_restore" | "timescaledb_post_restore" => Writes,
        "random" | "random_normal" | "gen_random_uuid" | "uuid_generate_v4" | "clock_timestamp"
        | "timeofday" | "pg_sleep" | "setseed" | "txid_current_if_assigned" => VolatileReadOnly,
        "now" | "current_timestamp" | "current_date" | "current_time" | "localtime"
        | "localtimestamp" | "statement_timestamp" | "transaction_timestamp" | "current_user"
        | "session_user" | "current_role" | "user" | "current_schema" | "current_schemas"
        | "current_database" | "current_catalog" | "current_setting" | "version"
        | "pg_backend_pid" | "pg_is_in_recovery" | "pg_last_wal_replay_lsn"
        | "pg_last_xact_replay_timestamp" | "pg_current_wal_lsn" | "inet_server_addr"
        | "inet_server_port" | "inet_client_addr" | "to_char" | "to_timestamp" | "age"
        | "has_table_privilege" | "has_schema_privilege" | "has_database_privilege"
        | "pg_has_role" | "pg_table_size" | "pg_relation_size" | "pg_total_relation_size"
        | "pg_database_size" | "pg_size_pretty" | "txid_snapshot_xmin" | "obj_description"
        | "col_description" | "pg_get_viewdef" | "pg_get_indexdef" | "format_type"
        | "pg_postmaster_start_time" | "date_part" | "extract" | "date_trunc" | "timezone"
        | "array_agg" | "string_agg" | "json_agg" | "jsonb_agg" | "json_object_agg"
        | "jsonb_object_agg" | "xmlagg"
        // TimescaleDB read functions (first/last depend on row order within groups).
        | "first" | "last" | "histogram" | "hypertable_size" | "hypertable_detailed_size"
        | "chunks_detailed_size" | "show_chunks" | "approximate_row_count"
        | "hypertable_compression_stats" | "chunk_compression_stats" => Stable,
        "count" | "sum" | "avg" | "min" | "max" | "stddev" | "stddev_pop" | "stddev_samp"
        | "variance" | "var_pop" | "var_samp" | "bool_and" | "bool_or" | "every" | "bit_and"
        | "bit_or" | "percentile_cont" | "percentile_disc" | "mode" | "corr" | "covar_pop"
        | "covar_samp" | "regr_slope" | "regr_intercept" | "abs" | "ceil" | "ceiling"
        | "floor" | "round" | "trunc" | "sqrt" | "cbrt" | "exp" | "ln" | "log" | "log10"
        | "power" | "pow" | "mod" | "sign" | "greatest" | "least" | "coalesce" | "nullif"
        | "lower" | "upper" | "length" | "char_length" | "octet_length" | "substr"
        | "substring" | "position" | "strpos" | "trim" | "btrim" | "ltrim" | "rtrim" | "lpad"
        | "rpad" | "replace" | "split_part" | "concat" | "concat_ws" | "left" | "right"
        | "repeat" | "reverse" | "md5" | "sha256" | "encode" | "decode" | "format" | "initcap"
        | "regexp_replace" | "regexp_match" | "regexp_matches" | "starts_with" | "to_hex"
        | "array_length" | "array_upper" | "array_lower" | "cardinality" | "unnest"
        | "array_position" | "array_remove" | "array_append" | "array_cat" | "jsonb_build_object"
        | "json_build_object" | "jsonb_build_array" | "json_build_array" | "jsonb_extract_path"
        | "jsonb_extract_path_text" | "jsonb_array_length" | "jsonb_typeof" | "to_jsonb"
        | "to_json" | "row_to_json" | "jsonb_set" | "jsonb_strip_nulls" | "generate_series"
        | "make_interval" | "make_date" | "make_timestamp" | "date_bin" | "justify_interval"
        | "isfinite" | "width_bucket" | "row_number" | "rank" | "dense_rank" | "lag" | "lead"
        | "first_value" | "last_value" | "nth_value" | "ntile" | "cume_dist" | "percent_rank"
        | "time_bucket" | "time_bucket_gapfill" | "locf" | "interpolate" => Immutable,
        _ => return None,
    })
}
