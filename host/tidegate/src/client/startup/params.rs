//! The startup packet's parameters: decoding, validation, `-c` options, and the settings a
//! client may not choose at startup.

use bytes::BytesMut;
use pgwire::messages::startup::Startup;
use pgwire::messages::{DecodeContext, Message};
use std::collections::BTreeMap;

/// What a client asked for in its startup packet.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientParams {
    /// The broker user.
    pub user: String,
    /// The database (the configured default when the client named none).
    pub database: String,
    /// Settings to apply on every server connection the client uses, sorted by name.
    pub gucs: Vec<(String, String)>,
}

/// Decodes a protocol-3 startup packet (length included) into its parameters.
pub fn decode_startup(
    packet: BytesMut,
) -> Result<BTreeMap<String, String>, (&'static str, String)> {
    if packet.len() < 8 || std::str::from_utf8(&packet[8..]).is_err() {
        return Err((
            "08P01",
            "invalid startup packet: parameters are not UTF-8".into(),
        ));
    }
    let mut buf = packet;
    match Startup::decode(&mut buf, &DecodeContext::default()) {
        Ok(Some(s)) => Ok(s.parameters),
        _ => Err(("08P01", "invalid startup packet layout".into())),
    }
}

/// Validates startup parameters: user required, replication refused, `options` parsed.
pub fn client_params(
    mut params: BTreeMap<String, String>,
    default_database: &str,
) -> Result<ClientParams, (&'static str, String)> {
    let Some(user) = params.remove("user").filter(|u| !u.is_empty()) else {
        return Err((
            "28000",
            "no PostgreSQL user name specified in startup packet".into(),
        ));
    };
    let database = params
        .remove("database")
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| default_database.to_owned());
    if let Some(r) = params.remove("replication") {
        if !matches!(r.as_str(), "false" | "off" | "0" | "no") {
            return Err(("0A000", "replication connections are not supported".into()));
        }
    }
    let mut gucs: Vec<(String, String)> = Vec::with_capacity(params.len());
    if let Some(options) = params.remove("options") {
        match parse_options(&options) {
            Some(o) => gucs.extend(o),
            None => {
                return Err((
                    "0A000",
                    "only \"-c name=value\" startup options are supported".into(),
                ))
            }
        }
    }
    gucs.extend(params);
    gucs.sort();
    gucs.dedup_by(|a, b| a.0 == b.0);
    for (name, value) in &mut gucs {
        if let Some(refusal) = refused_setting(name, value) {
            return Err(refusal);
        }
        if name.eq_ignore_ascii_case("client_encoding") {
            // Reported (ParameterStatus, SHOW) under PostgreSQL's name, as the server would.
            match super::encoding::canonical(value) {
                Some(c) => *value = c.to_owned(),
                None => {
                    return Err((
                        "22023",
                        format!("invalid value for parameter \"client_encoding\": \"{value}\""),
                    ))
                }
            }
        }
    }
    Ok(ClientParams {
        user,
        database,
        gucs,
    })
}

/// A startup setting TideGate refuses. A role or session authorization chosen at startup
/// would outlive the client on a pooled server connection and sidestep the user's policy:
/// a broker user acts as its configured role. `standard_conforming_strings = off` changes how
/// backslashes in strings are read, which TideGate's lexer does not follow.
fn refused_setting(name: &str, value: &str) -> Option<(&'static str, String)> {
    match name.to_ascii_lowercase().as_str() {
        "role" | "session_authorization" => Some((
            "42501",
            format!(
                "setting \"{name}\" at startup is not allowed through TideGate: \
                 log in as a broker user that acts as that role"
            ),
        )),
        "standard_conforming_strings"
            if !matches!(
                value.trim().to_ascii_lowercase().as_str(),
                "on" | "true" | "yes" | "1"
            ) =>
        {
            Some((
                "0A000",
                "standard_conforming_strings = off is not supported through TideGate".into(),
            ))
        }
        _ => None,
    }
}

/// `-c name=value` (and `--name=value`) startup options.
fn parse_options(options: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut words = options.split_whitespace();
    while let Some(w) = words.next() {
        let kv = if w == "-c" {
            words.next()?
        } else {
            w.strip_prefix("-c").or_else(|| w.strip_prefix("--"))?
        };
        let (k, v) = kv.split_once('=')?;
        out.push((k.replace('-', "_"), v.to_owned()));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::parse_options;

    #[test]
    fn startup_options_accept_only_settings() {
        assert_eq!(
            parse_options("-c search_path=a -csearch-x=1 --work_mem=4MB"),
            Some(vec![
                ("search_path".into(), "a".into()),
                ("search_x".into(), "1".into()),
                ("work_mem".into(), "4MB".into())
            ])
        );
        assert_eq!(parse_options("-d 5"), None);
        let refused = |o: &str| {
            let mut p = std::collections::BTreeMap::new();
            p.insert("user".to_owned(), "app".to_owned());
            p.insert("options".to_owned(), o.to_owned());
            super::client_params(p, "postgres").err().map(|e| e.0)
        };
        assert_eq!(refused("-c role=r1"), Some("42501"));
        assert_eq!(refused("-c ROLE=r1"), Some("42501"));
        assert_eq!(refused("--session-authorization=r1"), Some("42501"));
        assert_eq!(refused("-c standard_conforming_strings=off"), Some("0A000"));
        assert_eq!(refused("-c standard_conforming_strings=on"), None);
        assert_eq!(refused("-c search_path=a"), None);
        assert_eq!(parse_options("-c novalue"), None);
        let encoding = |e: &str| {
            let mut p = std::collections::BTreeMap::new();
            p.insert("user".to_owned(), "app".to_owned());
            p.insert("client_encoding".to_owned(), e.to_owned());
            super::client_params(p, "postgres").map(|c| c.gucs)
        };
        assert_eq!(
            encoding("utf-8"),
            Ok(vec![("client_encoding".into(), "UTF8".into())])
        );
        assert_eq!(encoding("klingon").err().map(|e| e.0), Some("22023"));
    }
}
