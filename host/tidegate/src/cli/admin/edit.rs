//! Editing the configuration file in place: `toml_edit` keeps comments and layout, the new text
//! is validated as `tidegate check` would before anything is written, and the file is replaced
//! atomically (a temporary file in the same directory, fsync, rename, fsync of the directory).

use super::rules::Rule;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tidegate_config::{Config, ConfigError, PluginEntry, PluginKind};
use toml_edit::{Array, DocumentMut, InlineTable, Item, Table, TableLike, Value};

/// Why an edit is refused; the file is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML (it was edited by hand and broken).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// The current or the edited configuration does not validate.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// No `[[plugins.chain]]` entry has `kind = "access_control"` (or the one named).
    #[error("no access-control plugin{0} in [[plugins.chain]] (an entry with kind = \"access_control\")")]
    NoAccessControl(String),
    /// Several access-control entries, and none was named.
    #[error("several access-control plugins ({0}): choose one with --plugin NAME")]
    SeveralAccessControl(String),
    /// The access-control plugin's configuration does not check (as its `init` would refuse it).
    #[error("plugin {plugin}: {message}")]
    PluginConfig {
        /// The chain entry.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// No `[[users]]` entry of that name.
    #[error("no [[users]] entry named {0:?}")]
    UnknownUser(String),
    /// A role the access-control plugin does not define.
    #[error("role {role:?} is not defined in plugin {plugin}'s roles (create it with `tidegate role create`)")]
    UndefinedRole {
        /// The role.
        role: String,
        /// The chain entry.
        plugin: String,
    },
    /// A key the edit must go through has an unexpected shape.
    #[error("{0} is not a table")]
    Shape(String),
    /// Someone else changed the file while this command edited it.
    #[error("{0} changed while it was being edited; nothing was written, run the command again")]
    Changed(String),
}

/// A configuration file opened for editing.
pub struct ConfigFile {
    /// The path as given.
    pub path: PathBuf,
    /// The file's text when opened.
    pub original: String,
    /// The configuration it holds (validated, environment overrides applied).
    pub config: Config,
    /// The editable document.
    pub doc: DocumentMut,
}

