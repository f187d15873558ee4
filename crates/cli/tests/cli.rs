//! The binary's configuration and logging surface: layered config with
//! errors that name the key and where it came from, `_FILE` secrets,
//! redaction, JSON logs.

mod common;

use std::process::Command;

use common::binary;

fn run(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(binary());
    cmd.current_dir(dir).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn defaults_are_valid_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(dir.path(), &["config", "check"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("configuration is valid"), "{out}");
    let (code, out, _) = run(dir.path(), &["config", "print"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("sqlite://data/ledgerbridge.db"), "{out}");
    assert!(out.contains("max_age_hours = 72"), "{out}");
}

#[test]
fn an_unknown_key_in_the_file_is_named_with_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ledgerbridge.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\nlistn = \"x\"\n",
    )
    .unwrap();
    let (code, _, err) = run(dir.path(), &["config", "check"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("server.listn"), "{err}");
    assert!(err.contains("ledgerbridge.toml"), "{err}");
    // A misspelt section too.
    std::fs::write(
        dir.path().join("ledgerbridge.toml"),
        "[enigne]\nworkers = 4\n",
    )
    .unwrap();
    let (code, _, err) = run(dir.path(), &["config", "check"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("enigne"), "{err}");
}

#[test]
fn a_mistyped_env_var_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(
        dir.path(),
        &["config", "check"],
        &[("LEDGERBRIDGE__ENGINE__WORKERS", "lots")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("engine.workers"), "{err}");
    assert!(err.contains("LEDGERBRIDGE__ENGINE__WORKERS"), "{err}");
    let (code, _, err) = run(
        dir.path(),
        &["config", "check"],
        &[("LEDGERBRIDGE__ENGINE__WORKRS", "4")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("LEDGERBRIDGE__ENGINE__WORKRS"), "{err}");
}

#[test]
fn env_overrides_the_file_and_file_secrets_are_read_and_redacted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ledgerbridge.toml"),
        r#"
[engine]
workers = 8

[connections.kashflow]
base_url = "http://127.0.0.1:9/kashflow/v2"
username = "accounts"
password = "in-the-file"
memorable_word = "pineapple"
"#,
    )
    .unwrap();
    let secret = dir.path().join("kf-password");
    std::fs::write(&secret, "from-a-secret-file\n").unwrap();
    let hash = dir.path().join("oc-hash");
    std::fs::write(&hash, "hash-key-from-file").unwrap();
    let (code, out, err) = run(
        dir.path(),
        &["config", "print"],
        &[
            ("LEDGERBRIDGE__ENGINE__WORKERS", "3"),
            (
                "LEDGERBRIDGE__CONNECTIONS__KASHFLOW__PASSWORD_FILE",
                secret.to_str().unwrap(),
            ),
            (
                "LEDGERBRIDGE__SOURCES__ORDERCLOUD__SHOP__HASH_KEY_FILE",
                hash.to_str().unwrap(),
            ),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("workers = 3"), "{out}");
    assert!(out.contains("[sources.ordercloud.shop]"), "{out}");
    for secret in [
        "in-the-file",
        "from-a-secret-file",
        "hash-key-from-file",
        "pineapple",
    ] {
        assert!(!out.contains(secret), "{secret} printed: {out}");
    }
    assert!(out.contains("[redacted]"), "{out}");
    // A _FILE that cannot be read is an error naming the variable.
    let (code, _, err) = run(
        dir.path(),
        &["config", "check"],
        &[(
            "LEDGERBRIDGE__CONNECTIONS__KASHFLOW__PASSWORD_FILE",
            "/nonexistent/pw",
        )],
    );
    assert_ne!(code, 0);
    assert!(err.contains("PASSWORD_FILE"), "{err}");
}

#[test]
fn values_that_must_parse_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(
        dir.path(),
        &["config", "check"],
        &[("LEDGERBRIDGE__DATABASE__URL", "mysql://nope")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("[database] url"), "{err}");
    let (code, _, err) = run(
        dir.path(),
        &["--config", "missing.toml", "config", "check"],
        &[],
    );
    assert_ne!(code, 0);
    assert!(err.contains("missing.toml"), "{err}");
}

/// `--log-format json`: one JSON object per line, and the database
/// password never appears in the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let pg = common::PgDb::create().await;
    let url = pg.url.replace("postgres@", "postgres:hunter2-secret@");
    let port = common::free_port();
    let child = Command::new(binary())
        .current_dir(dir.path())
        .args(["--log-format", "json", "--database", &url, "run"])
        .env("LEDGERBRIDGE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "engine did not get ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let logs =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!logs.contains("hunter2-secret"), "{logs}");
    let mut json_lines = 0;
    for line in logs.lines().filter(|l| l.starts_with('{')) {
        let v: serde_json::Value = serde_json::from_str(line).expect(line);
        assert!(v.get("level").is_some(), "{line}");
        json_lines += 1;
    }
    assert!(json_lines >= 2, "{logs}");
    assert!(logs.contains("ledgerbridge is up"), "{logs}");
}
