//! The real binary's auth commands and start-up rules: `folio token` mints a working token (and, with `--role`,
//! sets the role), production refuses both `folio token` and serving without a secret, and `folio --help`
//! lists every setting.

use std::process::{Command, Output};

use serde_json::json;

use crate::helpers::{Fixture, TEST_SECRET, TestApp};

/// Runs `folio <args>` against `database_url` with `env`, in an empty directory (so no `.env` is read).
fn folio(args: &[&str], database_url: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_folio"));
    cmd.args(args)
        .current_dir(dir.path())
        .env("DATABASE_URL", database_url)
        .env("NO_COLOR", "1")
        .env_remove("FOLIO_ENV")
        .env_remove("FOLIO_JWT_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run folio")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn folio_token_prints_a_token_the_server_accepts_and_can_make_an_admin() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let out = folio(
        &["token", "--email", "Alice@Example.com", "--role", "ADMIN"],
        app.db.url(),
        &[("FOLIO_JWT_SECRET", TEST_SECRET)],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = stdout.lines().last().expect("a last line").trim();
    let body = app
        .gql_as(
            Some(token),
            "{ me { id role } users { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["me"]["id"], f.alice.to_string(), "{body}");
    assert_eq!(body["data"]["me"]["role"], "ADMIN");
    assert_eq!(body["data"]["users"]["totalCount"], 3);

    // An unknown email is an error, not a token.
    let out = folio(
        &["token", "--email", "nobody@example.com"],
        app.db.url(),
        &[("FOLIO_JWT_SECRET", TEST_SECRET)],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nobody@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_refuses_dev_tokens_and_serving_without_a_secret() {
    let app = TestApp::spawn().await;
    Fixture::create(&app.store).await;
    let out = folio(
        &["token", "--email", "alice@example.com"],
        app.db.url(),
        &[
            ("FOLIO_ENV", "production"),
            ("FOLIO_JWT_SECRET", TEST_SECRET),
        ],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"));

    let out = folio(
        &["serve", "--bind", "127.0.0.1:0", "--no-demo"],
        app.db.url(),
        &[("FOLIO_ENV", "production")],
    );
    assert!(!out.status.success(), "serving must not start");
    assert!(String::from_utf8_lossy(&out.stderr).contains("FOLIO_JWT_SECRET"));

    // A secret shorter than 32 bytes is a configuration error in any environment.
    let out = folio(
        &["schema"],
        app.db.url(),
        &[("FOLIO_JWT_SECRET", "too short")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FOLIO_JWT_SECRET"));
}

#[test]
fn help_lists_every_setting_and_a_bad_value_names_its_variable() {
    let out = folio(&["--help"], "sqlite::memory:", &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for name in folio::config::setting_variables() {
        assert!(
            help.contains(&format!("env: {name}")),
            "{name} missing from --help"
        );
    }
    // After a subcommand too, and an invalid value is reported under the variable's name.
    let out = folio(
        &["schema"],
        "sqlite::memory:",
        &[("FOLIO_DB_MAX_CONNECTIONS", "many")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FOLIO_DB_MAX_CONNECTIONS"));
    let out = folio(&["schema", "--max-depth", "7"], "sqlite::memory:", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
