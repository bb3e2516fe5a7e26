//! Replaying a client's startup parameters on a pooled server connection.

/// `RESET ALL` followed by one `SET` per parameter, with identifiers and values quoted so that
/// no parameter a client sends can change the statement's shape.
pub(super) fn replay_sql(gucs: &[(String, String)]) -> String {
    let mut sql = String::from("RESET ALL");
    for (k, v) in gucs {
        sql.push_str(";SET \"");
        sql.push_str(&k.replace('"', "\"\""));
        sql.push_str("\" TO E'");
        for c in v.chars() {
            match c {
                '\'' => sql.push_str("''"),
                '\\' => sql.push_str("\\\\"),
                c => sql.push(c),
            }
        }
        sql.push('\'');
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::replay_sql;

    #[test]
    fn names_and_values_are_quoted() {
        let sql = replay_sql(&[("a\"b".into(), "it's \\ x".into())]);
        assert_eq!(sql, "RESET ALL;SET \"a\"\"b\" TO E'it''s \\\\ x'");
        assert_eq!(replay_sql(&[]), "RESET ALL");
    }
}
