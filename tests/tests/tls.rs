//! TLS for clients (rustls) and the startup timeout.

use std::process::Command;
use std::time::{Duration, Instant};
use tidegate_tests::raw::{self, Raw};
use tidegate_tests::{run_tool, Broker, Postgres};

/// A self-signed certificate for `localhost`, made with the openssl CLI.
fn self_signed(dir: &std::path::Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_clients_connect_and_plaintext_is_refused() {
    let pg = Postgres::start();
    let (cert, key) = self_signed(&pg.dir);
    let broker = Broker::start(
        &pg,
        &format!("[tls]\nmode = \"require\"\ncert = \"{cert}\"\nkey = \"{key}\"\n"),
    )
    .await;
    let url = broker.app_url("postgres");
    let ok = run_tool(
        "psql",
        &[
            "-X",
            "-A",
            "-t",
            "-d",
            &format!("{url}?sslmode=require"),
            "-c",
            "SELECT 'over tls'",
        ],
        &[],
    )
    .await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "over tls");
    // Plaintext: refused before any authentication exchange.
    let mut c = Raw::connect(broker.addr).await;
    c.send(&raw::startup_packet(&[
        ("user", "app"),
        ("database", "postgres"),
    ]))
    .await;
    let m = c.recv().await.expect("refusal");
    assert_eq!((m.tag, m.sqlstate().as_deref()), (b'E', Some("28000")));
    assert!(c.closed().await);
    // SSLRequest followed by plaintext bytes before the ClientHello: the handshake fails and
    // the injected bytes are never read as protocol messages.
    let mut c = Raw::connect(broker.addr).await;
    let mut injected = vec![0, 0, 0, 8, 4, 210, 22, 47];
    injected.extend(raw::query("SELECT 'injected'"));
    c.send(&injected).await;
    assert_eq!(c.recv_byte().await, Some(b'S'));
    assert!(c.closed().await, "connection dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_at_the_startup_timeout() {
    let pg = Postgres::start();
    let broker = Broker::start(&pg, "[limits]\nstartup_timeout = \"1s\"\n").await;
    let started = Instant::now();
    let mut half = Raw::connect(broker.addr).await;
    let packet = raw::startup_packet(&[("user", "app"), ("database", "postgres")]);
    half.send(&packet[..packet.len() / 2]).await;
    let mut silent = Raw::connect(broker.addr).await;
    // A client that stops after AuthenticationSASL.
    let mut stalled = Raw::connect(broker.addr).await;
    stalled.send(&packet).await;
    assert_eq!(stalled.recv().await.map(|m| m.tag), Some(b'R'));
    for c in [&mut half, &mut silent, &mut stalled] {
        assert!(c.closed().await);
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let c = broker.connect("postgres").await;
    c.simple_query("SELECT 1").await.expect("others are served");
}
