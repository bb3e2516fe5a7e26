//! Role-based access control as plain functions over plain values: what the plugin's
//! `on-statement` decides, and what a user may do (for a CLI's "check privileges"). The rule
//! grammar — kinds, table patterns and their matching, a rule's checks — is `tidegate-rbac`'s,
//! shared with the `tidegate role` commands so that both accept exactly the same rules.

use serde::Deserialize;
use tidegate_plugin_sdk::prelude::*;
use tidegate_plugin_sdk::{Decision, Denial, StatementKind, TableRef};

/// The SQLSTATE of a denial: insufficient_privilege.
pub const SQLSTATE: &str = "42501";

/// The plugin's configuration (`[plugins.access-control.config]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A user with no role at all is denied everything (`true`, the default) or allowed
    /// everything (`false`).
    #[serde(default = "yes")]
    pub deny_by_default: bool,
    /// Each role's rules.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<RuleConfig>>,
    /// Roles granted to broker users, on top of those the broker configuration grants.
    #[serde(default)]
    pub users: BTreeMap<String, Vec<String>>,
    /// The schema unqualified table names are taken to be in (e.g. `"public"`), for matching
    /// `schema.*` and `schema.table` patterns. Unset (the default), an unqualified name
    /// matches only `*` and bare `table` patterns: the plugin cannot see the session's
    /// `search_path`.
    #[serde(default)]
    pub unqualified_schema: Option<String>,
}

fn yes() -> bool {
    true
}

fn all_tables() -> Vec<String> {
    vec!["*".to_owned()]
}

/// One rule of a role, as configured.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Statement kinds it permits: `read`, `write`, `ddl`, `utility`, `transaction`, or `*`.
    pub kinds: Vec<String>,
    /// Tables it permits them on: `*`, `schema.*`, `schema.table` or `table` (any schema).
    /// Default `["*"]`.
    #[serde(default = "all_tables")]
    pub tables: Vec<String>,
}

pub use tidegate_rbac::{Kind, Pattern, Rule, RuleError};

/// A table pattern's match against the table a statement names (the grammar's
/// [`Pattern::covers`], on the SDK's [`TableRef`]).
pub trait MatchesTable {
    /// Whether it covers `table`, whose schema is `table.schema` or else `unqualified_schema`.
    fn matches(&self, table: &TableRef, unqualified_schema: Option<&str>) -> bool;
}

impl MatchesTable for Pattern {
    fn matches(&self, table: &TableRef, unqualified_schema: Option<&str>) -> bool {
        let table = tidegate_rbac::Table {
            schema: table.schema.as_deref(),
            name: &table.name,
        };
        self.covers(table, unqualified_schema)
    }
}

/// The grammar's name for a statement's kind.
fn kind_of(kind: StatementKind) -> Kind {
    match kind {
        StatementKind::Read => Kind::Read,
        StatementKind::Write => Kind::Write,
        StatementKind::Ddl => Kind::Ddl,
        StatementKind::Utility => Kind::Utility,
        StatementKind::Transaction => Kind::Transaction,
    }
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    deny_by_default: bool,
    roles: BTreeMap<String, Vec<Rule>>,
    users: BTreeMap<String, Vec<String>>,
    unqualified_schema: Option<String>,
}

/// What a user may do: the answer to "check privileges".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    /// The user's roles: the broker's, then the plugin configuration's, without duplicates.
    pub roles: Vec<String>,
    /// The user has no role and `deny_by_default` is off: everything is allowed.
    pub unrestricted: bool,
    /// Each rule that applies, with the role it comes from. Transaction statements are always
    /// allowed and not listed.
    pub rules: Vec<(String, Rule)>,
    /// Roles the user has that the configuration does not define (they grant nothing).
    pub undefined_roles: Vec<String>,
}

impl Privileges {
    /// Lines a person can read, e.g. `writer: read, write on public.*, metrics`.
    pub fn describe(&self) -> Vec<String> {
        if self.unrestricted {
            return vec!["no role: everything is allowed (deny_by_default is off)".to_owned()];
        }
        if self.roles.is_empty() {
            return vec!["no role: everything but transaction control is denied".to_owned()];
        }
        let mut lines: Vec<String> = self
            .rules
            .iter()
            .map(|(role, rule)| {
                let kinds: Vec<&str> = rule.kinds.iter().map(|k| k.as_str()).collect();
                let tables: Vec<String> = rule.tables.iter().map(ToString::to_string).collect();
                format!("{role}: {} on {}", kinds.join(", "), tables.join(", "))
            })
            .collect();
        for role in &self.undefined_roles {
            lines.push(format!("{role}: not defined, grants nothing"));
        }
        if self.rules.is_empty() {
            lines.push("nothing but transaction control is allowed".to_owned());
        }
        lines
    }
}

