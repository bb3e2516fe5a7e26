use super::*;
use crate::cache::relations::Relation;
use tidegate_sql::{classify, NoLookup};

fn rels() -> DbRelations {
    let mut r = DbRelations::default();
    let plain = Relation::default();
    r.by_name.insert("t".into(), plain.clone());
    r.by_name.insert(
        "m".into(),
        Relation {
            time_column: Some("time".into()),
            ..plain.clone()
        },
    );
    r.by_name.insert(
        "p".into(),
        Relation {
            family: vec!["p_2024".into()],
            ..plain.clone()
        },
    );
    r.by_name.insert(
        "p_2024".into(),
        Relation {
            family: vec!["p".into()],
            ..plain.clone()
        },
    );
    r.by_name.insert(
        "u".into(),
        Relation {
            uncacheable: Some("unlogged table"),
            ..plain.clone()
        },
    );
    r.by_name.insert(
        "parent".into(),
        Relation {
            cascades: vec!["child".into(), "grandchild".into()],
            ..plain.clone()
        },
    );
    r.by_name.insert(
        "events".into(),
        Relation {
            triggers: true,
            ..plain.clone()
        },
    );
    r.by_name.insert(
        "v".into(),
        Relation {
            bases: vec!["t".into()],
            ..plain
        },
    );
    r
}

#[test]
fn writes_invalidate_what_cascades_and_triggers_change() {
    let w = write("DELETE FROM parent WHERE id = 1");
    assert!(w.contains(&"tg:t:db:child".to_owned()), "{w:?}");
    assert!(w.contains(&"tg:t:db:grandchild".to_owned()), "{w:?}");
    let w = write("INSERT INTO events VALUES (1)");
    assert!(w.contains(&"tg:d:db".to_owned()), "{w:?}");
    let w = write("TRUNCATE parent CASCADE");
    assert!(w.contains(&"tg:d:db".to_owned()), "{w:?}");
    for role in [
        "SET ROLE bob",
        "SET SESSION AUTHORIZATION bob",
        "RESET ROLE",
    ] {
        assert_eq!(write(role), Vec::<String>::new(), "{role}");
    }
    assert!(!write("SET ROLE bob; DELETE FROM t").is_empty());
    let w = write("DO $$BEGIN DELETE FROM t; END$$");
    assert!(w.contains(&"tg:d:db".to_owned()), "{w:?}");
}

fn read(sql: &str) -> Result<ReadDeps, Bypass> {
    read_deps(
        &Config::default(),
        "db",
        sql,
        &classify(sql, &NoLookup),
        &rels(),
        &[],
        0,
    )
}

fn write(sql: &str) -> Vec<String> {
    write_gens(
        &Config::default(),
        "db",
        sql,
        &classify(sql, &NoLookup),
        Some(&rels()),
    )
}

/// Every counter some write bumps that the read holds.
fn shared(r: &ReadDeps, w: &[String]) -> bool {
    w.iter().any(|g| r.gens.contains(g))
}

#[test]
fn reads_depend_on_their_tables_views_and_never_on_uncacheable_ones() {
    let r = read("SELECT * FROM t").unwrap();
    assert_eq!(
        r.gens,
        ["tg:epoch", "tg:d:db", "tg:t:db:t", "tg:a:db:t"].map(String::from)
    );
    assert_eq!(r.ttl, Duration::from_secs(60));
    assert!(read("SELECT * FROM v")
        .unwrap()
        .gens
        .contains(&"tg:t:db:t".into()));
    assert_eq!(read("SELECT * FROM u"), Err("unlogged table"));
    assert_eq!(read("SELECT * FROM nowhere"), Err("unknown relation"));
    assert_eq!(read("SELECT now() FROM t"), Err("not a cacheable read"));
    assert_eq!(
        read("SELECT * FROM t FOR UPDATE"),
        Err("not a cacheable read")
    );
    assert_eq!(
        read("SELECT /* tidegate:nocache */ * FROM t"),
        Err("tidegate:nocache hint")
    );
    assert_eq!(
        read("SELECT /* tidegate:cache ttl=7s */ * FROM t")
            .unwrap()
            .ttl,
        Duration::from_secs(7)
    );
}

#[test]
fn every_write_bumps_a_counter_its_readers_hold() {
    let reads = [
        "SELECT * FROM t",
        "SELECT * FROM v",
        "SELECT * FROM m",
        "SELECT * FROM m WHERE time >= '2024-01-01' AND time < '2024-01-02'",
        "SELECT * FROM p",
    ];
    let writes: [(&str, &[usize]); 9] = [
        ("COPY t FROM STDIN", &[0, 1]),
        (
            "COPY public.m (time, v) FROM STDIN WITH (FORMAT csv)",
            &[2, 3],
        ),
        ("INSERT INTO t VALUES (1)", &[0, 1]),
        ("UPDATE t SET a = 1", &[0, 1]),
        ("DELETE FROM m", &[2, 3]),
        (
            "INSERT INTO m (time, v) VALUES ('2024-01-01 12:00', 1)",
            &[2, 3],
        ),
        ("INSERT INTO p_2024 VALUES (1)", &[4]),
        ("TRUNCATE t", &[0, 1]),
        ("SELECT my_writer()", &[0, 1, 2, 3, 4]),
    ];
    for (w, readers) in writes {
        let bumped = write(w);
        for &i in readers {
            let r = read(reads[i]).unwrap();
            assert!(shared(&r, &bumped), "{w} must invalidate {}", reads[i]);
        }
    }
}

#[test]
fn time_aware_writes_keep_ranges_they_do_not_touch() {
    let january =
        read("SELECT * FROM m WHERE time >= '2024-01-01' AND time < '2024-01-03'").unwrap();
    let june = write("INSERT INTO m (time, v) VALUES ('2024-06-01 12:00', 1), ('2024-06-02', 2)");
    assert!(!shared(&january, &june), "{june:?}");
    let inside = write("INSERT INTO m (time, v) VALUES ('2024-01-02 12:00+00', 1)");
    assert!(shared(&january, &inside));
    // Times that cannot be read, or rows placed by position, invalidate the whole table.
    assert!(shared(
        &january,
        &write("INSERT INTO m (time, v) VALUES (now(), 1)")
    ));
    assert!(shared(
        &january,
        &write("INSERT INTO m VALUES ('2024-06-01', 1)")
    ));
    assert!(shared(
        &january,
        &write("INSERT INTO m (time, v) VALUES ('2024-06-01', 1) ON CONFLICT (time) DO UPDATE SET v = 2")
    ));
}

#[test]
fn copy_bumps_its_table_not_the_database() {
    assert_eq!(write("COPY t FROM STDIN"), vec!["tg:t:db:t".to_owned()]);
    assert_eq!(
        write("copy \"T\"(a) from stdin"),
        vec!["tg:t:db:T".to_owned()]
    );
}

#[test]
fn statements_that_change_no_data_bump_nothing_and_ddl_without_tables_bumps_all() {
    for sql in [
        "SET search_path = a",
        "BEGIN",
        "COMMIT",
        "SELECT * FROM t",
        "SHOW TimeZone",
    ] {
        assert!(write(sql).is_empty(), "{sql}: {:?}", write(sql));
    }
    assert_eq!(write("DROP ROLE bob"), vec![EPOCH.to_owned()]);
    assert!(write("REVOKE SELECT ON t FROM bob")
        .iter()
        .any(|g| g == "tg:t:db:t" || g == EPOCH));
}
