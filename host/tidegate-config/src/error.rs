//! Configuration errors carry `file:line:column` so an operator can jump to the mistake.

use std::fmt;

/// A position in a config file (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name as given.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {message}")]
    Read {
        /// The file name.
        file: String,
        /// The OS error.
        message: String,
    },
    /// The file is not valid TOML, has an unknown key or an invalid value.
    #[error("{location}: {message}")]
    Invalid {
        /// Where.
        location: Location,
        /// What is wrong, in plain words.
        message: String,
    },
    /// An environment override is malformed.
    #[error("environment: {message}")]
    Env {
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn at(file: &str, src: &str, offset: Option<usize>, message: &str) -> ConfigError {
        let (line, column) = offset.map_or((1, 1), |o| line_col(src, o));
        ConfigError::Invalid {
            location: Location {
                file: file.to_owned(),
                line,
                column,
            },
            message: message.trim().to_owned(),
        }
    }
}

fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, col)
}

/// Finds the byte offset of `a.b.c` in `src`: the `c = ` line inside the `[a.b]` section (or the
/// section header itself), so semantic errors point at the offending line. An index in the path
/// (`users[1].role`, `timescale.hypertables[0].continuous_aggregates[1].bucket`) selects that
/// `[[…]]` block.
pub(crate) fn locate_key(src: &str, path: &str) -> Option<usize> {
    let mut parts: Vec<&str> = path.split('.').collect();
    let key = parts.pop()?;
    let mut section = String::new();
    let mut from = 0;
    for part in &parts {
        let (name, index) = match part.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (*part, None),
        };
        if !section.is_empty() {
            section.push('.');
        }
        section.push_str(name);
        if let Some(i) = index {
            from = headers(src, &section)
                .filter(|&o| o >= from)
                .nth(i)
                .unwrap_or(from);
        }
    }
    find_in_section(src, from, &section, key).or_else(|| {
        // A key of an inline table (`compression = { after = … }`): point at its parent key.
        let parent = parts.pop()?;
        let parent = parent.split('[').next().unwrap_or(parent);
        let section = section.rsplit_once('.').map_or("", |(s, _)| s);
        find_in_section(src, from, section, parent)
    })
}

/// Byte offsets of every `[section]` / `[[section]]` header.
fn headers<'a>(src: &'a str, section: &'a str) -> impl Iterator<Item = usize> + 'a {
    let mut offset = 0;
    src.split_inclusive('\n').filter_map(move |line| {
        let at = offset;
        offset += line.len();
        let t = line.trim();
        (t.starts_with('[') && t.trim_matches(|c| c == '[' || c == ']').trim() == section)
            .then(|| at + line.find('[').unwrap_or(0))
    })
}

/// `key = ` in `section` at or after `from`, else the section's header.
fn find_in_section(src: &str, from: usize, section: &str, key: &str) -> Option<usize> {
    let mut in_section = section.is_empty();
    let mut offset = from;
    let mut section_start = None;
    for line in src.get(from..)?.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            let name = t.trim_matches(|c| c == '[' || c == ']').trim();
            // Past the selected block: a later `[[…]]` of the same name is another entry.
            if section_start.is_some() && !name.starts_with(&format!("{section}.")) {
                break;
            }
            in_section = name == section;
            if in_section && section_start.is_none() {
                section_start = Some(offset + line.find('[').unwrap_or(0));
            }
        } else if in_section {
            let k = t.split('=').next().unwrap_or("").trim();
            if k == key && t.contains('=') {
                return Some(offset + line.find(key).unwrap_or(0));
            }
        }
        offset += line.len();
    }
    section_start
}
