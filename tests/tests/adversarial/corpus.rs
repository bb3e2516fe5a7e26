//! The hostile corpus (`tests/fixtures/hostile.sql`) as `reader`, over the simple protocol.
//!
//! Every case runs twice: once on a connection of its own, once on one connection shared by
//! all cases in order (what a session remembers, a later statement must not inherit). After
//! each case the database is compared with the last known state; a case that changed it is
//! reported with the change, and the fixture is restored so that later cases are judged on
//! their own. At the end the database must equal its state before the first case.

use super::{audit_settled, diff, simple, snapshot, Env, FIXTURE};
use std::collections::BTreeMap;
use tidegate_tests::raw::Raw;

/// What a case must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A genuine read: it must succeed.
    Allow,
    /// Refused with an error (any SQLSTATE), and no effect.
    Deny,
    /// Either, but no effect (statements whose verdict the issue leaves open).
    Any,
}

/// One corpus entry.
#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) line: usize,
    pub(crate) verdict: Verdict,
    pub(crate) note: String,
    pub(crate) sql: String,
}

/// Parses the corpus format documented at the top of `tests/fixtures/hostile.sql`.
pub(crate) fn parse(text: &str, dir: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    let mut current: Option<(usize, Verdict, String, Vec<&str>)> = None;
    let finish = |c: Option<(usize, Verdict, String, Vec<&str>)>, cases: &mut Vec<Case>| {
        if let Some((line, verdict, note, lines)) = c {
            let raw = lines.join("\n");
            let raw = raw.trim_matches(|c| c == '\n' || c == ' ');
            assert!(!raw.is_empty(), "hostile.sql line {line}: empty case");
            let sql = raw
                .replace("<CR>", "\r")
                .replace("<LF>", "\n")
                .replace("<FF>", "\x0c")
                .replace("<TAB>", "\t")
                .replace("{DIR}", dir);
            cases.push(Case {
                line,
                verdict,
                note,
                sql,
            });
        }
    };
    for (i, line) in text.lines().enumerate() {
        if let Some(rest) = line.strip_prefix("-- expect: ") {
            finish(current.take(), &mut cases);
            let (word, note) = rest.split_once(' ').unwrap_or((rest, ""));
            let verdict = match word {
                "allow" => Verdict::Allow,
                "deny" => Verdict::Deny,
                "any" => Verdict::Any,
                other => panic!("hostile.sql line {}: unknown verdict {other:?}", i + 1),
            };
            current = Some((i + 1, verdict, note.trim().to_owned(), Vec::new()));
        } else if line.starts_with("-- ===") || line.starts_with("-- ═══") {
            // A section heading.
        } else if let Some((_, _, _, lines)) = current.as_mut() {
            lines.push(line);
        }
    }
    finish(current.take(), &mut cases);
    cases
}

#[test]
fn the_corpus_format_parses() {
    let cases = parse(
        "-- header\n-- expect: deny x\nSELECT 1 --<CR>; DELETE\n\n-- expect: allow\nTABLE t\n\
         -- more\n-- ═══ heading\n-- expect: any\nCOPY t TO '{DIR}/f'\n",
        "/d",
    );
    assert_eq!(cases.len(), 3);
    assert_eq!(cases[0].sql, "SELECT 1 --\r; DELETE");
    assert_eq!(cases[0].note, "x");
    assert_eq!(cases[1].sql, "TABLE t\n-- more");
    assert_eq!(cases[2].sql, "COPY t TO '/d/f'");
    assert_eq!(cases[2].verdict, Verdict::Any);
}

async fn reader(env: &Env) -> Raw {
    env.raw("reader").await
}

