//! The administration commands, run as the real `tidegate` binary against a real PostgreSQL:
//! `role create` edits the file (comments kept, validated, atomic) and creates the PostgreSQL
//! role with its GRANTs; `role assign` takes effect in a running broker after the reload it
//! signals; `role check` reports the plugin's verdicts beside PostgreSQL's; invalid input
//! changes nothing; `encrypt`/`decrypt` speak the encryption plugin's stored format.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tidegate_tests::{free_port, fresh_dir, sqlstate, tidegate_bin, Postgres};

/// Where the test command builds the first-party plugins.
fn built_plugins() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .canonicalize()
        .expect("plugins are built: cd plugins && cargo build --release --target wasm32-wasip2");
    assert!(
        dir.join("access_control.wasm").exists(),
        "access_control.wasm is built"
    );
    dir
}

/// A private directory with a copy of the access-control plugin, for config and plugin.
fn work_dir() -> PathBuf {
    let dir = fresh_dir().expect("dir");
    std::fs::copy(
        built_plugins().join("access_control.wasm"),
        dir.join("access_control.wasm"),
    )
    .expect("copy plugin");
    dir
}

/// A configuration with the access-control plugin, users `app` (admin) and `alice` (no role,
/// PostgreSQL role `alice_pg`), and `extra` appended to `[runtime]`.
fn config_text(pg_port: u16, dir: &Path, listen: u16, runtime: &str) -> String {
    format!(
        r#"# Managed by hand and by `tidegate role`: this comment must survive.
[listen]
sql = "127.0.0.1:{listen}"

[upstream.primary]
host = "127.0.0.1"
port = {pg_port}
user = "postgres"
database = "postgres"

[runtime]
{runtime}

[log]
level = "warn"

[plugins]
dir = "{dir}"
call_timeout = "200ms"

[[plugins.chain]]
name = "access-control"
file = "access_control.wasm"
kind = "access_control"
[plugins.chain.config]
deny_by_default = true
[plugins.chain.config.roles]
# Everything, for the application.
admin = [{{ kinds = ["*"], tables = ["*"] }}]

[[users]]
name = "app"
password = "app"
roles = ["admin"]

# Alice logs in to PostgreSQL as alice_pg.
[[users]]
name = "alice"
password = "alice"
role = "alice_pg"
"#,
        dir = dir.display()
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("tidegate.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Runs `tidegate ARGS` with `stdin`, to completion.
fn tidegate(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(tidegate_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tidegate");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait for tidegate")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `tidegate ARGS` and asserts it succeeded; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = tidegate(args, b"");
    assert!(out.status.success(), "tidegate {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pg_bool(pg: &Postgres, sql: &str) -> bool {
    match pg.sql("postgres", sql).as_str() {
        "t" => true,
        "f" => false,
        other => panic!("{sql}: {other}"),
    }
}

#[test]
fn role_create_edits_the_file_and_grants_in_postgres() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int); CREATE SCHEMA s; CREATE TABLE s.u (id int)",
    );
    let dir = work_dir();
    let path = write_config(&dir, &config_text(pg.port, &dir, free_port(), ""));
    let cfg = path.to_str().expect("utf-8 path");

    let out = ok(&[
        "role",
        "create",
        "ro",
        "--allow",
        "read:public.*",
        "--allow",
        "read,write:s.u",
        "--config",
        cfg,
    ]);
    assert!(
        out.contains("GRANT SELECT ON ALL TABLES IN SCHEMA \"public\" TO \"ro\""),
        "{out}"
    );
    let file = std::fs::read_to_string(&path).expect("read");
    assert!(
        file.starts_with("# Managed by hand and by `tidegate role`: this comment must survive.\n"),
        "{file}"
    );
    assert!(
        file.contains("# Everything, for the application.\nadmin = "),
        "{file}"
    );
    assert!(
        file.contains(
            "ro = [{ kinds = [\"read\"], tables = [\"public.*\"] }, { kinds = [\"read\", \"write\"], tables = [\"s.u\"] }]\n"
        ),
        "{file}"
    );
    tidegate_config::Config::load(&path).expect("the written file validates");
    assert!(!pg_bool(
        &pg,
        "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'ro'"
    ));
    assert!(pg_bool(
        &pg,
        "SELECT has_table_privilege('ro', 'public.t', 'SELECT')"
    ));
    assert!(!pg_bool(
        &pg,
        "SELECT has_table_privilege('ro', 'public.t', 'INSERT')"
    ));
    assert!(pg_bool(
        &pg,
        "SELECT has_schema_privilege('ro', 's', 'USAGE')"
    ));
    for p in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
        assert!(
            pg_bool(
                &pg,
                &format!("SELECT has_table_privilege('ro', 's.u', '{p}')")
            ),
            "{p}"
        );
    }

    // Redefined: what the old rules granted is revoked, the new rules granted.
    ok(&[
        "role", "create", "ro", "--allow", "read:s.u", "--config", cfg,
    ]);
    assert!(!pg_bool(
        &pg,
        "SELECT has_table_privilege('ro', 'public.t', 'SELECT')"
    ));
    assert!(pg_bool(
        &pg,
        "SELECT has_table_privilege('ro', 's.u', 'SELECT')"
    ));
    assert!(!pg_bool(
        &pg,
        "SELECT has_table_privilege('ro', 's.u', 'INSERT')"
    ));
    let file = std::fs::read_to_string(&path).expect("read");
    assert!(
        file.contains("ro = [{ kinds = [\"read\"], tables = [\"s.u\"] }]\n"),
        "{file}"
    );

    // Names are quoted, never interpolated.
    ok(&[
        "role",
        "create",
        "we\"ird; DROP TABLE t",
        "--allow",
        "ddl:s.*",
        "--config",
        cfg,
    ]);
    assert!(pg_bool(
        &pg,
        "SELECT has_schema_privilege('we\"ird; DROP TABLE t', 's', 'CREATE')"
    ));
    assert_eq!(pg.sql("postgres", "SELECT count(*) FROM t"), "0");

    // PostgreSQL refuses (no such table): nothing is written, the role is not created.
    let before = std::fs::read(&path).expect("read");
    let out = tidegate(
        &[
            "role",
            "create",
            "ghost",
            "--allow",
            "read:public.missing",
            "--config",
            cfg,
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("missing"), "{}", text(&out));
    assert_eq!(std::fs::read(&path).expect("read"), before);
    assert!(!pg_bool(
        &pg,
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ghost')"
    ));
}

/// `tidegate serve` with a pid file and no file watch: only the SIGHUP `role assign` sends
/// makes it see the change.
struct Served {
    child: std::process::Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(path: &Path, listen: u16) -> Served {
    let child = Command::new(tidegate_bin())
        .args(["serve", "--config"])
        .arg(path)
        // No HTTP listener: its default port would be shared by concurrent tests.
        .env("TIDEGATE__LISTEN__HTTP", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tidegate serve");
    let served = Served { child };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the broker did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    served
}

async fn alice(listen: u16) -> tokio_postgres::Client {
    tidegate_tests::connect(&format!(
        "postgresql://alice:alice@127.0.0.1:{listen}/postgres"
    ))
    .await
    .expect("alice connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assigned_read_only_role_holds_in_the_running_broker() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE ROLE alice_pg LOGIN; CREATE TABLE t (id int); INSERT INTO t VALUES (1)",
    );
    let dir = work_dir();
    let listen = free_port();
    let pid_file = dir.join("tidegate.pid");
    let runtime = format!(
        "pid_file = \"{}\"\nwatch_config = false",
        pid_file.display()
    );
    let path = write_config(&dir, &config_text(pg.port, &dir, listen, &runtime));
    let cfg = path.to_str().expect("utf-8 path");
    let _broker = serve(&path, listen);

    // No role yet: the plugin denies everything.
    let err = alice(listen)
        .await
        .simple_query("SELECT id FROM t")
        .await
        .expect_err("no role");
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));

    ok(&["role", "create", "ro", "--allow", "read:*", "--config", cfg]);
    let out = ok(&["role", "assign", "alice", "ro", "--config", cfg]);
    assert!(out.contains("GRANT \"ro\" TO \"alice_pg\""), "{out}");
    assert!(out.contains("reload signalled"), "{out}");
    assert!(pg_bool(
        &pg,
        "SELECT pg_has_role('alice_pg', 'ro', 'MEMBER')"
    ));
    let file = std::fs::read_to_string(&path).expect("read");
    assert!(
        file.contains(
            "name = \"alice\"\npassword = \"alice\"\nrole = \"alice_pg\"\nroles = [\"ro\"]\n"
        ),
        "{file}"
    );

    // After the reload: reads pass (the plugin and PostgreSQL's GRANT), writes are refused.
    let mut read = None;
    for _ in 0..100 {
        match alice(listen).await.simple_query("SELECT id FROM t").await {
            Ok(rows) => {
                read = Some(rows);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(read.is_some(), "alice reads after the reload");
    let a = alice(listen).await;
    assert_eq!(
        tidegate_tests::first_value(&a, "SELECT id FROM t").await,
        "1"
    );
    let err = a
        .simple_query("INSERT INTO t VALUES (2)")
        .await
        .expect_err("writes are denied");
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
    let msg = err
        .as_db_error()
        .expect("server-style error")
        .message()
        .to_owned();
    assert!(
        msg.contains("access-control"),
        "denied by the plugin: {msg}"
    );
    assert_eq!(pg.sql("postgres", "SELECT count(*) FROM t"), "1");

    // role check: the plugin and PostgreSQL agree.
    let human = ok(&["role", "check", "alice", "--table", "t", "--config", cfg]);
    assert!(human.contains("roles: ro"), "{human}");
    assert!(human.contains("ro: read on *"), "{human}");
    assert!(
        human.contains("read on t: plugin allow; postgres allow"),
        "{human}"
    );
    assert!(human.contains("write on t: plugin deny (42501"), "{human}");
    assert!(!human.contains("disagree"), "{human}");
    let json = ok(&[
        "role", "check", "alice", "--table", "t", "--kind", "read", "--kind", "write", "--json",
        "--config", cfg,
    ]);
    // serde_json's objects print with sorted keys.
    assert!(
        json.contains(
            r#"{"kind":"read","plugin":{"verdict":"allow"},"postgres":{"privileges":{"SELECT":true},"verdict":"allow"},"table":"t"}"#
        ),
        "{json}"
    );
    assert!(
        json.contains(
            r#""sqlstate":"42501","verdict":"deny"},"postgres":{"privileges":{"DELETE":false,"INSERT":false,"UPDATE":false},"verdict":"deny"},"table":"t"}"#
        ),
        "{json}"
    );
    assert_eq!(json.matches(r#"{"kind":"#).count(), 2, "{json}");
    assert!(json.contains(r#""postgres_role":"alice_pg""#), "{json}");
}

#[test]
fn invalid_input_changes_nothing() {
    let dir = work_dir();
    // Nothing listens on the upstream: every refusal must come before PostgreSQL is touched.
    let path = write_config(&dir, &config_text(free_port(), &dir, free_port(), ""));
    let cfg = path.to_str().expect("utf-8 path");
    let before = std::fs::read(&path).expect("read");
    let cases: &[(&[&str], &str)] = &[
        (
            &["role", "create", "x", "--allow", "reed:*"],
            "unknown statement kind \"reed\"",
        ),
        (
            &["role", "create", "x", "--allow", "read:a.b.c"],
            "invalid table pattern \"a.b.c\"",
        ),
        (
            &["role", "create", "x", "--allow", "read:s.t*"],
            "invalid table pattern",
        ),
        (
            &["role", "create", "x", "--allow", "read"],
            "KIND[,KIND]:PATTERN",
        ),
        (&["role", "create", "x"], "at least one --allow"),
        (&["role", "create", "pg_x", "--allow", "read:*"], "reserved"),
        (
            &["role", "assign", "alice", "nope"],
            "role \"nope\" is not defined",
        ),
        (
            &["role", "assign", "nobody", "admin"],
            "no [[users]] entry named \"nobody\"",
        ),
        (
            &["role", "check", "nobody"],
            "no [[users]] entry named \"nobody\"",
        ),
        (
            &["role", "check", "alice", "--no-db", "--kind", "nope"],
            "unknown statement kind",
        ),
        (
            &[
                "role", "create", "x", "--allow", "read:*", "--plugin", "other",
            ],
            "no access-control plugin named",
        ),
    ];
    for (args, message) in cases {
        let mut args = args.to_vec();
        args.extend(["--config", cfg]);
        let out = tidegate(&args, b"");
        assert!(!out.status.success(), "{args:?} must fail");
        let t = text(&out);
        assert!(t.contains(message), "{args:?}: {message:?} in {t}");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            before,
            "{args:?} left the file alone"
        );
    }
    // A file the access-control plugin itself refuses is not written either.
    let broken = config_text(free_port(), &dir, free_port(), "").replace(
        "[plugins.chain.config.roles]",
        "[plugins.chain.config.users]\nalice = [\"undefined\"]\n[plugins.chain.config.roles]",
    );
    std::fs::write(&path, &broken).expect("write");
    let out = tidegate(
        &[
            "role", "create", "x", "--allow", "read:*", "--no-db", "--config", cfg,
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("refuses the new configuration"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&path).expect("read"), broken);

    // --no-db edits only the file; without a pid file the change waits for a reload.
    std::fs::write(&path, &before).expect("write");
    let out = ok(&[
        "role", "create", "x", "--allow", "read:*", "--no-db", "--config", cfg,
    ]);
    assert!(out.contains("next start or reload"), "{out}");
    assert!(!out.contains("postgres:"), "{out}");
}

fn crypt_config(dir: &Path, key_ids: &[u32]) -> PathBuf {
    let mut keys = String::new();
    for id in key_ids {
        // 32 bytes, base64; one per version.
        let secret = match id {
            1 => "ZGV2ZWxvcG1lbnQtb25seS1rZXktMzItYnl0ZXMhISE=",
            _ => "c2Vjb25kLXZlcnNpb24ta2V5LW9mLTMyLWJ5dGVzISE=",
        };
        keys.push_str(&format!(
            "[[plugins.keys]]\nname = \"pii\"\nid = {id}\nsecret = \"{secret}\"\n"
        ));
    }
    let text = format!(
        r#"[plugins]
dir = "{dir}"
{keys}
[[plugins.chain]]
name = "encryption"
file = "encryption.wasm"
kind = "encryption"
keys = ["pii"]
[plugins.chain.config.columns]
"public.patients.ssn" = {{ key = "pii", readers = ["admin"] }}

[[users]]
name = "app"
password = "app"
"#,
        dir = dir.display()
    );
    let path = dir.join(format!("crypt-{}.toml", key_ids.len()));
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn encrypt_and_decrypt_speak_the_stored_format() {
    let pg = Postgres::start();
    let dir = fresh_dir().expect("dir");
    let one = crypt_config(&dir, &[1]);
    let one = one.to_str().expect("utf-8 path");
    let both = crypt_config(&dir, &[1, 2]);
    let both = both.to_str().expect("utf-8 path");

    // The key comes from the encryption plugin's column; the plaintext only from stdin.
    let out = tidegate(
        &[
            "encrypt",
            "--config",
            one,
            "--column",
            "public.patients.ssn",
        ],
        b"123-45-6789\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let stored = String::from_utf8(out.stdout.clone()).expect("utf-8");
    let stored = stored.trim_end_matches('\n');
    assert!(stored.starts_with("tgenc:v1:"), "{stored}");
    assert!(!text(&out).contains("123-45-6789"));
    assert!(!text(&out).contains("ZGV2ZWxvcG1lbnQ"), "never the key");

    // Any configured key version decrypts; the schema is not part of the associated data.
    for (config, column) in [(one, "patients.ssn"), (both, "public.patients.ssn")] {
        let out = tidegate(
            &["decrypt", "--config", config, "--column", column],
            stored.as_bytes(),
        );
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(out.stdout, b"123-45-6789\n");
    }

    // Another column (associated data): refused.
    let out = tidegate(
        &["decrypt", "--config", one, "--column", "patients.name"],
        stored.as_bytes(),
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("does not decrypt for column patients.name"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("123-45-6789"));

    // The newest version encrypts; a config without it cannot decrypt that value.
    let out = tidegate(
        &[
            "encrypt",
            "--config",
            both,
            "--key",
            "pii",
            "--column",
            "patients.ssn",
        ],
        b"987",
    );
    assert!(out.status.success(), "{}", text(&out));
    let newer = String::from_utf8(out.stdout).expect("utf-8");
    let out = tidegate(
        &["decrypt", "--config", one, "--column", "patients.ssn"],
        newer.as_bytes(),
    );
    assert!(!out.status.success());
    let out = tidegate(
        &["decrypt", "--config", both, "--column", "patients.ssn"],
        newer.as_bytes(),
    );
    assert_eq!(out.stdout, b"987\n", "{}", text(&out));

    // Errors: not the format, unknown key, no key for an unconfigured column.
    let out = tidegate(&["decrypt", "--config", one, "--column", "t.c"], b"plain");
    assert!(
        text(&out).contains("does not start with tgenc:v1:"),
        "{}",
        text(&out)
    );
    let out = tidegate(
        &[
            "encrypt", "--config", one, "--key", "nope", "--column", "t.c",
        ],
        b"x",
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no [[plugins.keys]] entry named \"nope\""),
        "{}",
        text(&out)
    );
    let out = tidegate(&["encrypt", "--config", one, "--column", "t.c"], b"x");
    assert!(!out.status.success());
    assert!(text(&out).contains("no --key given"), "{}", text(&out));

    // The value is what the plugin stores: text PostgreSQL keeps as it is, and reads back
    // decrypt.
    pg.sql("postgres", "CREATE TABLE patients (id int, ssn text)");
    pg.sql(
        "postgres",
        &format!("INSERT INTO patients VALUES (1, '{stored}')"),
    );
    let back = pg.sql("postgres", "SELECT ssn FROM patients WHERE id = 1");
    assert_eq!(back, stored);
    assert!(back.starts_with("tgenc:v1:"));
    let out = tidegate(
        &[
            "decrypt",
            "--config",
            one,
            "--column",
            "public.patients.ssn",
        ],
        back.as_bytes(),
    );
    assert_eq!(out.stdout, b"123-45-6789\n", "{}", text(&out));
}