impl Policy {
    /// Checks a configuration: kinds and patterns must parse, rules must name a kind and a
    /// table, and the `users` map may grant only defined roles.
    pub fn new(config: Config) -> Result<Self, String> {
        let mut roles = BTreeMap::new();
        for (role, rules) in config.roles {
            let mut checked = Vec::new();
            for (i, rule) in rules.into_iter().enumerate() {
                checked.push(
                    Rule::new(rule.kinds, rule.tables)
                        .map_err(|e| format!("roles.{role}[{i}]: {e}"))?,
                );
            }
            roles.insert(role, checked);
        }
        for (user, granted) in &config.users {
            if let Some(role) = granted.iter().find(|r| !roles.contains_key(*r)) {
                return Err(format!(
                    "users.{user}: role {role:?} is not defined in roles"
                ));
            }
        }
        if config.unqualified_schema.as_deref() == Some("") {
            return Err("unqualified_schema: empty schema name".to_owned());
        }
        Ok(Policy {
            deny_by_default: config.deny_by_default,
            roles,
            users: config.users,
            unqualified_schema: config.unqualified_schema,
        })
    }

    /// The user's roles: `broker_roles` (the principal's), then those of the `users` map.
    pub fn roles_of(&self, user: &str, broker_roles: &[String]) -> Vec<String> {
        let mut roles: Vec<String> = Vec::new();
        let extra = self.users.get(user).map(Vec::as_slice).unwrap_or_default();
        for role in broker_roles.iter().chain(extra) {
            if !roles.contains(role) {
                roles.push(role.clone());
            }
        }
        roles
    }

    /// What `user`, granted `broker_roles` by the broker, may do.
    pub fn privileges(&self, user: &str, broker_roles: &[String]) -> Privileges {
        let roles = self.roles_of(user, broker_roles);
        let unrestricted = roles.is_empty() && !self.deny_by_default;
        let mut rules = Vec::new();
        let mut undefined_roles = Vec::new();
        for role in &roles {
            match self.roles.get(role) {
                Some(rs) => rules.extend(rs.iter().map(|r| (role.clone(), r.clone()))),
                None => undefined_roles.push(role.clone()),
            }
        }
        Privileges {
            roles,
            unrestricted,
            rules,
            undefined_roles,
        }
    }

    /// Decides about a statement of `kind` on `tables` by `user`, granted `broker_roles`.
    pub fn decide(
        &self,
        user: &str,
        broker_roles: &[String],
        kind: StatementKind,
        tables: &[TableRef],
    ) -> Decision {
        if kind == StatementKind::Transaction {
            return Decision::Allow;
        }
        let privileges = self.privileges(user, broker_roles);
        if privileges.unrestricted {
            return Decision::Allow;
        }
        if privileges.roles.is_empty() {
            return Decision::Deny(
                Denial::new(
                    SQLSTATE,
                    format!("permission denied: user {user} has no role (tidegate access-control)"),
                )
                .with_hint("ask an administrator to grant this user a TideGate role"),
            );
        }
        let rules: Vec<&Rule> = privileges
            .rules
            .iter()
            .map(|(_, rule)| rule)
            .filter(|rule| rule.permits(kind_of(kind)))
            .collect();
        let who = privileges.roles.join(", ");
        if tables.is_empty() {
            if rules.is_empty() {
                return Decision::Deny(
                    Denial::new(
                        SQLSTATE,
                        format!(
                            "permission denied: role(s) {who} may not run {kind} statements \
                             (tidegate access-control)"
                        ),
                    )
                    .with_hint(format!(
                        "ask an administrator for a role with a rule allowing {kind}"
                    )),
                );
            }
            return Decision::Allow;
        }
        let schema = self.unqualified_schema.as_deref();
        for table in tables {
            let covered = rules
                .iter()
                .any(|rule| rule.tables.iter().any(|p| p.matches(table, schema)));
            if !covered {
                return Decision::Deny(
                    Denial::new(
                        SQLSTATE,
                        format!(
                            "permission denied: role(s) {who} may not {} table {table} \
                             (tidegate access-control)",
                            verb(kind)
                        ),
                    )
                    .with_hint(format!(
                        "ask an administrator for a role with a rule allowing {kind} on {table}"
                    )),
                );
            }
        }
        Decision::Allow
    }
}

/// How a denial names what a statement of `kind` does to a table.
fn verb(kind: StatementKind) -> &'static str {
    match kind {
        StatementKind::Read => "read",
        StatementKind::Write => "write",
        StatementKind::Ddl => "run DDL on",
        StatementKind::Utility => "run utility statements on",
        StatementKind::Transaction => "run transaction statements on",
    }
}

/// What `user`, granted `broker_roles` by the broker configuration, may do under the plugin
/// configuration `config_json` (the `[plugins.access-control.config]` table as JSON): for a
/// CLI's "check privileges". Errors are configuration errors, as `init` would report them.
pub fn check_user_privileges(
    config_json: &str,
    user: &str,
    broker_roles: &[String],
) -> Result<Privileges, String> {
    let config: Config = tidegate_plugin_sdk::parse_config(config_json)?;
    Ok(Policy::new(config)?.privileges(user, broker_roles))
}