/// Restores the fixture after a case changed the database, and reconnects the victim. What a
/// leaked attack left holding locks (a prepared transaction, a pooled backend) is ended first,
/// so that the restore never waits forever.
async fn restore(env: &Env) {
    let c = env.pg.connect("postgres").await;
    let text = |msgs: Vec<tokio_postgres::SimpleQueryMessage>| -> Vec<String> {
        msgs.into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect()
    };
    let gids = c
        .simple_query("SELECT gid FROM pg_prepared_xacts")
        .await
        .map(text)
        .unwrap_or_default();
    for gid in gids {
        let _ = c
            .batch_execute(&format!("ROLLBACK PREPARED '{}'", gid.replace('\'', "''")))
            .await;
    }
    let mut restored = false;
    for _ in 0..3 {
        match c
            .batch_execute(&format!("SET lock_timeout = '5s'; {FIXTURE}"))
            .await
        {
            Ok(()) => {
                restored = true;
                break;
            }
            Err(e) => {
                println!("    restoring the fixture: {e:?}; ending the sessions holding its locks");
                let _ = c
                    .simple_query(
                        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE \
                         l.pid <> pg_backend_pid() AND l.relation >= 16384",
                    )
                    .await;
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    assert!(restored, "the fixture could not be restored (see above)");
    let _ = c
        .batch_execute(
            "ALTER ROLE r1 NOSUPERUSER NOCREATEROLE NOCREATEDB NOLOGIN NOBYPASSRLS; \
             ALTER ROLE r1 RESET ALL; ALTER DATABASE postgres RESET ALL; \
             ALTER ROLE postgres PASSWORD NULL",
        )
        .await;
    let auto = env.pg.dir.join("data/postgresql.auto.conf");
    if std::fs::read_to_string(auto).is_ok_and(|t| t.contains("work_mem")) {
        let _ = c.batch_execute("ALTER SYSTEM RESET work_mem").await;
    }
    let victimdb = c
        .simple_query("SELECT count(*) FROM pg_database WHERE datname = 'victimdb'")
        .await
        .map(text)
        .unwrap_or_default();
    if victimdb.first().map(String::as_str) == Some("0") {
        let _ = c.batch_execute("CREATE DATABASE victimdb").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostile_corpus_is_refused_and_changes_nothing() {
    let env = Env::start().await;
    let text = std::fs::read_to_string(tidegate_tests::fixture("hostile.sql"))
        .expect("tests/fixtures/hostile.sql");
    let cases = parse(&text, &env.files.display().to_string());
    let count = |v: Verdict| cases.iter().filter(|c| c.verdict == v).count();
    assert!(
        cases.len() >= 200,
        "the corpus holds at least 200 cases, not {}",
        cases.len()
    );
    // A session that attacks would kill: its disappearance is a change.
    let victim_url = format!(
        "{}?application_name=adversarial-victim",
        env.pg.url("postgres")
    );
    let mut victim = tidegate_tests::connect(&victim_url)
        .await
        .expect("victim session");
    audit_settled(&env).await;
    let initial = snapshot(&env).await;
    let mut baseline = initial.clone();
    let mut failures: Vec<String> = Vec::new();
    let mut changed_by: Vec<String> = Vec::new();
    let mut runs = 0usize;
    for pass in ["own connection", "shared connection"] {
        let mut shared: Option<Raw> = None;
        for case in &cases {
            let mut own;
            let conn = if pass == "own connection" {
                own = reader(&env).await;
                &mut own
            } else {
                if shared.is_none() {
                    shared = Some(reader(&env).await);
                }
                shared.as_mut().expect("shared connection")
            };
            let outcome = simple(conn, &case.sql).await;
            runs += 1;
            if !outcome.closed && outcome.status != b'I' {
                // Leave no transaction open for the next case of a shared connection.
                let _ = simple(conn, "ROLLBACK").await;
            }
            let after = snapshot(&env).await;
            let changes = diff(&baseline, &after);
            let what = format!(
                "hostile.sql:{} [{}] expect {:?}{}: {:?}",
                case.line,
                pass,
                case.verdict,
                if case.note.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", case.note)
                },
                case.sql
            );
            let mut wrong = match case.verdict {
                Verdict::Deny if !outcome.refused() => {
                    Some(format!("{what}\n    NOT REFUSED: {}", outcome.summary()))
                }
                Verdict::Allow if outcome.error.is_some() || outcome.closed => {
                    Some(format!("{what}\n    REFUSED A READ: {}", outcome.summary()))
                }
                _ => None,
            };
            if !changes.is_empty() {
                let text = format!(
                    "{what}\n    CHANGED THE DATABASE ({}):\n      {}",
                    outcome.summary(),
                    changes.join("\n      ")
                );
                changed_by.push(format!("hostile.sql:{} [{pass}]", case.line));
                wrong = Some(match wrong {
                    Some(w) => format!("{w}\n{text}"),
                    None => text,
                });
                restore(&env).await;
                if victim.is_closed() {
                    victim = tidegate_tests::connect(&victim_url)
                        .await
                        .expect("victim session again");
                }
                baseline = snapshot(&env).await;
            }
            if let Some(w) = wrong {
                println!("{w}");
                failures.push(w);
                if pass == "shared connection" {
                    // What the failed case left in the session must not blame later cases.
                    shared = None;
                }
            } else if outcome.closed && pass == "shared connection" {
                shared = None;
            }
        }
    }
    drop(victim);
    let end = snapshot(&env).await;
    let mut end_changes = diff(&initial, &end);
    // The victim session was closed on purpose just above.
    end_changes.retain(|l| !l.starts_with("victim session"));
    println!(
        "adversarial corpus: {} cases ({} allow, {} deny, {} any), {} runs over 2 passes, \
         {} wrong, {} changed the database",
        cases.len(),
        count(Verdict::Allow),
        count(Verdict::Deny),
        count(Verdict::Any),
        runs,
        failures.len(),
        changed_by.len()
    );
    let summary: BTreeMap<&str, usize> = [
        (
            "not refused",
            failures
                .iter()
                .filter(|f| f.contains("NOT REFUSED"))
                .count(),
        ),
        (
            "reads refused",
            failures
                .iter()
                .filter(|f| f.contains("REFUSED A READ"))
                .count(),
        ),
        ("changed the database", changed_by.len()),
    ]
    .into_iter()
    .collect();
    assert!(
        failures.is_empty() && end_changes.is_empty(),
        "{} of {runs} runs went wrong {summary:?}; the database differs from its first state \
         in: {end_changes:#?}\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}
