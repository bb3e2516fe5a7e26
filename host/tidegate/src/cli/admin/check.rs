//! `tidegate role check`: a user's broker roles, the access-control rules that apply, and for
//! each (kind, table) asked the plugin's own verdict beside PostgreSQL's.

use super::edit::AccessConfig;
use super::pg::PgAnswer;
use super::plugin::Verdict;
use super::rules::{Kind, Pattern, Rule};
use serde_json::{json, Value};
use tidegate_plugins::TableRef;

/// One (kind, table) asked about, and the two answers.
#[derive(Debug, Clone)]
pub struct Check {
    /// The statement kind.
    pub kind: Kind,
    /// The table as given, if any.
    pub table: Option<TableRef>,
    /// The plugin's verdict (`None`: the plugin does not run for this user and database).
    pub plugin: Option<Verdict>,
    /// PostgreSQL's answer (`None` with `--no-db`).
    pub postgres: Option<PgAnswer>,
}

/// Everything `role check` reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// The broker user.
    pub user: String,
    /// The PostgreSQL role it acts as.
    pub pg_role: String,
    /// The database the checks assume.
    pub database: String,
    /// The access-control chain entry.
    pub plugin: String,
    /// What the user may do.
    pub privileges: Privileges,
    /// The answers.
    pub checks: Vec<Check>,
}

/// Reads `--table` values: `schema.table` or `table`.
pub fn parse_table(text: &str) -> Result<TableRef, String> {
    match Pattern::parse(text) {
        Ok(Pattern::Qualified(s, t)) => Ok(TableRef {
            schema: Some(s),
            name: t,
        }),
        Ok(Pattern::Bare(t)) => Ok(TableRef {
            schema: None,
            name: t,
        }),
        _ => Err(format!(
            "invalid table {text:?} (expected schema.table or table)"
        )),
    }
}

/// Reads `--kind` values (`*` for all); none means every kind.
pub fn parse_kinds(names: &[String]) -> Result<Vec<Kind>, String> {
    if names.is_empty() {
        return Ok(Kind::ALL.to_vec());
    }
    let names: Vec<String> = names
        .iter()
        .flat_map(|n| n.split(','))
        .map(|n| n.trim().to_owned())
        .collect();
    super::rules::parse_kinds(&names).map_err(|e| e.to_string())
}

/// What a user may do under the plugin's configuration.
#[derive(Debug, Clone)]
pub struct Privileges {
    /// The user's roles: `[[users]] roles`, then the plugin's `users` entry.
    pub roles: Vec<String>,
    /// Each rule that applies, with its role.
    pub rules: Vec<(String, Rule)>,
    /// Roles the user has that the plugin does not define (they grant nothing).
    pub undefined_roles: Vec<String>,
    /// The user has no role and `deny_by_default` is off: everything is allowed.
    pub unrestricted: bool,
}

/// What `user`, granted `broker_roles` by the broker configuration, may do.
pub fn privileges(ac: &AccessConfig, user: &str, broker_roles: &[String]) -> Privileges {
    let roles = ac.roles_of(user, broker_roles);
    let mut rules = Vec::new();
    let mut undefined_roles = Vec::new();
    for r in &roles {
        match ac.roles.get(r) {
            Some(rs) => rules.extend(rs.iter().map(|rule| (r.clone(), rule.clone()))),
            None => undefined_roles.push(r.clone()),
        }
    }
    let unrestricted = roles.is_empty() && !ac.deny_by_default;
    Privileges {
        roles,
        rules,
        undefined_roles,
        unrestricted,
    }
}

fn table_text(t: &Option<TableRef>) -> String {
    match t {
        Some(TableRef {
            schema: Some(s),
            name,
        }) => format!("{s}.{name}"),
        Some(TableRef { schema: None, name }) => name.clone(),
        None => "(no table)".into(),
    }
}

fn rule_text(rule: &Rule) -> String {
    let kinds: Vec<&str> = rule.kinds.iter().map(|k| k.as_str()).collect();
    let tables: Vec<String> = rule.tables.iter().map(ToString::to_string).collect();
    format!("{} on {}", kinds.join(", "), tables.join(", "))
}

fn plugin_text(v: &Option<Verdict>) -> String {
    match v {
        None => "not applicable (the plugin does not run for this user or database)".into(),
        Some(Verdict::Allow) => "allow".into(),
        Some(Verdict::Rewrite) => "allow (rewritten)".into(),
        Some(Verdict::NoHook) => "allow (no on-statement hook)".into(),
        Some(Verdict::Deny(state, msg, _)) => format!("deny ({state}: {msg})"),
        Some(Verdict::Failed(e)) => format!("deny (the plugin failed, fail closed: {e})"),
    }
}

fn plugin_allows(v: &Option<Verdict>) -> bool {
    !matches!(v, Some(Verdict::Deny(..) | Verdict::Failed(_)))
}

