//! Scenario 19 (malformed protocol) and 20 (oversized messages): every bad input gets a clear
//! error or a closed connection, nothing panics, and the broker keeps serving everyone else.

use tidegate_tests::raw::{self, Raw};
use tidegate_tests::{Broker, Postgres};

async fn still_serving(broker: &Broker) {
    let c = broker.connect("postgres").await;
    assert_eq!(
        c.query_one("SELECT 1", &[])
            .await
            .expect("serving")
            .get::<_, i32>(0),
        1
    );
}

/// Sends `bytes` on a fresh connection and returns the first reply (if any) and whether the
/// connection was then closed.
async fn probe(broker: &Broker, bytes: &[u8]) -> (Option<raw::Msg>, bool) {
    let mut c = Raw::connect(broker.addr).await;
    c.send(bytes).await;
    let first = c.recv().await;
    let closed = c.closed().await;
    (first, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_packets() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "").await;
    let too_long = {
        let mut p = vec![0u8; 10_008];
        p[..4].copy_from_slice(&10_008i32.to_be_bytes());
        p[4..8].copy_from_slice(&196608i32.to_be_bytes());
        p
    };
    let bad_utf8 = {
        let mut body = 196608i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"us\xffer\0app\0\0");
        let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        p.extend(body);
        p
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length below 4", vec![0, 0, 0, 3]),
        ("length below 8", vec![0, 0, 0, 6, 0, 3]),
        ("over 10,000 bytes", too_long),
        ("claims 1 GB, sends 10 bytes", {
            let mut p = 0x3fff_ffffi32.to_be_bytes().to_vec();
            p.extend_from_slice(&[0; 6]);
            p
        }),
        ("unknown protocol", {
            let mut p = 9i32.to_be_bytes().to_vec();
            p.extend_from_slice(&0x0002_0000i32.to_be_bytes());
            p.push(0);
            p
        }),
        ("non-UTF-8 parameter name", bad_utf8),
        ("no user", raw::startup_packet(&[("database", "postgres")])),
        ("parameters without terminator", {
            let mut body = 196608i32.to_be_bytes().to_vec();
            body.extend_from_slice(b"user\0app");
            let mut p = ((body.len() + 4) as i32).to_be_bytes().to_vec();
            p.extend(body);
            p
        }),
    ];
    for (name, bytes) in cases {
        let (first, closed) = probe(&broker, &bytes).await;
        assert!(closed, "{name}: connection must be closed");
        if let Some(m) = first {
            assert_eq!(m.tag, b'E', "{name}: {m:?}");
            let code = m.sqlstate().unwrap_or_default();
            assert!(
                ["08P01", "0A000", "28000"].contains(&code.as_str()),
                "{name}: {code}"
            );
        }
    }
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authentication_messages() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "").await;
    let startup = raw::startup_packet(&[("user", "app"), ("database", "postgres")]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // SASLInitialResponse claiming 100 bytes of data but carrying 3 (pgwire #175).
        (
            "truncated SASL",
            raw::msg(
                b'p',
                &[b"SCRAM-SHA-256\0".as_slice(), &100i32.to_be_bytes(), b"n,,"].concat(),
            ),
        ),
        ("SASL without length", raw::msg(b'p', b"SCRAM-SHA-256\0")),
        (
            "wrong mechanism",
            raw::msg(
                b'p',
                &[b"PLAIN\0".as_slice(), &3i32.to_be_bytes(), b"abc"].concat(),
            ),
        ),
        (
            "garbage client-first",
            raw::msg(
                b'p',
                &[
                    b"SCRAM-SHA-256\0".as_slice(),
                    &4i32.to_be_bytes(),
                    b"\xff\xfe\0x",
                ]
                .concat(),
            ),
        ),
        ("not a password message", raw::query("SELECT 1")),
        ("huge password message", {
            let mut m = vec![b'p'];
            m.extend_from_slice(&0x0fff_ffffi32.to_be_bytes());
            m
        }),
    ];
    for (name, bytes) in cases {
        let mut c = Raw::connect(broker.addr).await;
        c.send(&startup).await;
        let sasl = c.recv().await.expect("AuthenticationSASL");
        assert_eq!(sasl.tag, b'R');
        c.send(&bytes).await;
        let m = c.recv().await.unwrap_or_else(|| panic!("{name}: no reply"));
        assert_eq!(
            (m.tag, m.sqlstate().as_deref()),
            (b'E', Some("08P01")),
            "{name}"
        );
        assert!(c.closed().await, "{name}: closed");
    }
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_in_a_session() {
    let pg = Postgres::start();
    let broker = Broker::start(
        &pg,
        "[auth]\nmethod = \"trust\"\n[limits]\nmax_message_bytes = 65536\n",
    )
    .await;
    let fatal_cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("unknown type byte", raw::msg(b'?', b"xyz"), "08P01"),
        ("length below 4", vec![b'Q', 0, 0, 0, 2], "08P01"),
        (
            "claims 1 GB, sends 10 bytes",
            {
                let mut m = vec![b'Q'];
                m.extend_from_slice(&0x3fff_ffffi32.to_be_bytes());
                m.extend_from_slice(b"SELECT 1;\0");
                m
            },
            "54000",
        ),
        (
            "over max_message_bytes",
            raw::query(&"x".repeat(70_000)),
            "54000",
        ),
        ("Query without NUL", raw::msg(b'Q', b"SELECT 1"), "08P01"),
        (
            "Parse with truncated types",
            raw::msg(
                b'P',
                &[b"s\0SELECT $1\0".as_slice(), &5i16.to_be_bytes(), &[0, 0]].concat(),
            ),
            "08P01",
        ),
        (
            "Parse with negative type count",
            raw::msg(
                b'P',
                &[b"s\0SELECT 1\0".as_slice(), &(-1i16).to_be_bytes()].concat(),
            ),
            "08P01",
        ),
        (
            "Bind without statement name",
            raw::msg(b'B', b"portal"),
            "08P01",
        ),
        (
            "Describe of unknown kind",
            raw::msg(b'D', b"Xname\0"),
            "08P01",
        ),
        ("Close without name", raw::msg(b'C', b"S"), "08P01"),
        (
            "password message in session",
            raw::msg(b'p', b"secret\0"),
            "08P01",
        ),
    ];
    for (name, bytes, code) in fatal_cases {
        let mut c = Raw::connect(broker.addr).await;
        c.startup("app", "postgres").await;
        c.send(&bytes).await;
        let m = c.recv().await.unwrap_or_else(|| panic!("{name}: no reply"));
        assert_eq!(
            (m.tag, m.sqlstate().as_deref()),
            (b'E', Some(code)),
            "{name}"
        );
        assert!(c.closed().await, "{name}: closed");
    }
    // Errors PostgreSQL reports itself keep the session usable.
    let mut c = Raw::connect(broker.addr).await;
    c.startup("app", "postgres").await;
    let nul_inside = raw::msg(b'Q', b"SELECT 1\0; DROP TABLE x\0");
    c.send(&nul_inside).await;
    let r = c.until_ready().await;
    assert_eq!(r.last().map(|m| m.tag), Some(b'Z'), "{}", raw::tags(&r));
    // Execute before Parse/Bind: no such portal.
    let mut batch = raw::execute("nope");
    batch.extend(raw::sync());
    c.send(&batch).await;
    let r = c.until_ready().await;
    assert_eq!(raw::tags(&r), "EZ");
    assert_eq!(r[0].sqlstate().as_deref(), Some("34000"));
    // Bind whose parameter count differs from its formats.
    let mut batch = raw::parse("", "SELECT $1::int");
    let mut bind = b"\0\0".to_vec();
    bind.extend_from_slice(&2i16.to_be_bytes());
    bind.extend_from_slice(&[0, 0, 0, 0]);
    bind.extend_from_slice(&1i16.to_be_bytes());
    bind.extend_from_slice(&1i32.to_be_bytes());
    bind.push(b'5');
    bind.extend_from_slice(&0i16.to_be_bytes());
    batch.extend(raw::msg(b'B', &bind));
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    c.send(&batch).await;
    let r = c.until_ready().await;
    assert_eq!(raw::tags(&r), "1EZ");
    assert_eq!(r[1].sqlstate().as_deref(), Some("08P01"));
    // Bind of a statement that was never prepared.
    let mut batch = raw::bind("", "never_prepared");
    batch.extend(raw::sync());
    c.send(&batch).await;
    let r = c.until_ready().await;
    assert_eq!(raw::tags(&r), "EZ");
    assert_eq!(r[0].sqlstate().as_deref(), Some("26000"));
    // COPY messages outside COPY are ignored, as PostgreSQL does.
    c.send(&raw::msg(b'd', b"stray")).await;
    c.send(&raw::msg(b'c', b"")).await;
    c.send(&raw::query("SELECT 1")).await;
    assert_eq!(raw::tags(&c.until_ready().await), "TDCZ");
    still_serving(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_extended_protocol_with_flush_and_named_portals() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "[auth]\nmethod = \"trust\"\n").await;
    let mut c = Raw::connect(broker.addr).await;
    c.startup("app", "postgres").await;
    // Parse + Describe + Flush: replies arrive without a Sync.
    let mut batch = raw::parse("s1", "SELECT generate_series(1, 5)");
    batch.extend(raw::msg(b'D', b"Ss1\0"));
    batch.extend(raw::msg(b'H', b""));
    c.send(&batch).await;
    let mut got = String::new();
    for _ in 0..3 {
        got.push(c.recv().await.expect("reply before Sync").tag as char);
    }
    assert_eq!(got, "1tT");
    // A named portal fetched in two steps inside a transaction, pipelined with two syncs.
    let mut batch = raw::query("BEGIN");
    batch.extend(raw::bind("p1", "s1"));
    let mut exec = b"p1\0".to_vec();
    exec.extend_from_slice(&2i32.to_be_bytes());
    batch.extend(raw::msg(b'E', &exec));
    batch.extend(raw::sync());
    batch.extend(raw::msg(b'E', &exec));
    batch.extend(raw::msg(b'C', b"Pp1\0"));
    batch.extend(raw::sync());
    batch.extend(raw::query("COMMIT"));
    c.send(&batch).await;
    let mut all = String::new();
    for _ in 0..4 {
        all.push_str(&raw::tags(&c.until_ready().await));
        all.push('|');
    }
    assert_eq!(all, "CZ|2DDsZ|DDs3Z|CZ|");
    // Closing the statement answers CloseComplete; a new statement reuses the name.
    let mut batch = raw::msg(b'C', b"Ss1\0");
    batch.extend(raw::parse("s1", "SELECT 'again'"));
    batch.extend(raw::bind("", "s1"));
    batch.extend(raw::execute(""));
    batch.extend(raw::sync());
    c.send(&batch).await;
    assert_eq!(raw::tags(&c.until_ready().await), "312DCZ");
}
