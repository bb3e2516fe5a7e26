use super::live::{Live, ATTRIBUTES};
use super::*;

fn config(users: &str) -> Config {
    let toml = format!(
        r#"
[listen]
sql = "127.0.0.1:0"
[upstream.primary]
host = "127.0.0.1"
port = 5432
user = "postgres"
database = "postgres"
[[plugins.chain]]
name = "access-control"
file = "access_control.wasm"
kind = "access_control"
[plugins.chain.config]
deny_by_default = true
[plugins.chain.config.roles]
reader = [{{ kinds = ["read", "utility"], tables = ["*"] }}]
admin = [{{ kinds = ["*"], tables = ["*"] }}]
[plugins.chain.config.users]
app = ["admin"]
{users}
"#
    );
    Config::from_toml(&toml).expect("valid config")
}

#[test]
fn check_warns_when_a_restricted_user_acts_as_the_upstream_user() {
    let c = config(
        r#"
[[users]]
name = "app"
password = "app"
[[users]]
name = "reader"
password = "reader"
roles = ["reader"]
"#,
    );
    let w = check_warnings(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("\"reader\""), "{}", w[0]);
    assert!(w[0].contains("tidegate_reader"), "{}", w[0]);

    // Acting as its own role: nothing to say (check does no network I/O).
    let c = config(
        r#"
[[users]]
name = "app"
password = "app"
[[users]]
name = "reader"
password = "reader"
roles = ["reader"]
role = "tidegate_reader"
"#,
    );
    assert!(check_warnings(&c).is_empty());

    // Naming the upstream user explicitly is the same as naming none.
    let c = config(
        r#"
[[users]]
name = "reader"
password = "reader"
roles = ["reader"]
role = "postgres"
"#,
    );
    assert_eq!(check_warnings(&c).len(), 1);
}

#[test]
fn sync_plans_exact_grants_and_revokes() {
    let catalog = Catalog {
        schemas: vec!["public".into(), "tidegate".into(), "s".into()],
        relations: vec![
            ("public".into(), "t".into(), 'r'),
            ("public".into(), "seq".into(), 'S'),
            ("s".into(), "u".into(), 'r'),
            ("tidegate".into(), "x".into(), 'r'),
        ],
    };
    let rules = vec![Rule::parse_arg("read,utility:*").expect("valid")];
    let (want, notes) = desired(&rules, &catalog);
    assert!(notes.is_empty());
    let live = Live {
        attributes_ok: true,
        superuser: false,
        login: true,
        member_of: vec!["pg_write_all_data".into()],
        items: [
            (
                Target::Table("public".into(), "t".into()),
                "DELETE".to_owned(),
            ),
            (
                Target::Table("public".into(), "t".into()),
                "SELECT".to_owned(),
            ),
        ]
        .into_iter()
        .collect(),
    };
    let sql = statements("tidegate_reader", Some(&live), &want);
    assert_eq!(
        sql,
        vec![
            "REVOKE \"pg_write_all_data\" FROM \"tidegate_reader\"",
            "REVOKE DELETE ON TABLE \"public\".\"t\" FROM \"tidegate_reader\"",
            "GRANT USAGE ON SCHEMA \"public\" TO \"tidegate_reader\"",
            "GRANT USAGE ON SCHEMA \"s\" TO \"tidegate_reader\"",
            "GRANT SELECT ON TABLE \"s\".\"u\" TO \"tidegate_reader\"",
            "GRANT SELECT ON SEQUENCE \"public\".\"seq\" TO \"tidegate_reader\"",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA \"public\" GRANT SELECT ON SEQUENCES TO \"tidegate_reader\"",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA \"public\" GRANT SELECT ON TABLES TO \"tidegate_reader\"",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA \"s\" GRANT SELECT ON SEQUENCES TO \"tidegate_reader\"",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA \"s\" GRANT SELECT ON TABLES TO \"tidegate_reader\"",
        ]
    );
    let in_sync = Live {
        attributes_ok: true,
        superuser: false,
        login: true,
        member_of: vec![],
        items: want.clone(),
    };
    assert!(statements("tidegate_reader", Some(&in_sync), &want).is_empty());

    let writes = vec![Rule::parse_arg("write:public.t,missing").expect("valid")];
    let (want, notes) = desired(&writes, &catalog);
    assert_eq!(notes.len(), 1, "{notes:?}");
    let sql = statements("w", None, &want);
    assert_eq!(
        sql,
        vec![
            format!("CREATE ROLE \"w\" {ATTRIBUTES}"),
            "GRANT USAGE ON SCHEMA \"public\" TO \"w\"".to_owned(),
            "GRANT DELETE, INSERT, TRUNCATE, UPDATE ON TABLE \"public\".\"t\" TO \"w\"".to_owned(),
        ]
    );
}
