//! Protocol corner cases: extended-protocol COPY, a client leaving mid-batch, statements a
//! client never prepared, rejected startup parameters, FunctionCall, Close after Sync.

use std::time::Duration;
use tidegate_tests::raw::{self, Raw};
use tidegate_tests::{connect, sqlstate, Broker, Postgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_through_the_extended_protocol_keeps_the_session_in_step() {
    let pg = Postgres::start();
    pg.sql("postgres", "CREATE TABLE t (a int, b text)");
    let broker = Broker::start(&pg, "[pool]\nsize = 1\n").await;
    let c = broker.connect("postgres").await;
    for round in 0..3 {
        use futures_util::SinkExt;
        let sink = c.copy_in("COPY t FROM STDIN").await.expect("copy_in");
        let data = bytes::Bytes::from(format!("{round}\tx\n{round}\ty\n"));
        let mut sink = std::pin::pin!(sink);
        sink.send(data).await.expect("send");
        let n = sink.as_mut().finish().await.expect("finish");
        assert_eq!(n, 2);
        // The next statements still line up with their replies, and the pool's only
        // connection was released.
        let other = broker.connect("postgres").await;
        let r = other
            .query_one("SELECT count(*) FROM t", &[])
            .await
            .expect("count");
        assert_eq!(r.get::<_, i64>(0), 2 * (round + 1));
    }
    let r = c
        .query_one("SELECT 'still in step'", &[])
        .await
        .expect("query");
    assert_eq!(r.get::<_, String>(0), "still in step");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_batch_commits_nothing() {
    let pg = Postgres::start();
    pg.sql("postgres", "CREATE TABLE t (a int)");
    let broker = Broker::start(&pg, "[pool]\nsize = 1\n[auth]\nmethod = \"trust\"\n").await;
    {
        let mut c = Raw::connect(broker.addr).await;
        c.startup("app", "postgres").await;
        let mut batch = raw::parse("", "INSERT INTO t VALUES (1)");
        batch.extend(raw::bind("", ""));
        batch.extend(raw::execute(""));
        batch.extend(raw::msg(b'H', b""));
        c.send(&batch).await;
        let mut tags = String::new();
        for _ in 0..3 {
            tags.push(c.recv().await.expect("reply").tag as char);
        }
        assert_eq!(tags, "12C");
        // Gone without Sync: PostgreSQL would abort the implicit transaction.
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = broker.connect("postgres").await;
    let n = c
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count");
    assert_eq!(
        n.get::<_, i64>(0),
        0,
        "the unsynced INSERT must not be committed"
    );
    assert_eq!(pg.sql("postgres", "SELECT count(*) FROM t"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_a_client_never_prepared_are_not_found() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "[pool]\nsize = 1\n[auth]\nmethod = \"trust\"\n").await;
    // Client A leaves a shared statement and an unnamed one on the only connection.
    let mut a = Raw::connect(broker.addr).await;
    a.startup("app", "postgres").await;
    let mut batch = raw::parse("mine", "SELECT 'secret of a'");
    batch.extend(raw::bind("", "mine"));
    batch.extend(raw::execute(""));
    batch.extend(raw::parse("", "SELECT 'unnamed of a'"));
    batch.extend(raw::sync());
    a.send(&batch).await;
    assert_eq!(raw::tags(&a.until_ready().await), "12DC1Z");
    // Client B guesses names.
    let mut b = Raw::connect(broker.addr).await;
    b.startup("app", "postgres").await;
    for guess in ["tg1", "tg2", "mine", ""] {
        let mut batch = raw::bind("", guess);
        batch.extend(raw::execute(""));
        batch.extend(raw::sync());
        b.send(&batch).await;
        let r = b.until_ready().await;
        assert_eq!(raw::tags(&r), "EZ", "guess {guess:?}");
        assert_eq!(r[0].sqlstate().as_deref(), Some("26000"), "guess {guess:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_startup_parameter_is_fatal_and_leaks_nothing() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "[pool]\nsize = 1\n").await;
    let first = connect(&format!(
        "{}?options=-c%20search_path%3Dfirst_client",
        broker.app_url("postgres")
    ))
    .await
    .expect("first");
    first
        .simple_query("SELECT 1")
        .await
        .expect("first client's statement");
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bad = connect(&format!(
        "{}?options=-c%20search_path%3Dsecond%20-c%20TimeZone%3DNot/AZone",
        broker.app_url("postgres")
    ))
    .await
    .expect("login succeeds; the parameter is applied on first use");
    let e = bad
        .simple_query("SHOW search_path")
        .await
        .expect_err("rejected parameter");
    assert_eq!(sqlstate(&e).as_deref(), Some("22023"), "{e:?}");
    let ok = broker.connect("postgres").await;
    let sp = ok.query_one("SHOW search_path", &[]).await.expect("show");
    assert_eq!(
        sp.get::<_, String>(0),
        "\"$user\", public",
        "no leftover settings"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_call_and_close_after_sync() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "[pool]\nsize = 1\n[auth]\nmethod = \"trust\"\n").await;
    let mut c = Raw::connect(broker.addr).await;
    c.startup("app", "postgres").await;
    // FunctionCall: int4abs(-5) is OID 1251; one text-format argument, text result.
    let mut f = 1251i32.to_be_bytes().to_vec();
    f.extend_from_slice(&1i16.to_be_bytes());
    f.extend_from_slice(&0i16.to_be_bytes());
    f.extend_from_slice(&1i16.to_be_bytes());
    f.extend_from_slice(&2i32.to_be_bytes());
    f.extend_from_slice(b"-5");
    f.extend_from_slice(&0i16.to_be_bytes());
    c.send(&raw::msg(b'F', &f)).await;
    let r = c.until_ready().await;
    assert_eq!(raw::tags(&r), "VZ");
    assert_eq!(&r[0].body[4..], b"5");
    // Sync, then Close + Flush: the close is answered and the connection is free for others.
    let mut batch = raw::parse("s", "SELECT 1");
    batch.extend(raw::sync());
    c.send(&batch).await;
    assert_eq!(raw::tags(&c.until_ready().await), "1Z");
    let mut batch = raw::msg(b'C', b"Ss\0");
    batch.extend(raw::msg(b'H', b""));
    c.send(&batch).await;
    assert_eq!(c.recv().await.map(|m| m.tag), Some(b'3'));
    let other = broker.connect("postgres").await;
    tokio::time::timeout(Duration::from_secs(2), other.simple_query("SELECT 1"))
        .await
        .expect("the pool's only connection was released")
        .expect("query");
}
