//! `schema.graphql` at the repository root is exactly what `folio schema` prints and what the server serves.

use crate::helpers::TestApp;

#[test]
fn schema_file_matches_the_built_schema() {
    let on_disk = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql");
    let built = folio::graphql::schema::sdl();
    assert!(
        on_disk == built,
        "schema.graphql is out of date: run `cargo run -- schema > schema.graphql` and commit it"
    );
}

#[test]
fn folio_schema_prints_the_sdl() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_folio"))
        .arg("schema")
        .output()
        .expect("run folio schema");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        folio::graphql::schema::sdl()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_the_same_sdl() {
    let app = TestApp::spawn().await;
    let res = app.get("/schema.graphql").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), folio::graphql::schema::sdl());
}

#[test]
fn subscriptions_file_matches_the_built_schema() {
    let on_disk = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/subscriptions.graphql"
    ))
    .expect("subscriptions.graphql");
    let built = folio::graphql::schema::subscriptions_sdl();
    assert!(
        on_disk == built,
        "subscriptions.graphql is out of date: run `cargo run -- schema --subscriptions > subscriptions.graphql`"
    );
    // Every subscription field is there, and nothing of it leaks into the subgraph schema.
    for field in [
        "postPublished",
        "postUpdated(",
        "commentAdded(",
        "directive @live",
    ] {
        assert!(built.contains(field), "{field}");
        assert!(!folio::graphql::schema::sdl().contains(field), "{field}");
    }
}
