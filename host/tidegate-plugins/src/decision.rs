//! A plugin's `on-statement` answer, checked before the host acts on it.

use crate::bindings::wit;
use crate::runtime::{truncate, MAX_RETURN_BYTES};
use crate::types::valid_sqlstate;

/// A plugin's answer, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginDecision {
    /// No objection.
    Allow,
    /// Refused: reason, SQLSTATE, hint.
    Deny(String, String, Option<String>),
    /// Run this instead.
    Rewrite(String),
}

pub(crate) fn validate_decision(d: wit::Decision) -> Result<PluginDecision, String> {
    match d {
        wit::Decision::Allow => Ok(PluginDecision::Allow),
        wit::Decision::Deny(denial) => {
            if !valid_sqlstate(&denial.sqlstate) {
                return Err(format!(
                    "SQLSTATE {:?} is not five digits or capitals",
                    truncate(denial.sqlstate, 20)
                ));
            }
            if denial.reason.len() > MAX_RETURN_BYTES
                || denial
                    .hint
                    .as_ref()
                    .is_some_and(|h| h.len() > MAX_RETURN_BYTES)
            {
                return Err("denial over 1 MiB".into());
            }
            Ok(PluginDecision::Deny(
                truncate(denial.reason, 4096),
                denial.sqlstate,
                denial.hint.map(|h| truncate(h, 4096)),
            ))
        }
        wit::Decision::Rewrite(sql) => {
            if sql.len() > MAX_RETURN_BYTES {
                return Err(format!("rewrite of {} bytes is over 1 MiB", sql.len()));
            }
            if sql.trim().is_empty() || sql.contains('\0') {
                return Err("rewrite is empty or contains NUL".into());
            }
            Ok(PluginDecision::Rewrite(sql))
        }
    }
}
