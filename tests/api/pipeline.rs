//! The operation pipeline without a transport: what a WebSocket or SSE transport will call gets the same limits,
//! authorization, error codes, cache behaviour and purges as HTTP, and reports the tags a query read.

use std::net::{IpAddr, Ipv4Addr};

use serde_json::{Value, json};

use crate::helpers::{Fixture, TestApp};
use folio::auth::Viewer;
use folio::operation::{Accepts, CacheStatus, Outcome, Pipeline, Request, Status};
use folio::store::Role;

fn request(document: &str, variables: Value, viewer: Viewer, accepts: Accepts) -> Request {
    Request {
        document: Some(document.to_owned()),
        document_id: None,
        operation_name: None,
        variables: async_graphql::Variables::from_json(variables),
        extensions: Default::default(),
        viewer,
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        request_id: "pipeline-test".to_owned(),
        accepts,
        deadline: None,
        reveals_sdl: false,
    }
}

async fn run(pipeline: &Pipeline, document: &str, variables: Value, viewer: Viewer) -> Outcome {
    pipeline
        .run(request(document, variables, viewer, Accepts::Any))
        .await
}

fn body(outcome: &Outcome) -> Value {
    serde_json::from_slice(&outcome.entry.body).expect("a JSON body")
}

fn user(id: i64) -> Viewer {
    Viewer::User {
        id,
        role: Role::User,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_answers_as_http_does_and_reports_the_tags_read() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let pipeline = app.pipeline.clone().expect("an in-process app");
    let query = "query($id: ID!) { post(id: $id) { id title author { name } } }";
    let vars = json!({ "id": f.alice_posts[0].to_string() });

    let over_http = app.gql(query, vars.clone()).await;
    let direct = run(&pipeline, query, vars.clone(), Viewer::Anonymous).await;
    assert_eq!(direct.status, Status::Ok);
    assert_eq!(body(&direct), over_http);
    // HTTP ran it first, so the pipeline finds it cached.
    assert_eq!(direct.cache, CacheStatus::Hit);

    // A fresh execution reports what it read.
    let other = json!({ "id": f.alice_posts[1].to_string() });
    let missed = run(&pipeline, query, other, Viewer::Anonymous).await;
    assert_eq!(missed.cache, CacheStatus::Miss);
    let post_tag = format!("Post:{}", f.alice_posts[1]);
    let author_tag = format!("User:{}", f.alice);
    let read: Vec<String> = missed.tags.iter().map(|tag| tag.name()).collect();
    assert!(read.contains(&post_tag), "{read:?}");
    assert!(read.contains(&author_tag), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_authorization_and_codes_are_the_pipelines() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let pipeline = app.pipeline.clone().expect("an in-process app");

    // A document over a limit is refused before it runs, with its code.
    let aliases: String = (0..40).map(|i| format!("a{i}: __typename ")).collect();
    let refused = run(
        &pipeline,
        &format!("{{ {aliases} }}"),
        json!({}),
        Viewer::Anonymous,
    )
    .await;
    assert_eq!(refused.status, Status::RequestError);
    assert_eq!(
        body(&refused)["errors"][0]["extensions"]["code"],
        "TOO_MANY_ALIASES"
    );

    // Unparsable and invalid documents keep their codes.
    let broken = run(&pipeline, "{ posts {", json!({}), Viewer::Anonymous).await;
    assert_eq!(
        body(&broken)["errors"][0]["extensions"]["code"],
        "GRAPHQL_PARSE_FAILED"
    );
    let invalid = run(&pipeline, "{ nope }", json!({}), Viewer::Anonymous).await;
    assert_eq!(
        body(&invalid)["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );

    // Someone else's draft is missing, to the viewer the transport names.
    let draft = "query($id: ID!) { post(id: $id) { id } }";
    let vars = json!({ "id": f.alice_draft.to_string() });
    let to_bob = run(&pipeline, draft, vars.clone(), user(f.bob)).await;
    assert_eq!(body(&to_bob)["data"]["post"], Value::Null);
    let to_alice = run(&pipeline, draft, vars, user(f.alice)).await;
    assert_eq!(
        body(&to_alice)["data"]["post"]["id"],
        f.alice_draft.to_string()
    );

    // A transport that takes queries only gets `NotAllowed` for a mutation, and nothing runs.
    let rename = "mutation { updateProfile(input: { name: \"Renamed\" }) { name } }";
    let not_allowed = pipeline
        .run(request(
            rename,
            json!({}),
            user(f.bob),
            Accepts::QueriesOnly,
        ))
        .await;
    assert_eq!(not_allowed.status, Status::NotAllowed);
    assert_eq!(
        body(&not_allowed)["errors"][0]["extensions"]["code"],
        "METHOD_NOT_ALLOWED"
    );
    let name = "query($id: ID!) { user(id: $id) { name } }";
    let bob = json!({ "id": f.bob.to_string() });
    let before = run(&pipeline, name, bob.clone(), Viewer::Anonymous).await;
    assert_ne!(body(&before)["data"]["user"]["name"], "Renamed");

    // A mutation through the pipeline purges what it changed before it returns: the cached name is gone.
    let renamed = run(&pipeline, rename, json!({}), user(f.bob)).await;
    assert_eq!(renamed.cache, CacheStatus::Bypass);
    assert_eq!(body(&renamed)["data"]["updateProfile"]["name"], "Renamed");
    let after = run(&pipeline, name, bob, Viewer::Anonymous).await;
    assert_eq!(after.cache, CacheStatus::Miss);
    assert_eq!(body(&after)["data"]["user"]["name"], "Renamed");

    // Without a viewer a guarded mutation is refused with the same code as over HTTP.
    let anonymous = run(&pipeline, rename, json!({}), Viewer::Anonymous).await;
    assert_eq!(
        body(&anonymous)["errors"][0]["extensions"]["code"],
        "UNAUTHENTICATED"
    );
}
