//! Replaying a client's startup parameters on a pooled server connection.

use std::sync::{Arc, Mutex, Weak};

/// A session's startup parameters (sorted by name), shared: sessions that sent the same ones
/// hold one allocation, and a server connection holds the one it was last set up with, so
/// telling whether a connection already has a session's settings is a pointer comparison
/// (a content comparison only when the pointers differ).
pub(super) type Gucs = Arc<Settings>;

/// Startup parameters: (name, value) pairs.
type Settings = [(String, String)];

/// Settings sessions hold now, weakly (the last session's going frees them).
static RECENT: Mutex<Vec<Weak<Settings>>> = Mutex::new(Vec::new());
/// Distinct settings remembered at most: beyond them a session's are its own (compared by
/// content, which is still right).
const RECENT_MAX: usize = 64;

/// `gucs` as held by any session that sent the same.
pub(super) fn shared(gucs: Vec<(String, String)>) -> Gucs {
    let mut recent = RECENT.lock().unwrap_or_else(|e| e.into_inner());
    recent.retain(|w| w.strong_count() > 0);
    if let Some(same) = recent
        .iter()
        .filter_map(Weak::upgrade)
        .find(|g| **g == *gucs)
    {
        return same;
    }
    let gucs: Gucs = gucs.into();
    if recent.len() < RECENT_MAX {
        recent.push(Arc::downgrade(&gucs));
    }
    gucs
}

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
    use super::{replay_sql, shared, Gucs, RECENT, RECENT_MAX};
    use std::sync::Arc;

    #[test]
    fn sessions_with_the_same_settings_share_them() {
        let one = || vec![("application_name".to_owned(), "shared-test".to_owned())];
        let a = shared(one());
        let b = shared(one());
        assert!(Arc::ptr_eq(&a, &b));
        let other = shared(vec![(
            "application_name".to_owned(),
            "other-test".to_owned(),
        )]);
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(
            *other,
            [("application_name".to_owned(), "other-test".to_owned())]
        );
        // At most RECENT_MAX are remembered: beyond them a session's settings are its own.
        let name = |i: usize| vec![("application_name".to_owned(), format!("bound-{i}"))];
        let many: Vec<Gucs> = (0..RECENT_MAX + 6).map(|i| shared(name(i))).collect();
        assert!(RECENT.lock().unwrap().len() <= RECENT_MAX);
        let last = RECENT_MAX + 5;
        assert_eq!(*shared(name(last)), *many[last]);
        // Once no session holds them they are forgotten, and new settings take their places.
        drop((a, b, many));
        let (x, y) = (shared(name(999)), shared(name(999)));
        assert!(Arc::ptr_eq(&x, &y));
        assert!(RECENT.lock().unwrap().len() <= RECENT_MAX);
    }

    #[test]
    fn names_and_values_are_quoted() {
        let sql = replay_sql(&[("a\"b".into(), "it's \\ x".into())]);
        assert_eq!(sql, "RESET ALL;SET \"a\"\"b\" TO E'it''s \\\\ x'");
        assert_eq!(replay_sql(&[]), "RESET ALL");
    }
}
