//! `TIDEGATE__SECTION__KEY=value` overrides: double underscore separates nesting levels.

use toml::{Table, Value};

/// Applies every `TIDEGATE__…` variable in `vars` to `root`; returns whether any applied.
///
/// A value that parses as a TOML scalar or array (`5432`, `true`, `["a"]`) keeps that type;
/// anything else is a string, so `127.0.0.1:7000` needs no quoting.
pub(crate) fn apply_overrides(
    root: &mut Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<bool, String> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with(crate::ENV_PREFIX))
        .collect();
    vars.sort();
    let any = !vars.is_empty();
    for (key, raw) in vars {
        let path: Vec<String> = key[crate::ENV_PREFIX.len()..]
            .split("__")
            .map(|p| p.to_ascii_lowercase())
            .collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(format!("{key}: empty path segment"));
        }
        set_path(root, &path, parse_value(&raw)).map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(any)
}

fn parse_value(raw: &str) -> Value {
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(
                v @ (Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Array(_)),
            ) => v,
            _ => Value::String(raw.to_owned()),
        },
        Err(_) => Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut cur = table;
    for p in parents {
        let entry = cur
            .entry(p.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        cur = match entry {
            Value::Table(t) => t,
            _ => return Err(format!("{p} is not a table")),
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}
