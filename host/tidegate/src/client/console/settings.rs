//! `SHOW CONFIG`: the settings operators tune most, their value in force, their default, and
//! whether a reload changes them (`listen.*` and `log.level` need a restart). No secret is
//! listed: passwords, keys and tokens are not among them.

use tidegate_config::{Config, Millis};

type Get = fn(&Config) -> String;

fn ms(m: Millis) -> String {
    format!("{}ms", m.0)
}

/// (key, how to read it, changeable by a reload).
const SETTINGS: &[(&str, Get, bool)] = &[
    ("listen.sql", |c| c.listen.sql.to_string(), false),
    (
        "listen.http",
        |c| c.listen.http.map(|a| a.to_string()).unwrap_or_default(),
        false,
    ),
    ("pool.mode", |c| super::show::mode(c).into(), true),
    ("pool.size", |c| c.pool.size.to_string(), true),
    ("pool.connect_timeout", |c| ms(c.pool.connect_timeout), true),
    (
        "pool.checkout_timeout",
        |c| ms(c.pool.checkout_timeout),
        true,
    ),
    ("pool.query_timeout", |c| ms(c.pool.query_timeout), true),
    ("pool.idle_timeout", |c| ms(c.pool.idle_timeout), true),
    (
        "pool.idle_transaction_timeout",
        |c| ms(c.pool.idle_transaction_timeout),
        true,
    ),
    (
        "pool.client_idle_timeout",
        |c| ms(c.pool.client_idle_timeout),
        true,
    ),
    (
        "limits.max_client_connections",
        |c| c.limits.max_client_connections.to_string(),
        true,
    ),
    (
        "limits.max_message_bytes",
        |c| c.limits.max_message_bytes.to_string(),
        true,
    ),
    (
        "limits.shutdown_timeout",
        |c| ms(c.limits.shutdown_timeout),
        true,
    ),
    (
        "upstream.primary",
        |c| format!("{}:{}", c.upstream.primary.host, c.upstream.primary.port),
        true,
    ),
    (
        "upstream.replicas",
        |c| c.upstream.replicas.len().to_string(),
        true,
    ),
    ("routing.max_lag", |c| ms(c.routing.max_lag), true),
    (
        "routing.max_lag_bytes",
        |c| c.routing.max_lag_bytes.to_string(),
        true,
    ),
    ("routing.ban_time", |c| ms(c.routing.ban_time), true),
    (
        "routing.check_interval",
        |c| ms(c.routing.check_interval),
        true,
    ),
    ("cache.enabled", |c| c.cache.enabled.to_string(), true),
    ("cache.ttl", |c| ms(c.cache.ttl), true),
    ("plugins.chain", |c| c.plugins.chain.len().to_string(), true),
    ("log.level", |c| c.log.level.clone(), false),
    ("log.slow_statement", |c| ms(c.log.slow_statement), true),
    ("admin.users", |c| c.admin.users.join(","), true),
    ("admin.database", |c| c.admin.database.clone(), true),
    ("users", |c| c.users.len().to_string(), true),
];

/// One row per setting: key, value, default, changeable.
pub(super) fn rows(c: &Config) -> Vec<Vec<Option<String>>> {
    let d = Config::default();
    SETTINGS
        .iter()
        .map(|(key, get, changeable)| {
            vec![
                Some((*key).to_owned()),
                Some(get(c)),
                Some(get(&d)),
                Some(if *changeable { "yes" } else { "no" }.to_owned()),
            ]
        })
        .collect()
}