fn pg_text(a: &PgAnswer) -> String {
    match a {
        PgAnswer::Privileges(ps) => {
            let each: Vec<String> = ps
                .iter()
                .map(|(p, ok)| format!("{} {}", p.as_sql(), if *ok { "yes" } else { "no" }))
                .collect();
            let verdict = if a.allowed() == Some(true) {
                "allow"
            } else {
                "deny"
            };
            format!("{verdict} ({})", each.join(", "))
        }
        PgAnswer::NotApplicable => "n/a".into(),
        PgAnswer::NoRole => "the role does not exist".into(),
        PgAnswer::NoTable => "no such table or schema".into(),
    }
}

impl Report {
    /// Lines a person reads.
    pub fn human(&self) -> String {
        let mut out = format!(
            "user {} (PostgreSQL role {}, database {})\n",
            self.user, self.pg_role, self.database
        );
        if self.privileges.roles.is_empty() {
            out.push_str("roles: none\n");
        } else {
            out.push_str(&format!("roles: {}\n", self.privileges.roles.join(", ")));
        }
        out.push_str(&format!("rules (plugin {}):\n", self.plugin));
        if self.privileges.unrestricted {
            out.push_str("  no role: everything is allowed (deny_by_default is off)\n");
        } else if self.privileges.rules.is_empty() {
            out.push_str("  none: everything but transaction control is denied\n");
        }
        for (role, rule) in &self.privileges.rules {
            out.push_str(&format!("  {role}: {}\n", rule_text(rule)));
        }
        for role in &self.privileges.undefined_roles {
            out.push_str(&format!("  {role}: not defined, grants nothing\n"));
        }
        out.push_str("checks:\n");
        for c in &self.checks {
            let mut line = format!(
                "  {} on {}: plugin {}",
                c.kind,
                table_text(&c.table),
                plugin_text(&c.plugin)
            );
            if let Some(pg) = &c.postgres {
                line.push_str(&format!("; postgres {}", pg_text(pg)));
                if let (Some(p), Some(_)) = (pg.allowed(), &c.plugin) {
                    if p != plugin_allows(&c.plugin) {
                        line.push_str("  [the plugin and PostgreSQL disagree]");
                    }
                }
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// The same as JSON.
    pub fn json(&self) -> Value {
        let rules: Vec<Value> = self
            .privileges
            .rules
            .iter()
            .map(|(role, rule)| {
                json!({
                    "role": role,
                    "kinds": rule.kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                    "tables": rule.tables.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })
            })
            .collect();
        let checks: Vec<Value> = self
            .checks
            .iter()
            .map(|c| {
                let plugin = match &c.plugin {
                    None => json!({ "verdict": "not_applicable" }),
                    Some(Verdict::Allow) => json!({ "verdict": "allow" }),
                    Some(Verdict::Rewrite) => json!({ "verdict": "allow", "rewritten": true }),
                    Some(Verdict::NoHook) => json!({ "verdict": "allow", "no_hook": true }),
                    Some(Verdict::Deny(state, msg, hint)) => json!({
                        "verdict": "deny", "sqlstate": state, "message": msg, "hint": hint,
                    }),
                    Some(Verdict::Failed(e)) => json!({ "verdict": "deny", "error": e }),
                };
                let postgres = c.postgres.as_ref().map(|a| match a {
                    PgAnswer::Privileges(ps) => {
                        let each: serde_json::Map<String, Value> = ps
                            .iter()
                            .map(|(p, ok)| (p.as_sql().to_owned(), Value::Bool(*ok)))
                            .collect();
                        let verdict = if a.allowed() == Some(true) {
                            "allow"
                        } else {
                            "deny"
                        };
                        json!({ "verdict": verdict, "privileges": each })
                    }
                    PgAnswer::NotApplicable => json!({ "verdict": "not_applicable" }),
                    PgAnswer::NoRole => json!({ "verdict": "no_role" }),
                    PgAnswer::NoTable => json!({ "verdict": "no_table" }),
                });
                json!({
                    "kind": c.kind.as_str(),
                    "table": c.table.as_ref().map(|_| table_text(&c.table)),
                    "plugin": plugin,
                    "postgres": postgres,
                })
            })
            .collect();
        json!({
            "user": self.user,
            "postgres_role": self.pg_role,
            "database": self.database,
            "plugin": self.plugin,
            "roles": self.privileges.roles,
            "undefined_roles": self.privileges.undefined_roles,
            "unrestricted": self.privileges.unrestricted,
            "rules": rules,
            "checks": checks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_kinds_parse() {
        assert_eq!(
            parse_table("s.t").expect("ok"),
            TableRef {
                schema: Some("s".into()),
                name: "t".into()
            }
        );
        assert_eq!(parse_table("t").expect("ok").schema, None);
        for bad in ["*", "s.*", "a.b.c", ""] {
            assert!(parse_table(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_kinds(&[]).expect("all"), Kind::ALL.to_vec());
        assert_eq!(
            parse_kinds(&["read,write".into()]).expect("two"),
            vec![Kind::Read, Kind::Write]
        );
        assert!(parse_kinds(&["nope".into()]).is_err());
    }
}
