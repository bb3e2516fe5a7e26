//! The roles as they are: a PostgreSQL role's attributes, memberships and privileges on the
//! objects the sync manages, and the statements that take it to what its rules imply.

use super::*;

/// A role's attributes that the sync sets.
pub(super) const ATTRIBUTES: &str =
    "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS";

/// A PostgreSQL role as it is.
pub(super) struct Live {
    /// Has exactly the attributes of [`ATTRIBUTES`].
    pub(super) attributes_ok: bool,
    pub(super) superuser: bool,
    pub(super) login: bool,
    /// Roles it is a member of.
    pub(super) member_of: Vec<String>,
    /// Privileges it holds on the objects the sync manages.
    pub(super) items: BTreeSet<Item>,
}

pub(super) async fn live(conn: &mut PgConnection, role: &str) -> anyhow::Result<Option<Live>> {
    let attrs = sqlx::query_as::<_, (bool, bool, bool, bool, bool, bool)>(
        "SELECT rolsuper, rolcanlogin, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls \
         FROM pg_roles WHERE rolname = $1",
    )
    .bind(role)
    .fetch_optional(&mut *conn)
    .await
    .context("reading the role")?;
    let Some((superuser, login, createdb, createrole, replication, bypassrls)) = attrs else {
        return Ok(None);
    };
    let member_of = sqlx::query_scalar::<_, String>(
        "SELECT r.rolname::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid \
         WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = $1) ORDER BY 1",
    )
    .bind(role)
    .fetch_all(&mut *conn)
    .await
    .context("reading the role's memberships")?;
    let grantee = "(SELECT oid FROM pg_roles WHERE rolname = $1)";
    let mut items = BTreeSet::new();
    let schemas = sqlx::query_as::<_, (String, String)>(&format!(
        "SELECT n.nspname::text, a.privilege_type FROM pg_namespace n, aclexplode(n.nspacl) a \
         WHERE a.grantee = {grantee} AND {USER_SCHEMAS}"
    ))
    .bind(role)
    .fetch_all(&mut *conn)
    .await
    .context("reading schema privileges")?;
    for (s, p) in schemas {
        items.insert((Target::Schema(s), p));
    }
    let relations = sqlx::query_as::<_, (String, String, String, String)>(&format!(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text, a.privilege_type \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a \
         WHERE a.grantee = {grantee} AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') \
         AND {USER_SCHEMAS}"
    ))
    .bind(role)
    .fetch_all(&mut *conn)
    .await
    .context("reading table privileges")?;
    for (s, t, k, p) in relations {
        let target = if k == "S" {
            Target::Sequence(s, t)
        } else {
            Target::Table(s, t)
        };
        items.insert((target, p));
    }
    let defaults = sqlx::query_as::<_, (String, String, String)>(&format!(
        "SELECT n.nspname::text, d.defaclobjtype::text, a.privilege_type \
         FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace, \
         aclexplode(d.defaclacl) a \
         WHERE a.grantee = {grantee} \
         AND d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
    ))
    .bind(role)
    .fetch_all(&mut *conn)
    .await
    .context("reading default privileges")?;
    for (s, o, p) in defaults {
        items.insert((Target::Defaults(s, o.chars().next().unwrap_or('r')), p));
    }
    Ok(Some(Live {
        attributes_ok: login
            && !superuser
            && !createdb
            && !createrole
            && !replication
            && !bypassrls,
        superuser,
        login,
        member_of,
        items,
    }))
}

/// Groups items by target, privileges in a stable order.
pub(super) fn by_target<'a>(
    items: impl Iterator<Item = &'a Item>,
) -> BTreeMap<Target, Vec<String>> {
    let mut out: BTreeMap<Target, Vec<String>> = BTreeMap::new();
    for (t, p) in items {
        out.entry(t.clone()).or_default().push(p.clone());
    }
    out
}

/// The statements that take `role` from `live` to `desired`.
pub(super) fn statements(role: &str, live: Option<&Live>, desired: &BTreeSet<Item>) -> Vec<String> {
    let q = quote_ident(role);
    let mut out = Vec::new();
    let empty = BTreeSet::new();
    let held = match live {
        None => {
            out.push(format!("CREATE ROLE {q} {ATTRIBUTES}"));
            &empty
        }
        Some(l) => {
            if !l.attributes_ok {
                out.push(format!("ALTER ROLE {q} {ATTRIBUTES}"));
            }
            for m in &l.member_of {
                out.push(format!("REVOKE {} FROM {q}", quote_ident(m)));
            }
            &l.items
        }
    };
    // Revokes first (default privileges, then tables, then schemas), then grants in the
    // opposite order: USAGE on a schema before what it makes reachable.
    let extra = by_target(held.difference(desired));
    for (t, ps) in extra.iter().rev() {
        out.push(t.statement(ps, role, false));
    }
    let missing = by_target(desired.difference(held));
    for (t, ps) in &missing {
        out.push(t.statement(ps, role, true));
    }
    out
}

pub(super) fn holds(live: Option<&Live>) -> Vec<String> {
    let Some(l) = live else {
        return vec!["(the role does not exist)".into()];
    };
    let mut out = vec![format!(
        "{}{}{}",
        if l.login { "LOGIN" } else { "NOLOGIN" },
        if l.superuser { ", SUPERUSER" } else { "" },
        if l.member_of.is_empty() {
            String::new()
        } else {
            format!(", member of {}", l.member_of.join(", "))
        }
    )];
    for (t, ps) in by_target(l.items.iter()) {
        out.push(format!("{} ON {}", ps.join(", "), t.describe()));
    }
    out
}
