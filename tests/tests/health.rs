//! `/readyz` as the seed's `check_health`: the primary, each replica, Redis and TimescaleDB
//! jobs, each with a status; a killed replica shows as degraded within the health interval
//! while `/healthz` stays 200, the broker stays ready and reads keep working.

use std::time::{Duration, Instant};
use tidegate_tests::{send_json, sqlstate, Api, ApiAuth, Broker, Postgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_is_reported_while_reads_keep_working() {
    let primary = Postgres::start();
    let replica = primary.start_replica();
    replica.wait_caught_up(&primary);
    let (broker, addr) = Broker::start_http(
        &primary,
        &format!(
            "[upstream]\nreplicas = [\"127.0.0.1:{}\"]\n[routing]\ncheck_interval = \"200ms\"\n\
             [pool]\nconnect_timeout = \"1s\"\n[http]\nadmin_users = [\"app\"]\n",
            replica.port
        ),
    )
    .await;
    let admin = Api::app(addr);
    let anonymous = Api::new(addr, ApiAuth::None);
    let name = format!("replica 127.0.0.1:{}", replica.port);
    let replica_status = |v: &serde_json::Value| {
        v["checks"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == name.as_str()))
            .map(|c| c["status"].as_str().unwrap_or("").to_owned())
    };
    // Healthy first: every part ok.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = send_json(admin.get("/readyz")).await;
        if s == 200 && replica_status(&v).as_deref() == Some("ok") {
            assert_eq!(v["health"], "ok", "{v}");
            let primary_check = &v["checks"][0];
            assert_eq!(primary_check["name"], "primary");
            assert!(primary_check["latency_ms"].as_f64().is_some(), "{v}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never looked healthy: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, v) = send_json(anonymous.get("/readyz")).await;
    assert!(
        v.get("checks").is_none() && v.get("health").is_none(),
        "detail is for admins: {v}"
    );
    assert_eq!(v["status"], "ready");

    replica.stop_immediate();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = send_json(admin.get("/readyz")).await;
        if replica_status(&v).as_deref() == Some("degraded") {
            assert_eq!(s, 200, "a replica down leaves the broker ready: {v}");
            assert_eq!(v["status"], "ready");
            assert_eq!(v["health"], "degraded");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead replica never showed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, _) = send_json(anonymous.get("/healthz")).await;
    assert_eq!(s, 200);
    let c = broker.connect("postgres").await;
    let mut ok = 0;
    for _ in 0..10 {
        match c.query_one("SELECT 1", &[]).await {
            Ok(_) => ok += 1,
            Err(e) => assert!(
                sqlstate(&e).is_none_or(|s| s.starts_with("08") || s == "57P01"),
                "{e:?}"
            ),
        }
    }
    assert!(ok >= 9, "reads keep working: {ok}/10");
    broker.shutdown().await;
}

/// `tidegate health` from outside the broker: 0 while everything answers, 1 once a replica or
/// Redis is gone (the broker serves with less), 2 once the primary is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidegate_health_exits_0_ok_1_degraded_2_down() {
    let primary = Postgres::start();
    let replica = primary.start_replica();
    replica.wait_caught_up(&primary);
    let mut redis = tidegate_tests::redis::Redis::start();
    let extra = format!(
        "[upstream]\nreplicas = [\"127.0.0.1:{}\"]\n[cache]\nenabled = true\nredis_url = \"{}\"\n",
        replica.port,
        redis.url()
    );
    let broker = Broker::start(&primary, &extra).await;
    let dir = tidegate_tests::fresh_dir().expect("dir");
    let path = dir.join("tidegate.toml");
    std::fs::write(
        &path,
        tidegate_tests::base_config(&primary, &extra).replace(
            "sql = \"127.0.0.1:0\"",
            &format!("sql = \"{}\"", broker.addr),
        ),
    )
    .expect("write config");
    let health = || async {
        let out = tidegate_tests::run_tool(
            tidegate_tests::tidegate_bin().to_str().expect("path"),
            &["health", "--json", "--config", path.to_str().expect("path")],
            &[],
        )
        .await;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        (out.status.code(), v)
    };
    let status_of = |v: &serde_json::Value, name: &str| {
        v["checks"]
            .as_array()
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["name"].as_str().is_some_and(|n| n.starts_with(name)))
            })
            .map(|c| c["status"].as_str().unwrap_or("").to_owned())
    };

    let (code, v) = health().await;
    assert_eq!(code, Some(0), "{v}");
    for part in ["broker", "primary", "replica", "redis"] {
        assert_eq!(status_of(&v, part).as_deref(), Some("ok"), "{part}: {v}");
    }
    assert!(v["checks"][1]["latency_ms"].as_f64().is_some(), "{v}");

    redis.kill();
    replica.stop_immediate();
    let (code, v) = health().await;
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(v["status"], "degraded");
    assert_eq!(status_of(&v, "replica").as_deref(), Some("degraded"), "{v}");
    assert_eq!(status_of(&v, "redis").as_deref(), Some("degraded"), "{v}");

    primary.stop_immediate();
    let (code, v) = health().await;
    assert_eq!(code, Some(2), "{v}");
    assert_eq!(status_of(&v, "primary").as_deref(), Some("down"), "{v}");
    broker.shutdown().await;
}
