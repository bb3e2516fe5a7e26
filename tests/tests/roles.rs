//! `tidegate roles sync` against a real PostgreSQL: the access-control plugin's roles become
//! PostgreSQL roles `tidegate_<role>` with exactly the GRANTs their rules imply (`--plan`
//! changes nothing, a second run changes nothing, privileges added by hand are revoked, and
//! `tidegate migrate` runs the same step), and a broker user acting as such a role meets
//! PostgreSQL's own permission error when TideGate lets a write through.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tidegate_config::Config;
use tidegate_tests::{built_plugins, fresh_dir, sqlstate, tidegate_bin, Broker, Postgres};

/// A configuration with the access-control plugin: `reader` may read (and run utility
/// statements) everywhere, `writer` may read and write `public.t`, `admin` everything;
/// `reader_rules` replaces the reader's rules.
fn config_text(pg_port: u16, reader_rules: &str) -> String {
    format!(
        r#"
[listen]
sql = "127.0.0.1:0"

[upstream.primary]
host = "127.0.0.1"
port = {pg_port}
user = "postgres"
database = "postgres"

[log]
level = "warn"

[plugins]
dir = "{dir}"
call_timeout = "500ms"

[[plugins.chain]]
name = "access-control"
file = "access_control.wasm"
kind = "access_control"
[plugins.chain.config]
deny_by_default = true
[plugins.chain.config.roles]
reader = {reader_rules}
writer = [{{ kinds = ["read", "write"], tables = ["public.t"] }}]
admin = [{{ kinds = ["*"], tables = ["*"] }}]

[[users]]
name = "app"
password = "app"
roles = ["admin"]

[[users]]
name = "reader"
password = "reader"
roles = ["reader"]
role = "tidegate_reader"
"#,
        dir = built_plugins().display()
    )
}

const READ_ONLY: &str = r#"[{ kinds = ["read", "utility"], tables = ["*"] }]"#;

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("tidegate.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn tidegate(args: &[&str]) -> Output {
    Command::new(tidegate_bin())
        .args(args)
        .output()
        .expect("run tidegate")
}

