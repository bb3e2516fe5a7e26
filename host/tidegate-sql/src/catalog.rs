//! Function volatility from a `pg_proc` snapshot, with configured allow and deny lists.

use crate::functions::{FunctionLookup, Volatility};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// A configured function name that is not `name` or `schema.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFunctionName(pub String);

impl fmt::Display for BadFunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a function name (`name` or `schema.name`)",
            self.0
        )
    }
}

impl std::error::Error for BadFunctionName {}

/// Parses `name`, `schema.name`, with SQL's rules: unquoted parts fold to lower case, `"…"`
/// parts keep their case (and `""` stands for `"`).
pub fn parse_function_name(entry: &str) -> Result<(Option<String>, String), BadFunctionName> {
    let bad = || BadFunctionName(entry.to_owned());
    let mut parts = Vec::new();
    let mut chars = entry.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next().ok_or_else(bad)? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    '"' => break,
                    c => part.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_alphanumeric() || c == '_' || c == '$') {
                    return Err(bad());
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            return Err(bad());
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') => {}
            Some(_) => return Err(bad()),
        }
    }
    let mut parts = parts.into_iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), None, None) => Ok((None, name)),
        (Some(schema), Some(name), None) => Ok((Some(schema), name)),
        _ => Err(bad()),
    }
}

/// Names matched by an allow or deny list.
#[derive(Debug, Clone, Default)]
struct NameList {
    /// Entries without a schema: every call of that name.
    anywhere: HashSet<String>,
    /// `schema.name` entries, by schema.
    qualified: HashMap<String, HashSet<String>>,
    /// Every name on the list, whatever its schema.
    all_names: HashSet<String>,
}

impl NameList {
    fn add(&mut self, schema: Option<String>, name: String) {
        self.all_names.insert(name.clone());
        match schema {
            None => {
                self.anywhere.insert(name);
            }
            Some(schema) => {
                self.qualified.entry(schema).or_default().insert(name);
            }
        }
    }

    /// Whether a call matches an entry exactly: an entry without a schema matches any call of
    /// that name; `schema.name` only calls qualified with that schema.
    fn matches_exactly(&self, schema: Option<&str>, name: &str) -> bool {
        self.anywhere.contains(name)
            || schema.is_some_and(|s| self.qualified.get(s).is_some_and(|n| n.contains(name)))
    }

    /// Like [`matches_exactly`](Self::matches_exactly), but an unqualified call also matches
    /// `schema.name` entries: the search path may well resolve it there.
    fn matches_possibly(&self, schema: Option<&str>, name: &str) -> bool {
        match schema {
            None => self.all_names.contains(name),
            Some(_) => self.matches_exactly(schema, name),
        }
    }
}

/// A [`FunctionLookup`] from the database's catalog, plus configured overrides.
///
/// * The catalog (`pg_proc`): `provolatile` `'i'` is immutable, `'s'` stable, and `'v'`
///   (volatile, which may write) or anything else writes. Overloads and, for unqualified
///   calls, functions of the same name in several schemas resolve to the worst volatility.
/// * The deny list forces "writes" (primary only). An entry `name` matches every call of that
///   name; `schema.name` matches calls qualified with that schema and unqualified calls of
///   `name` (which may resolve there).
/// * The allow list forces "replica-safe, not cacheable" (stable). `name` matches every call
///   of that name, `schema.name` only calls qualified with that schema.
///
/// Deny beats allow, and both beat the catalog and the built-in table.
#[derive(Debug, Clone, Default)]
pub struct CatalogLookup {
    /// Volatility by schema, then name.
    qualified: HashMap<String, HashMap<String, Volatility>>,
    /// The worst volatility of each name across schemas.
    unqualified: HashMap<String, Volatility>,
    allow: NameList,
    deny: NameList,
}

impl CatalogLookup {
    /// Knows no functions and has no overrides.
    pub fn new() -> Self {
        Self::default()
    }

    /// From `pg_proc` rows: `(nspname, proname, provolatile)`, e.g. from
    /// `SELECT n.nspname, p.proname, p.provolatile FROM pg_proc p JOIN pg_namespace n ON
    /// n.oid = p.pronamespace`.
    pub fn from_pg_proc<S, N>(rows: impl IntoIterator<Item = (S, N, char)>) -> Self
    where
        S: AsRef<str>,
        N: AsRef<str>,
    {
        let mut lookup = Self::new();
        for (schema, name, provolatile) in rows {
            let volatility = match provolatile {
                'i' => Volatility::Immutable,
                's' => Volatility::Stable,
                _ => Volatility::Writes,
            };
            lookup.insert(schema.as_ref(), name.as_ref(), volatility);
        }
        lookup
    }

    /// Records one function; with overloads the worst volatility stays.
    pub fn insert(&mut self, schema: &str, name: &str, volatility: Volatility) {
        let by_name = self.qualified.entry(schema.to_owned()).or_default();
        let v = by_name.entry(name.to_owned()).or_insert(volatility);
        *v = (*v).max(volatility);
        let v = self
            .unqualified
            .entry(name.to_owned())
            .or_insert(volatility);
        *v = (*v).max(volatility);
    }

    /// Adds an allow-list entry (`name` or `schema.name`): replica-safe, never cached.
    pub fn allow(&mut self, entry: &str) -> Result<(), BadFunctionName> {
        let (schema, name) = parse_function_name(entry)?;
        self.allow.add(schema, name);
        Ok(())
    }

    /// Adds a deny-list entry (`name` or `schema.name`): always the primary.
    pub fn deny(&mut self, entry: &str) -> Result<(), BadFunctionName> {
        let (schema, name) = parse_function_name(entry)?;
        self.deny.add(schema, name);
        Ok(())
    }

    /// With these allow-list entries added.
    pub fn with_allow<S: AsRef<str>>(
        mut self,
        entries: impl IntoIterator<Item = S>,
    ) -> Result<Self, BadFunctionName> {
        for e in entries {
            self.allow(e.as_ref())?;
        }
        Ok(self)
    }

    /// With these deny-list entries added.
    pub fn with_deny<S: AsRef<str>>(
        mut self,
        entries: impl IntoIterator<Item = S>,
    ) -> Result<Self, BadFunctionName> {
        for e in entries {
            self.deny(e.as_ref())?;
        }
        Ok(self)
    }

    /// Number of distinct (schema, name) functions known from the catalog.
    pub fn functions(&self) -> usize {
        self.qualified.values().map(HashMap::len).sum()
    }
}

impl FunctionLookup for CatalogLookup {
    fn volatility(&self, schema: Option<&str>, name: &str) -> Option<Volatility> {
        match schema {
            Some(schema) => self.qualified.get(schema)?.get(name).copied(),
            None => self.unqualified.get(name).copied(),
        }
    }

    fn override_volatility(&self, schema: Option<&str>, name: &str) -> Option<Volatility> {
        if self.deny.matches_possibly(schema, name) {
            Some(Volatility::Writes)
        } else if self.allow.matches_exactly(schema, name) {
            Some(Volatility::Stable)
        } else {
            None
        }
    }
}
