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