impl ConfigFile {
    /// Reads and validates `path`.
    pub fn open(path: &Path) -> Result<ConfigFile, EditError> {
        let original = std::fs::read_to_string(path).map_err(|source| EditError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let config = validate(path, &original)?;
        let doc: DocumentMut =
            original
                .parse()
                .map_err(|e: toml_edit::TomlError| EditError::Parse {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
        Ok(ConfigFile {
            path: path.to_path_buf(),
            original,
            config,
            doc,
        })
    }

    /// Validates the edited document and, if it differs from the file, replaces the file with
    /// it atomically. Returns the new configuration and whether the file changed.
    pub fn save(&self) -> Result<(Config, bool), EditError> {
        let text = self.doc.to_string();
        let config = validate(&self.path, &text)?;
        if text == self.original {
            return Ok((config, false));
        }
        replace_atomically(&self.path, &self.original, &text)?;
        Ok((config, true))
    }
}

/// Validates `text` as `Config::load` would validate the file `path` holding it.
pub fn validate(path: &Path, text: &str) -> Result<Config, EditError> {
    Ok(Config::from_toml_with_env(
        text,
        &path.display().to_string(),
        std::env::vars(),
    )?)
}

/// Writes `text` over `path` (following a symbolic link to the real file) so that a reader
/// sees the old file or the new one, never a mix: a temporary file beside it with the same
/// permissions, flushed to disk, renamed over it; then the directory is flushed. If the file no
/// longer holds `expected`, nothing is written.
fn replace_atomically(path: &Path, expected: &str, text: &str) -> Result<(), EditError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| EditError::Io { path: p, source }
    };
    let target = std::fs::canonicalize(path).map_err(io(path))?;
    let dir = target.parent().unwrap_or(Path::new("/"));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tidegate-{}.tmp", std::process::id()));
    let perms = std::fs::metadata(&target)
        .map_err(io(&target))?
        .permissions();
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.set_permissions(perms)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    // A concurrent edit (another admin, an editor) would be lost by the rename.
    if std::fs::read_to_string(&target).ok().as_deref() != Some(expected) {
        let _ = std::fs::remove_file(&tmp);
        return Err(EditError::Changed(path.display().to_string()));
    }
    if let Err(e) = std::fs::rename(&tmp, &target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(&target)(e));
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// The access-control chain entry: the one named `name`, or the only one.
pub fn access_control<'c>(
    config: &'c Config,
    name: Option<&str>,
) -> Result<&'c PluginEntry, EditError> {
    let all: Vec<&PluginEntry> = config
        .plugins
        .chain
        .iter()
        .filter(|e| e.kind == PluginKind::AccessControl)
        .collect();
    match (name, all.as_slice()) {
        (Some(n), _) => all
            .iter()
            .find(|e| e.name == n)
            .copied()
            .ok_or_else(|| EditError::NoAccessControl(format!(" named {n:?}"))),
        (None, [one]) => Ok(one),
        (None, []) => Err(EditError::NoAccessControl(String::new())),
        (None, many) => Err(EditError::SeveralAccessControl(
            many.iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// The access-control plugin's configuration, read as its `init` reads it.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// A user with no role is denied everything.
    pub deny_by_default: bool,
    /// Each role's rules, in name order.
    pub roles: BTreeMap<String, Vec<Rule>>,
    /// Roles the plugin grants users on top of `[[users]] roles`.
    pub users: BTreeMap<String, Vec<String>>,
}

impl AccessConfig {
    /// Reads `entry.config` (as the JSON the plugin gets).
    pub fn of(entry: &PluginEntry) -> Result<AccessConfig, EditError> {
        let bad = |message: String| EditError::PluginConfig {
            plugin: entry.name.clone(),
            message,
        };
        let json = serde_json::to_value(&entry.config).map_err(|e| bad(e.to_string()))?;
        let strings = |v: &serde_json::Value, at: &str| -> Result<Vec<String>, EditError> {
            v.as_array()
                .ok_or_else(|| bad(format!("{at}: expected a list")))?
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad(format!("{at}: expected strings")))
                })
                .collect()
        };
        let mut roles = BTreeMap::new();
        if let Some(r) = json.get("roles") {
            let r = r
                .as_object()
                .ok_or_else(|| bad("roles: expected a table".into()))?;
            for (role, rules) in r {
                let list = rules
                    .as_array()
                    .ok_or_else(|| bad(format!("roles.{role}: expected a list of rules")))?;
                let mut checked = Vec::new();
                for (i, rule) in list.iter().enumerate() {
                    let at = format!("roles.{role}[{i}]");
                    let kinds =
                        strings(rule.get("kinds").unwrap_or(&serde_json::Value::Null), &at)?;
                    let tables = match rule.get("tables") {
                        Some(t) => strings(t, &at)?,
                        None => vec!["*".to_owned()],
                    };
                    checked.push(Rule::new(kinds, tables).map_err(|e| bad(format!("{at}: {e}")))?);
                }
                roles.insert(role.clone(), checked);
            }
        }
        let mut users = BTreeMap::new();
        if let Some(u) = json.get("users") {
            let u = u
                .as_object()
                .ok_or_else(|| bad("users: expected a table".into()))?;
            for (user, granted) in u {
                users.insert(user.clone(), strings(granted, &format!("users.{user}"))?);
            }
        }
        let deny_by_default = json
            .get("deny_by_default")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true);
        Ok(AccessConfig {
            deny_by_default,
            roles,
            users,
        })
    }

    /// A user's roles as the plugin sees them: `[[users]] roles`, then its own `users` entry,
    /// without duplicates.
    pub fn roles_of(&self, user: &str, broker_roles: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let extra = self.users.get(user).map(Vec::as_slice).unwrap_or_default();
        for r in broker_roles.iter().chain(extra) {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }
}

/// Every table of an array of tables, or inline table of an array.
fn entries_mut(item: &mut Item) -> Vec<&mut dyn TableLike> {
    match item {
        Item::ArrayOfTables(a) => a.iter_mut().map(|t| t as &mut dyn TableLike).collect(),
        Item::Value(Value::Array(a)) => a
            .iter_mut()
            .filter_map(|v| v.as_inline_table_mut())
            .map(|t| t as &mut dyn TableLike)
            .collect(),
        _ => Vec::new(),
    }
}

fn named<'d>(item: &'d mut Item, name: &str) -> Option<&'d mut dyn TableLike> {
    entries_mut(item)
        .into_iter()
        .find(|t| t.get("name").and_then(Item::as_str) == Some(name))
}

/// The table under `key` in `parent`, created (as a `[section]`) when missing.
fn subtable<'d>(
    parent: &'d mut dyn TableLike,
    key: &str,
    path: &str,
) -> Result<&'d mut dyn TableLike, EditError> {
    if parent.get(key).is_none() {
        // Implicit: a table holding only subtables gets no header of its own.
        let mut t = Table::new();
        t.set_implicit(true);
        parent.insert(key, Item::Table(t));
    }
    parent
        .get_mut(key)
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| EditError::Shape(path.to_owned()))
}

fn string_array<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    let mut a = Array::new();
    for s in items {
        a.push(s);
    }
    Value::Array(a)
}

