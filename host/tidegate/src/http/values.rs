//! Values between JSON and PostgreSQL's text format.
//!
//! Out: a result value in text format (the session runs with `DateStyle=ISO`,
//! `IntervalStyle=iso_8601`) becomes typed JSON by its column's type OID — integers and floats
//! as numbers, numeric as a string (no precision lost), bool, json/jsonb inline, timestamps in
//! ISO-8601 with an offset, intervals in ISO-8601, bytea in base64, arrays as arrays, NULL as
//! null, everything else as its text. In: JSON parameters become text parameters whose type
//! PostgreSQL infers from the statement.

use base64::Engine;
use tidegate_plugins::unhex;

/// How a column's text values become JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv {
    /// `t`/`f` → true/false.
    Bool,
    /// Digits → a number.
    Int,
    /// A number, or a string for NaN and the infinities.
    Float,
    /// Inline JSON.
    Json,
    /// `\x…` hex → base64.
    Bytea,
    /// `YYYY-MM-DD hh:mm:ss[.f]±hh[:mm]` → ISO-8601 with `T` and a full offset.
    TimestampTz,
    /// `YYYY-MM-DD hh:mm:ss[.f]` → ISO-8601 with `T`.
    Timestamp,
    /// A string.
    Text,
}

/// A column's conversion: scalar, or an array of a scalar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnConv {
    /// The element conversion.
    pub conv: Conv,
    /// The column is an array.
    pub array: bool,
}

/// Built-in types: (OID, name, conversion, array OID).
const TYPES: &[(u32, &str, Conv, u32)] = &[
    (16, "bool", Conv::Bool, 1000),
    (17, "bytea", Conv::Bytea, 1001),
    (18, "char", Conv::Text, 1002),
    (19, "name", Conv::Text, 1003),
    (20, "int8", Conv::Int, 1016),
    (21, "int2", Conv::Int, 1005),
    (23, "int4", Conv::Int, 1007),
    (25, "text", Conv::Text, 1009),
    (26, "oid", Conv::Int, 1028),
    (114, "json", Conv::Json, 199),
    (700, "float4", Conv::Float, 1021),
    (701, "float8", Conv::Float, 1022),
    (1042, "bpchar", Conv::Text, 1014),
    (1043, "varchar", Conv::Text, 1015),
    (1082, "date", Conv::Text, 1182),
    (1083, "time", Conv::Text, 1183),
    (1114, "timestamp", Conv::Timestamp, 1115),
    (1184, "timestamptz", Conv::TimestampTz, 1185),
    (1186, "interval", Conv::Text, 1187),
    (1266, "timetz", Conv::Text, 1270),
    (1700, "numeric", Conv::Text, 1231),
    (2950, "uuid", Conv::Text, 2951),
    (3802, "jsonb", Conv::Json, 3807),
    (869, "inet", Conv::Text, 1041),
    (650, "cidr", Conv::Text, 651),
    (829, "macaddr", Conv::Text, 1040),
];

/// The conversion for type `oid`.
pub fn conv_for(oid: u32) -> ColumnConv {
    for &(t, _, conv, arr) in TYPES {
        if t == oid {
            return ColumnConv { conv, array: false };
        }
        if arr == oid {
            return ColumnConv { conv, array: true };
        }
    }
    ColumnConv {
        conv: Conv::Text,
        array: false,
    }
}

/// The type's name, for built-in types (`None` otherwise).
pub fn type_name(oid: u32) -> Option<String> {
    TYPES.iter().find_map(|&(t, name, _, arr)| {
        if t == oid {
            Some(name.to_owned())
        } else if arr == oid {
            Some(format!("{name}[]"))
        } else {
            None
        }
    })
}

/// Appends `s` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends one value of a column as JSON.
pub fn write_json(out: &mut Vec<u8>, conv: ColumnConv, text: Option<&[u8]>) {
    let Some(text) = text else {
        out.extend_from_slice(b"null");
        return;
    };
    let text = String::from_utf8_lossy(text);
    if conv.array {
        match parse_array(&text) {
            Some(tree) => write_tree(out, conv.conv, &tree),
            None => write_str(out, &text),
        }
    } else {
        write_scalar(out, conv.conv, &text);
    }
}

