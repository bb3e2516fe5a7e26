//! `tidegate check`: validates without network I/O; exits non-zero with file:line:column.

use std::process::Command;

fn check(contents: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!(
        "tidegate-cli-{}-{}",
        std::process::id(),
        contents.len()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("t.toml");
    std::fs::write(&path, contents).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["check", "--config"])
        .arg(&path)
        // An unreachable upstream: `check` must not try to connect.
        .env("TIDEGATE__UPSTREAM__PRIMARY__HOST", "192.0.2.1")
        .output()
        .expect("run tidegate");
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_example_config_checks_ok() {
    let example = include_str!("../../../config/tidegate.example.toml");
    let (ok, text) = check(example);
    assert!(ok, "{text}");
    assert!(text.contains(": ok"), "{text}");
}

#[test]
fn bad_configs_fail_with_a_location() {
    let cases = [
        ("[pool]\nsize = = 1\n", ":2:8:", "invalid"),
        (
            "[pool]\nsise = 1\n[[users]]\nname = \"a\"\npassword = \"a\"\n",
            ":",
            "sise",
        ),
        (
            "[[users]]\nname = \"a\"\npassword = \"a\"\n[pool]\nsize = 0\n",
            ":5:1: pool.size",
            "must be at least 1",
        ),
        ("[listen]\nsql = \"not an address\"\n", ":2:", "address"),
        ("", "users", "at least one"),
        (
            "[routing]\nprimary_functions = [\"a.b.c\"]\n[[users]]\nname = \"a\"\npassword = \"a\"\n",
            ":2:1: routing.primary_functions",
            "a.b.c",
        ),
    ];
    for (src, location, words) in cases {
        let (ok, text) = check(src);
        assert!(!ok, "{src:?} must fail");
        assert!(text.contains("t.toml"), "file name in {text}");
        assert!(text.contains(location), "{location:?} in {text}");
        assert!(text.contains(words), "{words:?} in {text}");
    }
}

#[test]
fn hash_password_prints_a_postgres_verifier() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"secret\n")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let v = String::from_utf8_lossy(&out.stdout);
    assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
    assert!(!v.contains("secret"));
}