/// Sets role `role` of the access-control entry `plugin` to `rules`, as
/// `role = [{ kinds = [...], tables = [...] }, ...]` under `[plugins.chain.config.roles]`.
/// An existing definition is replaced in place, keeping its comments.
pub fn set_role(
    doc: &mut DocumentMut,
    plugin: &str,
    role: &str,
    rules: &[Rule],
) -> Result<(), EditError> {
    let chain = doc
        .get_mut("plugins")
        .and_then(Item::as_table_like_mut)
        .and_then(|p| p.get_mut("chain"))
        .ok_or_else(|| EditError::NoAccessControl(String::new()))?;
    let entry = named(chain, plugin)
        .ok_or_else(|| EditError::NoAccessControl(format!(" named {plugin:?}")))?;
    let config = subtable(entry, "config", "plugins.chain.config")?;
    let roles = subtable(config, "roles", "plugins.chain.config.roles")?;
    let mut value = Array::new();
    for rule in rules {
        let mut t = InlineTable::new();
        t.insert(
            "kinds",
            string_array(rule.kind_names.iter().map(String::as_str)),
        );
        let tables: Vec<String> = rule.tables.iter().map(ToString::to_string).collect();
        t.insert("tables", string_array(tables.iter().map(String::as_str)));
        value.push(Value::InlineTable(t));
    }
    let mut value = Value::Array(value);
    match roles.get_mut(role) {
        Some(old) => {
            // Keep the old value's surrounding whitespace and trailing comment.
            if let Some(v) = old.as_value() {
                *value.decor_mut() = v.decor().clone();
            }
            *old = Item::Value(value);
        }
        None => {
            roles.insert(role, Item::Value(value));
        }
    }
    Ok(())
}

/// Adds `role` to `[[users]] roles` of `user` (the key is created when missing). Returns false
/// when the user already had it.
pub fn assign_role(doc: &mut DocumentMut, user: &str, role: &str) -> Result<bool, EditError> {
    let users = doc
        .get_mut("users")
        .ok_or_else(|| EditError::UnknownUser(user.to_owned()))?;
    let entry = named(users, user).ok_or_else(|| EditError::UnknownUser(user.to_owned()))?;
    match entry.get_mut("roles") {
        Some(item) => {
            let list = item
                .as_array_mut()
                .ok_or_else(|| EditError::Shape(format!("users.{user}.roles")))?;
            if list.iter().any(|v| v.as_str() == Some(role)) {
                return Ok(false);
            }
            list.push(role);
        }
        None => {
            entry.insert("roles", Item::Value(string_array([role])));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"# top comment
[upstream.primary]
host = "127.0.0.1"

[[plugins.chain]]
name = "acl"
file = "access_control.wasm"
kind = "access_control"
[plugins.chain.config]
deny_by_default = true
[plugins.chain.config.roles]
# readers read
reader = [{ kinds = ["read"], tables = ["*"] }] # trailing

[[users]]
name = "app"
password = "app"

[[users]]
name = "bob" # bob
password = "bob"
roles = ["reader"]
"#;

    #[test]
    fn roles_are_added_and_replaced_keeping_comments() {
        let mut doc: DocumentMut = SRC.parse().expect("toml");
        let rule = Rule::parse_arg("read,write:public.*,t").expect("rule");
        set_role(&mut doc, "acl", "writer", std::slice::from_ref(&rule)).expect("add");
        set_role(&mut doc, "acl", "reader", &[rule]).expect("replace");
        let text = doc.to_string();
        assert!(text.starts_with("# top comment\n"), "{text}");
        assert!(
            text.contains(
                "# readers read\nreader = [{ kinds = [\"read\", \"write\"], tables = [\"public.*\", \"t\"] }] # trailing\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("writer = [{ kinds = [\"read\", \"write\"], tables = [\"public.*\", \"t\"] }]\n\n[[users]]"),
            "{text}"
        );
    }

    #[test]
    fn users_get_roles() {
        let mut doc: DocumentMut = SRC.parse().expect("toml");
        assert!(assign_role(&mut doc, "app", "reader").expect("assign"));
        assert!(assign_role(&mut doc, "bob", "writer").expect("assign"));
        assert!(!assign_role(&mut doc, "bob", "writer").expect("again"));
        let text = doc.to_string();
        assert!(
            text.contains("name = \"app\"\npassword = \"app\"\nroles = [\"reader\"]\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "name = \"bob\" # bob\npassword = \"bob\"\nroles = [\"reader\", \"writer\"]\n"
            ),
            "{text}"
        );
        assert!(matches!(
            assign_role(&mut doc, "nobody", "reader"),
            Err(EditError::UnknownUser(_))
        ));
    }

    #[test]
    fn a_missing_config_table_is_created() {
        let src = "[[plugins.chain]]\nname = \"acl\"\nfile = \"a.wasm\"\nkind = \"access_control\"\n\n[[users]]\nname = \"a\"\npassword = \"a\"\n";
        let mut doc: DocumentMut = src.parse().expect("toml");
        let rule = Rule::parse_arg("read:*").expect("rule");
        set_role(&mut doc, "acl", "r", &[rule]).expect("add");
        let text = doc.to_string();
        let cfg = Config::from_toml(&text).expect("valid");
        let entry = access_control(&cfg, None).expect("entry");
        let ac = AccessConfig::of(entry).expect("access config");
        assert_eq!(ac.roles["r"][0].tables.len(), 1, "{text}");
    }
}
