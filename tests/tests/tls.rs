//! TLS for clients (rustls) and the startup timeout.

use std::process::Command;
use std::time::{Duration, Instant};
use tidegate_tests::raw::{self, Raw};
use tidegate_tests::{run_tool, Broker, Postgres};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_clients_connect_and_plaintext_is_refused() {
    let pg = Postgres::start();
    let (cert, key) = server_cert(&pg.dir, "broker");
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

/// A self-signed certificate for 127.0.0.1 and localhost (as a subjectAltName, which rustls
/// requires), made with the openssl CLI, readable by the `postgres` OS user the test servers
/// run as.
fn server_cert(dir: &std::path::Path, name: &str) -> (String, String) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // Its own trust anchor, but no CA: webpki refuses a CA certificate as the server's.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
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
    for f in [&cert, &key] {
        let _ = Command::new("chown").arg("postgres:").arg(f).status();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (cert.display().to_string(), key.display().to_string())
}

/// What the broker's connection upstream is, under `config`: `Ok(true)` over TLS, `Ok(false)` plain, or the
/// error a client gets when the broker cannot connect.
async fn upstream_ssl(config: String) -> Result<bool, String> {
    let cfg = tidegate_config::Config::from_toml(&config).expect("valid config");
    let broker = Broker::start_config(cfg).await;
    let c = tidegate_tests::connect(&broker.app_url("postgres"))
        .await
        .map_err(|e| format!("{e:?}"))?;
    let r = c
        .simple_query(
            "SELECT s.ssl::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.client_port = inet_client_port()",
        )
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(r.iter().any(
        |m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(row) if row.get(0) == Some("true")),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_follows_sslmode_and_cleartext_passwords_need_it() {
    let certs = tidegate_tests::fresh_dir().expect("dir");
    let (cert, key) = server_cert(&certs, "server");
    let (other_ca, _) = server_cert(&certs, "other");
    let tls_pg = Postgres::start_with(&[
        ("ssl", "on"),
        ("ssl_cert_file", &cert),
        ("ssl_key_file", &key),
    ]);
    let plain_pg = Postgres::start();
    let with = |pg: &Postgres, upstream: &str| tidegate_tests::base_config(pg, upstream);

    // verify-full: the certificate is checked against the CA file and the host.
    let verified = format!("sslmode = \"verify-full\"\nsslrootcert = \"{cert}\"\n");
    assert_eq!(upstream_ssl(with(&tls_pg, &verified)).await, Ok(true));
    let wrong_ca = format!("sslmode = \"verify-full\"\nsslrootcert = \"{other_ca}\"\n");
    assert!(
        upstream_ssl(with(&tls_pg, &wrong_ca)).await.is_err(),
        "a certificate from another CA is refused"
    );
    // require: TLS or nothing; prefer: TLS when offered, else plain.
    let require = "sslmode = \"require\"\n";
    assert_eq!(upstream_ssl(with(&tls_pg, require)).await, Ok(true));
    assert!(
        upstream_ssl(with(&plain_pg, require)).await.is_err(),
        "require never falls back to plaintext"
    );
    let prefer = "sslmode = \"prefer\"\n";
    assert_eq!(upstream_ssl(with(&tls_pg, prefer)).await, Ok(true));
    assert_eq!(upstream_ssl(with(&plain_pg, prefer)).await, Ok(false));

    // A server that asks for a cleartext password gets it only over TLS, or when allowed.
    for pg in [&tls_pg, &plain_pg] {
        pg.sql(
            "postgres",
            "CREATE ROLE pwuser LOGIN SUPERUSER PASSWORD 'pw'",
        );
        let hba = pg.dir.join("data").join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(
            &hba,
            format!("host all pwuser 127.0.0.1/32 password\n{old}"),
        )
        .expect("write pg_hba.conf");
        pg.sql("postgres", "SELECT pg_reload_conf()");
    }
    let as_pwuser = |pg: &Postgres, upstream: &str| {
        with(pg, &format!("password = \"pw\"\n{upstream}"))
            .replace("user = \"postgres\"", "user = \"pwuser\"")
    };
    let refused = upstream_ssl(as_pwuser(&plain_pg, "sslmode = \"prefer\"\n")).await;
    assert!(
        refused.is_err(),
        "a cleartext password over plain TCP: {refused:?}"
    );
    let allowed = "sslmode = \"disable\"\nallow_cleartext_password = true\n";
    assert_eq!(upstream_ssl(as_pwuser(&plain_pg, allowed)).await, Ok(false));
    assert_eq!(
        upstream_ssl(as_pwuser(&tls_pg, require)).await,
        Ok(true),
        "over TLS the cleartext password is sent"
    );
}