/// Runs `tidegate ARGS`, asserts success, returns stdout.
fn ok(args: &[&str]) -> String {
    let out = tidegate(args);
    assert!(
        out.status.success(),
        "tidegate {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pg_bool(pg: &Postgres, sql: &str) -> bool {
    match pg.sql("postgres", sql).as_str() {
        "t" => true,
        "f" => false,
        other => panic!("{sql}: {other}"),
    }
}

fn has(pg: &Postgres, role: &str, table: &str, privilege: &str) -> bool {
    pg_bool(
        pg,
        &format!("SELECT has_table_privilege('{role}', '{table}', '{privilege}')"),
    )
}

#[test]
fn roles_sync_plans_then_applies_idempotently() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE t (id int); CREATE SCHEMA s; CREATE TABLE s.u (id int); \
         CREATE SEQUENCE q",
    );
    let dir = fresh_dir().expect("dir");
    let path = write_config(&dir, &config_text(pg.port, READ_ONLY));
    let cfg = path.to_str().expect("utf-8 path");

    // The plan names every change and makes none.
    let plan = ok(&["roles", "sync", "--config", cfg, "--plan"]);
    assert!(
        plan.contains("would run: CREATE ROLE \"tidegate_reader\" LOGIN NOSUPERUSER"),
        "{plan}"
    );
    assert!(
        plan.contains("would run: GRANT SELECT ON TABLE \"s\".\"u\" TO \"tidegate_reader\""),
        "{plan}"
    );
    assert!(
        plan.contains("role reader -> PostgreSQL role tidegate_reader (acted as by reader)"),
        "{plan}"
    );
    assert!(
        plan.contains("change(s) to make; nothing changed"),
        "{plan}"
    );
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'tidegate\\_%'"
        ),
        "0"
    );

    // Applied: exactly the rules' privileges.
    let applied = ok(&["roles", "sync", "--config", cfg]);
    assert!(applied.contains("change(s) applied"), "{applied}");
    assert!(
        applied.contains("holds: SELECT ON TABLE \"public\".\"t\""),
        "{applied}"
    );
    assert!(pg_bool(
        &pg,
        "SELECT rolcanlogin AND NOT rolsuper FROM pg_roles WHERE rolname = 'tidegate_reader'"
    ));
    assert!(has(&pg, "tidegate_reader", "public.t", "SELECT"));
    assert!(has(&pg, "tidegate_reader", "s.u", "SELECT"));
    assert!(has(&pg, "tidegate_reader", "public.q", "SELECT"));
    for p in ["INSERT", "UPDATE", "DELETE", "TRUNCATE"] {
        assert!(!has(&pg, "tidegate_reader", "public.t", p), "reader {p}");
        assert!(has(&pg, "tidegate_writer", "public.t", p), "writer {p}");
    }
    assert!(!has(&pg, "tidegate_writer", "s.u", "SELECT"));
    assert!(pg_bool(
        &pg,
        "SELECT has_schema_privilege('tidegate_admin', 'public', 'CREATE')"
    ));
    assert!(!pg_bool(
        &pg,
        "SELECT has_schema_privilege('tidegate_reader', 'public', 'CREATE')"
    ));

    // A second run has nothing to do.
    let again = ok(&["roles", "sync", "--config", cfg, "--plan"]);
    assert!(
        again.contains("roles sync: in sync, nothing to change"),
        "{again}"
    );
    assert!(!again.contains("would run:"), "{again}");

    // A table the upstream user creates later is covered by the default privileges.
    pg.sql("postgres", "CREATE TABLE later (id int)");
    assert!(has(&pg, "tidegate_reader", "public.later", "SELECT"));
    assert!(!has(&pg, "tidegate_reader", "public.later", "DELETE"));

    // Privileges granted by hand are revoked by the next sync (here run by `migrate`).
    pg.sql(
        "postgres",
        "GRANT DELETE ON t TO tidegate_reader; GRANT INSERT ON s.u TO tidegate_reader; \
         GRANT pg_write_all_data TO tidegate_reader; ALTER ROLE tidegate_reader CREATEDB; \
         ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT UPDATE ON TABLES TO tidegate_reader",
    );
    let drift = ok(&["roles", "sync", "--config", cfg, "--plan"]);
    for want in [
        "would run: ALTER ROLE \"tidegate_reader\" LOGIN NOSUPERUSER NOCREATEDB",
        "would run: REVOKE \"pg_write_all_data\" FROM \"tidegate_reader\"",
        "would run: REVOKE DELETE ON TABLE \"public\".\"t\" FROM \"tidegate_reader\"",
        "would run: REVOKE INSERT ON TABLE \"s\".\"u\" FROM \"tidegate_reader\"",
        "would run: ALTER DEFAULT PRIVILEGES IN SCHEMA \"public\" REVOKE UPDATE ON TABLES FROM \"tidegate_reader\"",
        "holds: DELETE, SELECT ON TABLE \"public\".\"t\"",
    ] {
        assert!(drift.contains(want), "{want}\n{drift}");
    }
    assert!(
        has(&pg, "tidegate_reader", "public.t", "DELETE"),
        "plan changed nothing"
    );
    let migrated = ok(&["migrate", "--config", cfg]);
    assert!(migrated.contains("applied by this run"), "{migrated}");
    assert!(migrated.contains("change(s) applied"), "{migrated}");
    assert!(!has(&pg, "tidegate_reader", "public.t", "DELETE"));
    assert!(!has(&pg, "tidegate_reader", "s.u", "INSERT"));
    assert!(!has(&pg, "tidegate_reader", "public.later", "UPDATE"));
    assert!(has(&pg, "tidegate_reader", "public.t", "SELECT"));
    assert!(!pg_bool(
        &pg,
        "SELECT pg_has_role('tidegate_reader', 'pg_write_all_data', 'MEMBER')"
    ));
    assert!(!pg_bool(
        &pg,
        "SELECT rolcreatedb FROM pg_roles WHERE rolname = 'tidegate_reader'"
    ));
    // The tables migrate created are covered too (they are in public), and then all is quiet.
    let last = ok(&["roles", "sync", "--config", cfg, "--plan"]);
    assert!(
        last.contains("roles sync: in sync, nothing to change"),
        "{last}"
    );
}

/// TideGate lets everything through for `reader` (as a classifier miss would let a write
/// through), but `reader` acts as the synced read-only role: PostgreSQL refuses the DELETE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classifier_miss_meets_a_permission_error() {
    let pg = Postgres::start();
    pg.sql(
        "postgres",
        "CREATE TABLE acct (id int PRIMARY KEY, balance int); \
         INSERT INTO acct SELECT g, g * 100 FROM generate_series(1, 5) g",
    );
    // The roles synced from the real rules: tidegate_reader may only read.
    let real = Config::from_toml(&config_text(pg.port, READ_ONLY)).expect("valid config");
    tidegate_tests::sync_roles(&real).await;
    // The broker's plugin is told to allow everything for reader.
    let everything = r#"[{ kinds = ["*"], tables = ["*"] }]"#;
    let lax = Config::from_toml(&config_text(pg.port, everything)).expect("valid config");
    let broker = Broker::start_config(lax).await;
    let reader = tidegate_tests::connect(&broker.url("reader", "reader", "postgres"))
        .await
        .expect("reader connects");
    let who = tidegate_tests::first_value(&reader, "SELECT current_user").await;
    assert_eq!(who, "tidegate_reader");
    let n = tidegate_tests::first_value(&reader, "SELECT count(*) FROM acct").await;
    assert_eq!(n, "5");
    let e = reader
        .simple_query("DELETE FROM acct WHERE id = 1")
        .await
        .expect_err("PostgreSQL refuses the DELETE");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e:?}");
    let e = reader
        .execute("UPDATE acct SET balance = 0 WHERE id = $1", &[&2i32])
        .await
        .expect_err("PostgreSQL refuses the UPDATE (extended protocol)");
    assert_eq!(sqlstate(&e).as_deref(), Some("42501"), "{e:?}");
    assert_eq!(
        pg.sql("postgres", "SELECT count(*), sum(balance) FROM acct"),
        "5|1500"
    );
    broker.shutdown().await;
}
