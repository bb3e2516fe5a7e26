//! Quoting for SQL the broker writes itself.

/// A PostgreSQL identifier, quoted: `"` around it, inner `"` doubled. Names are taken exactly as
/// written, as the access-control plugin compares them (lower case unless the SQL quoted them).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn inner_quotes_are_doubled() {
        assert_eq!(super::quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(super::quote_ident("Mixed"), "\"Mixed\"");
    }
}