fn write_scalar(out: &mut Vec<u8>, conv: Conv, text: &str) {
    match conv {
        Conv::Bool => out.extend_from_slice(if text == "t" { b"true" } else { b"false" }),
        Conv::Int if is_number(text) => out.extend_from_slice(text.as_bytes()),
        Conv::Float if is_number(text) => out.extend_from_slice(text.as_bytes()),
        Conv::Json if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => {
            out.extend_from_slice(text.as_bytes())
        }
        Conv::Bytea => match text.strip_prefix("\\x").and_then(unhex) {
            Some(bytes) => {
                out.push(b'"');
                out.extend_from_slice(
                    base64::engine::general_purpose::STANDARD
                        .encode(bytes)
                        .as_bytes(),
                );
                out.push(b'"');
            }
            None => write_str(out, text),
        },
        Conv::TimestampTz => write_str(out, &iso_timestamp(text, true)),
        Conv::Timestamp => write_str(out, &iso_timestamp(text, false)),
        _ => write_str(out, text),
    }
}

/// A JSON number as PostgreSQL prints integers and finite floats.
fn is_number(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = b.strip_prefix(b"-").unwrap_or(b);
    !digits.is_empty()
        && digits[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
        && serde_json::from_str::<serde_json::Number>(s).is_ok()
}

/// `2024-01-02 03:04:05.6+00` → `2024-01-02T03:04:05.6+00:00`; infinities and BC dates as
/// they are.
pub fn iso_timestamp(text: &str, with_offset: bool) -> String {
    if text.len() < 19 || text.ends_with(" BC") || text.as_bytes()[10] != b' ' {
        return text.to_owned();
    }
    let mut s = String::with_capacity(text.len() + 3);
    s.push_str(&text[..10]);
    s.push('T');
    s.push_str(&text[11..]);
    if with_offset {
        // The offset starts at the last sign after the time of day.
        if let Some(pos) = s[19..].rfind(['+', '-']).map(|p| p + 19) {
            if s.len() - pos == 3 {
                s.push_str(":00");
            }
        }
    }
    s
}

/// An array literal's elements, nested as its dimensions are.
#[derive(Debug, PartialEq)]
enum Tree {
    Null,
    Item(String),
    List(Vec<Tree>),
}

/// Parses PostgreSQL's array output (`{1,2}`, `{{a,"b c"},{NULL,"d\"e"}}`, `[0:1]={…}`).
fn parse_array(text: &str) -> Option<Tree> {
    let body = match text.find("={") {
        Some(p) if text.starts_with('[') => &text[p + 1..],
        _ => text,
    };
    let mut chars = body.chars().peekable();
    let tree = parse_list(&mut chars)?;
    chars.next().is_none().then_some(tree)
}

fn parse_list(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<Tree> {
    if chars.next()? != '{' {
        return None;
    }
    let mut items = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(Tree::List(items));
    }
    loop {
        let item = match chars.peek()? {
            '{' => parse_list(chars)?,
            '"' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next()? {
                        '\\' => s.push(chars.next()?),
                        '"' => break,
                        c => s.push(c),
                    }
                }
                Tree::Item(s)
            }
            _ => {
                let mut s = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    s.push(c);
                    chars.next();
                }
                if s == "NULL" {
                    Tree::Null
                } else {
                    Tree::Item(s)
                }
            }
        };
        items.push(item);
        match chars.next()? {
            ',' => continue,
            '}' => return Some(Tree::List(items)),
            _ => return None,
        }
    }
}

fn write_tree(out: &mut Vec<u8>, conv: Conv, t: &Tree) {
    match t {
        Tree::Null => out.extend_from_slice(b"null"),
        Tree::Item(s) => write_scalar(out, conv, s),
        Tree::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_tree(out, conv, item);
            }
            out.push(b']');
        }
    }
}

/// A JSON parameter as a text parameter: null → NULL, scalars as their text, arrays as array
/// literals, objects as JSON text.
pub fn param_text(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Array(_) => {
            let mut s = String::new();
            array_literal(&mut s, v);
            Some(s)
        }
        Value::Object(_) => Some(v.to_string()),
    }
}

fn array_literal(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Array(items) => {
            out.push('{');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                array_literal(out, item);
            }
            out.push('}');
        }
        Value::Null => out.push_str("NULL"),
        other => {
            let text = param_text(other).unwrap_or_default();
            out.push('"');
            for c in text.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
    }
}

