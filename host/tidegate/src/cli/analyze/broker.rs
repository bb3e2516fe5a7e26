//! What the broker says about itself: its `/metrics` read over plain HTTP, for the cache and
//! pool-wait sections.

use super::{Chart, Section, Verdict};
use std::collections::BTreeMap;
use std::time::Duration;

/// The broker's metrics: sums by metric name, and by (name, label value) for some labels.
pub(super) struct Metrics {
    sums: BTreeMap<String, f64>,
    by_database: BTreeMap<(String, String), f64>,
}

pub(super) async fn scrape(url: &str) -> Result<Metrics, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let mut s = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(host))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (head, text) = body.split_once("\r\n\r\n").ok_or("not HTTP")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(head.lines().next().unwrap_or("").to_owned());
    }
    let mut m = Metrics {
        sums: BTreeMap::new(),
        by_database: BTreeMap::new(),
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let mut name = series.split('{').next().unwrap_or(series).to_owned();
        if name == "tidegate_pool_clients" && series.contains("state=\"waiting\"") {
            name = "tidegate_pool_clients_waiting".into();
        }
        *m.sums.entry(name.clone()).or_default() += v;
        if let Some(db) = series
            .split("database=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        {
            *m.by_database.entry((name, db.to_owned())).or_default() += v;
        }
    }
    Ok(m)
}

pub(super) fn broker_unknown(s: Section, why: &str) -> Section {
    s.say(
        Verdict::Unknown,
        format!("the broker's metrics could not be read ({why})"),
        "run analyze where the broker's HTTP listener is reachable, or pass --metrics URL",
    )
}

pub(super) fn cache(metrics: &Result<Metrics, String>) -> Section {
    let s = Section::new("cache", "Result cache hit ratio");
    let m = match metrics {
        Ok(m) => m,
        Err(e) => return broker_unknown(s, e),
    };
    let get = |n: &str| m.sums.get(n).copied();
    let (Some(hits), Some(misses)) = (
        get("tidegate_cache_hits_total"),
        get("tidegate_cache_misses_total"),
    ) else {
        return s.say(
            Verdict::Unknown,
            "the result cache is off",
            "enable [cache] for read-heavy dashboards over time ranges that are already complete",
        );
    };
    let bypasses = get("tidegate_cache_bypasses_total").unwrap_or(0.0);
    let mut s = s;
    s.chart = Some(Chart::Bars {
        labels: vec!["hits".into(), "misses".into(), "bypasses".into()],
        values: vec![hits, misses, bypasses],
        unit: "reads".into(),
    });
    s.columns = vec!["hits", "misses", "bypasses"];
    s.rows.push(vec![
        hits.to_string(),
        misses.to_string(),
        bypasses.to_string(),
    ]);
    let ratio = hits / (hits + misses).max(1.0);
    if hits + misses == 0.0 {
        s.say(Verdict::Ok, "no cacheable read yet", "nothing to do")
    } else if bypasses > (hits + misses) * 0.1 {
        s.say(
            Verdict::Bad,
            format!(
                "hit ratio {:.0} %, but {bypasses} reads bypassed a failing cache",
                ratio * 100.0
            ),
            "check Redis: the breaker opens when it is slow or down",
        )
    } else if ratio < 0.2 {
        s.say(
            Verdict::Warn,
            format!("hit ratio {:.0} %", ratio * 100.0),
            "most cacheable reads change each time (now() ranges, new literals): bucket time ranges or lower cache.admission",
        )
    } else {
        s.say(
            Verdict::Ok,
            format!("hit ratio {:.0} %", ratio * 100.0),
            "nothing to do",
        )
    }
}

pub(super) fn pool_waits(metrics: &Result<Metrics, String>) -> Section {
    let s = Section::new("pool-waits", "Pool waits");
    let m = match metrics {
        Ok(m) => m,
        Err(e) => return broker_unknown(s, e),
    };
    let mut s = s;
    s.columns = vec!["database", "waits", "total wait s", "waiting now"];
    let mut labels = Vec::new();
    let mut values = Vec::new();
    for ((name, db), count) in &m.by_database {
        if name != "tidegate_pool_wait_seconds_count" {
            continue;
        }
        let sum = m
            .by_database
            .get(&("tidegate_pool_wait_seconds_sum".to_owned(), db.clone()))
            .copied()
            .unwrap_or(0.0);
        let waiting = m
            .by_database
            .get(&("tidegate_pool_clients_waiting".to_owned(), db.clone()))
            .copied()
            .unwrap_or(0.0);
        labels.push(db.clone());
        values.push(sum);
        s.rows.push(vec![
            db.clone(),
            count.to_string(),
            format!("{sum:.3}"),
            waiting.to_string(),
        ]);
    }
    let total: f64 = values.iter().sum();
    s.chart = (!labels.is_empty()).then(|| Chart::Bars {
        labels,
        values,
        unit: "s waited".into(),
    });
    if total > 1.0 {
        s.say(
            Verdict::Warn,
            format!("clients waited {total:.1} s in all for a server connection"),
            "raise pool.size (within max_connections) or shorten long transactions",
        )
    } else {
        s.say(
            Verdict::Ok,
            format!("clients waited {total:.3} s in all"),
            "nothing to do",
        )
    }
}
