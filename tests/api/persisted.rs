//! Persisted documents over HTTP: automatic persisted queries (miss, retry with the text, then the hash alone;
//! POST and GET), hash mismatches, trusted documents by `documentId` from each manifest format, every
//! `FOLIO_DOCUMENTS` mode, CDN-cacheable GETs by id, and registrations shared by two instances over Redis.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest;

use crate::helpers::{
    Fixture, TestApp, TestDb, first_code, spawn_instance, test_config, uses_redis,
};
use folio::config::{Config, DocumentConfig, DocumentMode};

const FEED: &str = "query Feed { posts(first: 2) { nodes { id title } } }";
const ME: &str = "query Me { me { id } }";

fn sha256(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn apq(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

/// An app in `mode` with `manifests` (file name, JSON) written to a temporary directory.
async fn spawn(mode: DocumentMode, manifests: &[(&str, Value)]) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.documents = documents(mode, &dir, manifests);
    (TestApp::spawn_with(db, config).await, dir)
}

fn documents(
    mode: DocumentMode,
    dir: &tempfile::TempDir,
    manifests: &[(&str, Value)],
) -> DocumentConfig {
    let manifests = manifests
        .iter()
        .map(|(name, json)| {
            let path = dir.path().join(name);
            std::fs::write(&path, json.to_string()).expect("manifest written");
            path
        })
        .collect();
    DocumentConfig {
        mode,
        manifests,
        ..Config::default().documents
    }
}

async fn post(app: &TestApp, body: Value) -> (StatusCode, Value) {
    let res = app.post_graphql_as(None, body).await;
    let status = res.status();
    (status, res.json().await.expect("JSON body"))
}

async fn get(app: &TestApp, params: &[(&str, &str)]) -> reqwest::Response {
    app.client
        .get(format!("{}/graphql", app.base))
        .query(params)
        .send()
        .await
        .expect("request")
}

fn apollo_manifest(docs: &[(&str, &str)]) -> Value {
    json!({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": docs.iter().map(|(name, body)| json!({
            "id": sha256(body), "name": name, "type": "query", "body": body
        })).collect::<Vec<_>>()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apq_miss_then_register_then_hash_only_over_post_and_get() {
    let (app, _dir) = spawn(DocumentMode::Open, &[]).await;
    Fixture::create(&app.store).await;
    let hash = sha256(FEED);

    // POST: the hash alone is unknown; the link then sends the text with it; then the hash alone works.
    let (_, miss) = post(&app, json!({ "extensions": apq(&hash) })).await;
    assert_eq!(first_code(&miss), "PERSISTED_QUERY_NOT_FOUND", "{miss}");
    assert_eq!(miss["errors"][0]["message"], "PersistedQueryNotFound");
    let (status, registered) = post(&app, json!({ "query": FEED, "extensions": apq(&hash) })).await;
    assert_eq!(status, 200);
    let plain = app.gql(FEED, json!({})).await;
    assert_eq!(registered, plain);
    let (_, by_hash) = post(&app, json!({ "extensions": apq(&hash) })).await;
    assert_eq!(by_hash, plain);

    // GET, as the link sends queries with `useGETForHashedQueries`.
    let other = "query Count { posts { totalCount } }";
    let other_hash = sha256(other);
    let ext = apq(&other_hash).to_string();
    let miss = get(&app, &[("extensions", &ext)]).await;
    let miss: Value = miss.json().await.expect("JSON");
    assert_eq!(first_code(&miss), "PERSISTED_QUERY_NOT_FOUND");
    let registered = get(&app, &[("query", other), ("extensions", &ext)]).await;
    assert_eq!(registered.status(), 200);
    let hit = get(&app, &[("extensions", &ext)]).await;
    assert_eq!(hit.status(), 200);
    let hit: Value = hit.json().await.expect("JSON");
    assert!(
        hit["data"]["posts"]["totalCount"].as_i64().is_some(),
        "{hit}"
    );

    // A hash that is not the text's is refused and registers nothing.
    let wrong = sha256("{ me { id } }");
    let (_, mismatch) = post(&app, json!({ "query": FEED, "extensions": apq(&wrong) })).await;
    assert_eq!(first_code(&mismatch), "PERSISTED_QUERY_HASH_MISMATCH");
    let (_, still_missing) = post(&app, json!({ "extensions": apq(&wrong) })).await;
    assert_eq!(first_code(&still_missing), "PERSISTED_QUERY_NOT_FOUND");
    // A document over the edge's limits is refused and never registered.
    let huge = format!("{{ {} }}", "__typename ".repeat(8_000));
    let huge_hash = sha256(&huge);
    let (_, too_large) = post(
        &app,
        json!({ "query": huge, "extensions": apq(&huge_hash) }),
    )
    .await;
    assert_eq!(first_code(&too_large), "DOCUMENT_TOO_LARGE");
    let (_, not_kept) = post(&app, json!({ "extensions": apq(&huge_hash) })).await;
    assert_eq!(first_code(&not_kept), "PERSISTED_QUERY_NOT_FOUND");
    // Only version 1 of the protocol.
    let (_, v2) = post(
        &app,
        json!({ "extensions": { "persistedQuery": { "version": 2, "sha256Hash": hash } } }),
    )
    .await;
    assert_eq!(first_code(&v2), "PERSISTED_QUERY_NOT_SUPPORTED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_documents_from_every_manifest_format_run_by_id() {
    let codegen_doc = "query CodegenFeed { posts(first: 1) { nodes { id } } }";
    let relay_doc = "query RelayCount { posts { totalCount } }";
    let sha1 = hex::encode(sha1::Sha1::digest(codegen_doc.as_bytes()));
    let md5 = hex::encode(md5::Md5::digest(relay_doc.as_bytes()));
    let (app, _dir) = spawn(
        DocumentMode::Safelist,
        &[
            (
                "persisted-query-manifest.json",
                apollo_manifest(&[("Feed", FEED)]),
            ),
            (
                "persisted-documents.json",
                json!({ sha1.clone(): codegen_doc }),
            ),
            ("persisted_queries.json", json!({ md5.clone(): relay_doc })),
        ],
    )
    .await;
    Fixture::create(&app.store).await;

    let (status, feed) = post(&app, json!({ "documentId": sha256(FEED) })).await;
    assert_eq!(status, 200, "{feed}");
    assert_eq!(
        feed["data"]["posts"]["nodes"].as_array().map(Vec::len),
        Some(2)
    );
    let (_, prefixed) = post(
        &app,
        json!({ "documentId": format!("sha256:{}", sha256(FEED)) }),
    )
    .await;
    assert_eq!(prefixed, feed);
    let (_, codegen) = post(&app, json!({ "documentId": sha1 })).await;
    assert_eq!(
        codegen["data"]["posts"]["nodes"].as_array().map(Vec::len),
        Some(1)
    );
    let relay = get(&app, &[("documentId", md5.as_str())]).await;
    assert_eq!(relay.status(), 200);
    let relay: Value = relay.json().await.expect("JSON");
    assert!(
        relay["data"]["posts"]["totalCount"].as_i64().is_some(),
        "{relay}"
    );

    // The identical text runs too; anything else is refused, as is an unknown id.
    let (_, by_text) = post(&app, json!({ "query": FEED })).await;
    assert_eq!(by_text, feed);
    let (_, other) = post(&app, json!({ "query": ME })).await;
    assert_eq!(first_code(&other), "PERSISTED_QUERY_NOT_ALLOWED");
    let (_, unknown_apq) = post(&app, json!({ "query": ME, "extensions": apq(&sha256(ME)) })).await;
    assert_eq!(first_code(&unknown_apq), "PERSISTED_QUERY_NOT_ALLOWED");
    let (_, unknown_id) = post(&app, json!({ "documentId": "nope" })).await;
    assert_eq!(first_code(&unknown_id), "PERSISTED_QUERY_NOT_FOUND");
    // An APQ hash finds the manifest's document without registering anything.
    let (_, by_hash) = post(&app, json!({ "extensions": apq(&sha256(FEED)) })).await;
    assert_eq!(by_hash, feed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_by_document_id_is_cacheable_with_an_etag() {
    let (app, _dir) = spawn(
        DocumentMode::Safelist,
        &[("manifest.json", apollo_manifest(&[("Feed", FEED)]))],
    )
    .await;
    Fixture::create(&app.store).await;
    let id = sha256(FEED);
    let first = get(&app, &[("documentId", id.as_str())]).await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().expect("etag").to_owned();
    let cache_control = first.headers()["cache-control"]
        .to_str()
        .expect("cc")
        .to_owned();
    assert!(
        cache_control.starts_with("public, max-age="),
        "{cache_control}"
    );
    assert!(
        first.headers()["vary"]
            .to_str()
            .expect("vary")
            .contains("authorization")
    );
    let again = app
        .client
        .get(format!("{}/graphql", app.base))
        .query(&[("documentId", id.as_str())])
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apq_and_log_modes() {
    // `apq`: APQ registrations and manifest documents run, bare unknown text does not.
    let (app, _dir) = spawn(
        DocumentMode::Apq,
        &[("manifest.json", apollo_manifest(&[("Feed", FEED)]))],
    )
    .await;
    let (_, bare) = post(&app, json!({ "query": ME })).await;
    assert_eq!(first_code(&bare), "PERSISTED_QUERY_NOT_ALLOWED");
    let (status, registered) =
        post(&app, json!({ "query": ME, "extensions": apq(&sha256(ME)) })).await;
    assert_eq!(status, 200, "{registered}");
    assert!(registered.get("errors").is_none(), "{registered}");
    let (_, manifest_text) = post(&app, json!({ "query": FEED })).await;
    assert!(manifest_text.get("errors").is_none(), "{manifest_text}");

    // `log`: anything runs; documents outside the manifest are counted.
    let (app, _dir) = spawn(
        DocumentMode::Log,
        &[("manifest.json", apollo_manifest(&[("Feed", FEED)]))],
    )
    .await;
    let (_, known) = post(&app, json!({ "query": FEED })).await;
    assert!(known.get("errors").is_none(), "{known}");
    assert_eq!(app.metric("folio_documents_unknown_total").await, 0.0);
    let (_, unknown) = post(&app, json!({ "query": ME })).await;
    assert!(unknown.get("errors").is_none(), "{unknown}");
    let (_, unknown) = post(&app, json!({ "query": ME })).await;
    assert!(unknown.get("errors").is_none(), "{unknown}");
    assert_eq!(app.metric("folio_documents_unknown_total").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_whose_hash_and_text_disagree_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    let wrong = json!({ sha256(FEED): ME });
    config.documents = documents(DocumentMode::Safelist, &dir, &[("bad.json", wrong)]);
    let err = match folio::App::build(&config).await {
        Ok(_) => panic!("the app must not start"),
        Err(err) => format!("{err:#}"),
    };
    assert!(
        err.contains(&sha256(FEED)) && err.contains("bad.json"),
        "{err}"
    );
}

/// A document registered through one instance runs by its hash on another: registrations live in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apq_registrations_are_shared_by_instances_over_redis() {
    if !uses_redis() {
        eprintln!(
            "skipped: instances share registrations only through Redis (set FOLIO_TEST_REDIS_URL)"
        );
        return;
    }
    let db = TestDb::create().await;
    let config = test_config(&db);
    let a = TestApp::spawn_with(db, config.clone()).await;
    let b = spawn_instance(config).await;
    let hash = sha256(ME);
    let (_, miss) = post(&b, json!({ "extensions": apq(&hash) })).await;
    assert_eq!(first_code(&miss), "PERSISTED_QUERY_NOT_FOUND");
    let (status, _) = post(&a, json!({ "query": ME, "extensions": apq(&hash) })).await;
    assert_eq!(status, 200);
    let (status, on_b) = post(&b, json!({ "extensions": apq(&hash) })).await;
    assert_eq!(status, 200, "{on_b}");
    assert_eq!(on_b, json!({ "data": { "me": null } }));
}

/// An app whose responses carry `extensions.cost`, with `max_cost` as the limit.
async fn spawn_priced(max_cost: Option<u64>) -> TestApp {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.documents.cost_extension = true;
    config.documents.max_cost = max_cost;
    TestApp::spawn_with(db, config).await
}

const PRICED: &str = "query($n: Int!) { posts(first: $n) { edges { node { id author { name } } } pageInfo { hasNextPage } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_its_estimated_cost() {
    let app = spawn_priced(None).await;
    Fixture::create(&app.store).await;
    // posts 1 + n × (edge 1 + node 1 + author 1) + pageInfo 1.
    for n in [1, 10] {
        let body = app.gql(PRICED, json!({ "n": n })).await;
        assert_eq!(
            body["extensions"]["cost"]["estimated"],
            json!(2 + 3 * n),
            "{body}"
        );
        assert!(body["data"]["posts"]["edges"].is_array());
    }
    // A cached answer carries it too, and so does a repeated feed query (which may take the compiled path).
    let feed = "{ posts(first: 3) { nodes { id title } } }";
    for _ in 0..3 {
        let body = app.gql(feed, json!({})).await;
        assert_eq!(
            body["extensions"]["cost"]["estimated"],
            json!(1 + 3),
            "{body}"
        );
    }
    let mutation = "mutation { updateProfile(input: { name: \"X\" }) { id } }";
    let res = app.gql(mutation, json!({})).await;
    assert_eq!(res["extensions"]["cost"]["estimated"], json!(10), "{res}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_limit_holds_at_its_boundary() {
    // 2 + 3n ≤ 32 ⇔ n ≤ 10.
    let app = spawn_priced(Some(32)).await;
    Fixture::create(&app.store).await;
    let at = app.gql(PRICED, json!({ "n": 10 })).await;
    assert!(at.get("errors").is_none(), "{at}");
    let res = app
        .post_graphql_as(None, json!({ "query": PRICED, "variables": { "n": 11 } }))
        .await;
    let over: Value = res.json().await.expect("JSON");
    assert_eq!(first_code(&over), "COST_LIMIT_EXCEEDED", "{over}");
    assert_eq!(
        over["errors"][0]["extensions"]["cost"],
        json!({ "estimated": 35, "max": 32 })
    );
    assert!(over.get("data").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdl_declares_the_cost_gateways_read() {
    let app = TestApp::spawn().await;
    let service = app.gql("{ _service { sdl } }", json!({})).await;
    let service = service["data"]["_service"]["sdl"]
        .as_str()
        .expect("an SDL")
        .to_owned();
    assert!(
        service.contains(folio::graphql::schema::FEDERATION_URL),
        "{service}"
    );
    assert!(service.contains("\"@cost\", \"@listSize\"]"));
    assert!(service.contains(
        "posts(first: Int! = 20, after: String, filter: PostFilter): PostConnection! @listSize(slicingArguments: [\"first\"], sizedFields: [\"edges\", \"nodes\"])"
    ));
    assert!(service.contains("login(input: LoginInput!): AuthPayload! @cost(weight: 100)"));
    // Under an alias too, and the file is the same SDL plus the definitions.
    let aliased = app.gql("{ s: _service { text: sdl } }", json!({})).await;
    assert_eq!(
        aliased["data"]["s"]["text"].as_str(),
        Some(service.as_str())
    );
    let file = app.get("/schema.graphql").await.text().await.expect("text");
    assert!(file.starts_with(&service));
}