/// Appends one CSV field (RFC 4180): NULL is empty, an empty string is `""`.
pub fn write_csv_field(out: &mut Vec<u8>, text: Option<&[u8]>) {
    let Some(t) = text else { return };
    if !t.is_empty() && !t.iter().any(|c| matches!(c, b',' | b'"' | b'\n' | b'\r')) {
        out.extend_from_slice(t);
        return;
    }
    out.push(b'"');
    for &c in t {
        if c == b'"' {
            out.push(b'"');
        }
        out.push(c);
    }
    out.push(b'"');
}

/// Appends one field of COPY's text format: `\N` for NULL, backslash escapes otherwise.
pub fn write_copy_field(out: &mut Vec<u8>, text: Option<&str>) {
    let Some(t) = text else {
        out.extend_from_slice(b"\\N");
        return;
    };
    for &c in t.as_bytes() {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(oid: u32, text: Option<&str>) -> String {
        let mut out = Vec::new();
        write_json(&mut out, conv_for(oid), text.map(str::as_bytes));
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn scalars_are_typed() {
        assert_eq!(json(23, Some("42")), "42");
        assert_eq!(json(20, Some("-9007199254740993")), "-9007199254740993");
        assert_eq!(json(701, Some("2.5")), "2.5");
        assert_eq!(json(701, Some("NaN")), "\"NaN\"");
        assert_eq!(json(701, Some("-Infinity")), "\"-Infinity\"");
        assert_eq!(json(701, Some("1e+100")), "1e+100");
        assert_eq!(json(1700, Some("1.10")), "\"1.10\"");
        assert_eq!(json(16, Some("t")), "true");
        assert_eq!(json(25, Some("a\"b")), "\"a\\\"b\"");
        assert_eq!(json(25, None), "null");
        assert_eq!(json(3802, Some("{\"a\": [1]}")), "{\"a\": [1]}");
        assert_eq!(json(17, Some("\\x0001ff")), "\"AAH/\"");
        assert_eq!(
            json(2950, Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
            "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\""
        );
        assert_eq!(json(1186, Some("P1DT2H")), "\"P1DT2H\"");
    }

    #[test]
    fn timestamps_become_iso_8601() {
        assert_eq!(
            json(1184, Some("2024-01-02 03:04:05+00")),
            "\"2024-01-02T03:04:05+00:00\""
        );
        assert_eq!(
            json(1184, Some("2024-01-02 03:04:05.123456-05:30")),
            "\"2024-01-02T03:04:05.123456-05:30\""
        );
        assert_eq!(json(1184, Some("infinity")), "\"infinity\"");
        assert_eq!(
            json(1114, Some("2024-01-02 03:04:05.5")),
            "\"2024-01-02T03:04:05.5\""
        );
        assert_eq!(json(1082, Some("2024-01-02")), "\"2024-01-02\"");
    }

    #[test]
    fn arrays_nest() {
        assert_eq!(json(1007, Some("{1,2,NULL}")), "[1,2,null]");
        assert_eq!(
            json(1009, Some("{{a,\"b c\"},{NULL,\"d\\\"e\"}}")),
            "[[\"a\",\"b c\"],[null,\"d\\\"e\"]]"
        );
        assert_eq!(json(1007, Some("[0:1]={7,8}")), "[7,8]");
        assert_eq!(json(1009, Some("{}")), "[]");
        assert_eq!(json(1009, Some("{\"NULL\"}")), "[\"NULL\"]");
        // Malformed output degrades to a string, never a panic.
        assert_eq!(json(1007, Some("{1,2")), "\"{1,2\"");
    }

    #[test]
    fn params_become_text() {
        use serde_json::json;
        assert_eq!(param_text(&json!(null)), None);
        assert_eq!(param_text(&json!(3)).as_deref(), Some("3"));
        assert_eq!(
            param_text(&json!([1, null, "a\"b"])).as_deref(),
            Some("{\"1\",NULL,\"a\\\"b\"}")
        );
        assert_eq!(param_text(&json!({"k": 1})).as_deref(), Some("{\"k\":1}"));
    }

    #[test]
    fn csv_and_copy_escape() {
        let mut out = Vec::new();
        write_csv_field(&mut out, Some(b"a,\"b\""));
        out.push(b',');
        write_csv_field(&mut out, Some(b""));
        out.push(b',');
        write_csv_field(&mut out, None);
        assert_eq!(out, b"\"a,\"\"b\"\"\",\"\",");
        let mut out = Vec::new();
        write_copy_field(&mut out, Some("a\tb\\c\nd"));
        write_copy_field(&mut out, None);
        assert_eq!(out, b"a\\tb\\\\c\\nd\\N");
    }
}
