//! Folio as an Apollo Federation 2 subgraph, as a gateway sees it: `_service { sdl }`, and `_entities` resolving
//! representations through the loaders (one statement per entity type), with the same authorization as the
//! root queries, `null` in place of what does not exist or may not be seen, and cached and purged like any
//! other query. The Node suite in `tests/federation` runs a real gateway in front of Folio.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::helpers::{Fixture, TestApp, TestDb, bulk, new_admin, test_config, token_for};
use folio::graphql::schema::{FEDERATION_DEFINITIONS, sdl};
use folio::store::Page;

/// What a gateway sends to resolve entities (its selection is up to the gateway; this one asks a bit of each).
const ENTITIES: &str =
    "query($representations: [_Any!]!) { _entities(representations: $representations) {
    __typename
    ... on User { id name email plan }
    ... on Post { id title published }
    ... on Comment { id body }
} }";

/// The same, with the author of each post (a second entity type, loaded through its own batch).
const POSTS_WITH_AUTHORS: &str = "query($representations: [_Any!]!) {
    _entities(representations: $representations) { ... on Post { id title author { id name } } } }";

fn rep(typename: &str, id: impl ToString) -> Value {
    json!({ "__typename": typename, "id": id.to_string() })
}

fn reps(items: &[Value]) -> Value {
    json!({ "representations": items })
}

/// The `_entities` list of a successful answer.
fn entities(body: &Value) -> &Vec<Value> {
    assert!(body.get("errors").is_none(), "{body}");
    body["data"]["_entities"]
        .as_array()
        .expect("_entities list")
}

async fn resolve(app: &TestApp, token: Option<&str>, items: &[Value]) -> Vec<Value> {
    let body = app.gql_as(token, ENTITIES, reps(items)).await;
    entities(&body).clone()
}

async fn resolve_with_headers(
    app: &TestApp,
    token: Option<&str>,
    items: &[Value],
) -> (Value, HeaderMap) {
    let res = app
        .post_graphql_as(
            token,
            json!({ "query": ENTITIES, "variables": reps(items) }),
        )
        .await;
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    (res.json().await.expect("JSON body"), headers)
}

fn x_cache(headers: &HeaderMap) -> &str {
    headers
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
}

// ---------------------------------------------------------------------------------------------------------------
// The subgraph schema
// ---------------------------------------------------------------------------------------------------------------

/// `_service { sdl }` links the Federation 2 spec and keys `User`, `Post` and `Comment` by `id`; `schema.graphql`
/// (what `folio schema` prints and `GET /schema.graphql` serves) is that SDL plus the definitions of every
/// directive it imports, so plain GraphQL tools can read it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_sdl_is_a_federation_2_subgraph_keyed_by_id() {
    let app = TestApp::spawn().await;
    let body = app.gql("{ _service { sdl } }", json!({})).await;
    let service = body["data"]["_service"]["sdl"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(
        service.contains("extend schema @link(")
            && service.contains("url: \"https://specs.apollo.dev/federation/v2."),
        "links Federation 2: {service}"
    );
    for ty in ["User", "Post", "Comment"] {
        assert!(
            service.contains(&format!("type {ty} @key(fields: \"id\") {{")),
            "{ty} is an entity keyed by id"
        );
    }
    assert!(
        !service.contains("_entities") && !service.contains("_Service"),
        "the federation fields are the gateway's business, not part of the subgraph SDL"
    );

    assert_eq!(
        sdl(),
        format!("{service}{FEDERATION_DEFINITIONS}"),
        "schema.graphql is the subgraph SDL plus the federation definitions"
    );
    let import_line = service
        .lines()
        .find(|l| l.trim_start().starts_with("import: ["))
        .expect("an import list");
    let imported: Vec<&str> = import_line
        .split('"')
        .filter(|s| s.starts_with('@'))
        .collect();
    assert!(imported.contains(&"@key"), "{import_line}");
    let defined = |name: &str| {
        FEDERATION_DEFINITIONS.lines().any(|l| {
            l.strip_prefix("directive ")
                .and_then(|rest| rest.strip_prefix(name))
                .is_some_and(|rest| rest.starts_with('(') || rest.starts_with(' '))
        })
    };
    for directive in imported.iter().copied().chain(["@link"]) {
        assert!(
            defined(directive),
            "{directive} is imported, so it is defined"
        );
    }
}

/// With introspection off (the production default), `__schema` is refused, and `_service` answers only the
/// gateway (it presents `FOLIO_GATEWAY_SECRET`: one rule for everything that reveals the schema, see
/// `EdgeConfig::reveals_sdl`); `_entities` still resolves for anyone, since it reveals no more than the queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subgraph_fields_answer_with_introspection_off() {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.edge.introspection = false;
    config.edge.gateway_secret = Some("gateway-secret-for-tests".into());
    let app = TestApp::spawn_with(db, config).await;
    let f = Fixture::create(&app.store).await;
    let body = app
        .gql("{ __schema { queryType { name } } }", json!({}))
        .await;
    assert!(
        body["data"]["__schema"].is_null(),
        "introspection is off: {body}"
    );
    let body = app.gql("{ _service { sdl } }", json!({})).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "INTROSPECTION_DISABLED",
        "{body}"
    );
    let body: Value = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("x-folio-gateway-secret", "gateway-secret-for-tests")
        .json(&json!({ "query": "{ _service { sdl } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        body["data"]["_service"]["sdl"]
            .as_str()
            .is_some_and(|sdl| sdl.contains("@key(fields: \"id\")")),
        "{body}"
    );
    let found = resolve(&app, None, &[rep("User", f.bob)]).await;
    assert_eq!(found[0]["name"], "Bob Marley");
}

// ---------------------------------------------------------------------------------------------------------------
// Batching and nulls
// ---------------------------------------------------------------------------------------------------------------

/// Fifty post representations, with unknown and malformed ids among them, cost one statement; each answer is in
/// its representation's place, `null` where nothing matches. Asking for the authors adds one statement, not fifty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_post_representations_cost_one_statement_and_unknown_ids_are_null_in_place() {
    let app = TestApp::spawn().await;
    let ids = bulk(&app.store, 60, 0).await;
    let mut items: Vec<Value> = ids[..50].iter().map(|id| rep("Post", id)).collect();
    let missing = ids.iter().max().copied().unwrap_or(0) + 1_000;
    items.insert(0, rep("Post", missing));
    items.insert(25, rep("Post", "not-a-number"));
    items.push(rep("Post", missing + 1));

    let (body, statements) = app.statements_for(ENTITIES, reps(&items)).await;
    let found = entities(&body);
    assert_eq!(found.len(), items.len(), "one answer per representation");
    for (asked, answer) in items.iter().zip(found) {
        let id = asked["id"].as_str().expect("id");
        if id.parse::<i64>().is_ok_and(|n| ids.contains(&n)) {
            assert_eq!(answer["__typename"], "Post");
            assert_eq!(
                answer["id"], id,
                "answers keep the order of the representations"
            );
            assert_eq!(answer["published"], true);
        } else {
            assert_eq!(
                answer,
                &Value::Null,
                "{id} names no post: null in its place"
            );
        }
    }
    assert_eq!(statements, 1, "50 post representations: one statement");

    let (body, statements) = app
        .statements_for(POSTS_WITH_AUTHORS, reps(&items[1..40]))
        .await;
    let found = entities(&body);
    assert!(
        found
            .iter()
            .filter(|p| !p.is_null())
            .all(|p| p["author"]["name"] == "Writer"),
        "{body}"
    );
    assert_eq!(
        statements, 2,
        "posts, then their authors: one statement each"
    );
}

/// Users, posts and comments asked for together, interleaved: one statement per entity type (the comment
/// statement carries its post's state, so deciding a comment's visibility costs nothing more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_representations_cost_one_statement_per_entity_type() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let posts = bulk(&app.store, 20, 1).await;
    let comments: Vec<i64> = app
        .store
        .comments_by_posts(
            &posts,
            Page {
                after: None,
                limit: 5,
            },
        )
        .await
        .expect("comments")
        .iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(comments.len(), 20);
    let mut items = Vec::new();
    for i in 0..20 {
        items.push(rep("Post", posts[i]));
        items.push(rep("Comment", comments[i]));
        if i < 3 {
            items.push(rep("User", [f.alice, f.bob, f.carol][i]));
        }
    }
    items.push(rep("Comment", comments.iter().max().unwrap_or(&0) + 1_000));

    let (body, statements) = app.statements_for(ENTITIES, reps(&items)).await;
    let found = entities(&body);
    assert_eq!(found.len(), items.len());
    for (asked, answer) in items.iter().zip(found).take(items.len() - 1) {
        assert_eq!(answer["__typename"], asked["__typename"]);
        assert_eq!(answer["id"], asked["id"]);
    }
    assert_eq!(
        found.last(),
        Some(&Value::Null),
        "an unknown comment is null"
    );
    assert_eq!(found[2]["name"], "Alice Liddell");
    assert_eq!(
        statements, 3,
        "users, posts and comments: one statement each"
    );

    // Signed in: authenticating costs one more, the entities the same.
    let token = token_for(f.carol);
    let (body, statements) = app
        .statements_for_as(Some(&token), ENTITIES, reps(&items))
        .await;
    assert_eq!(entities(&body).len(), items.len());
    assert_eq!(
        statements, 4,
        "the viewer, then one statement per entity type"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Authorization
// ---------------------------------------------------------------------------------------------------------------

/// A draft's representation is `null` for anonymous callers and other users, and the draft for its author and
/// admins, exactly as `post(id)`; its neighbours in the list are unaffected. A comment on a draft follows its
/// post.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drafts_and_their_comments_resolve_only_for_their_author_and_admins() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let admin = new_admin(&app.store).await;
    let (alice, bob) = (token_for(f.alice), token_for(f.bob));
    // Alice's first post has comments; unpublishing it hides them with it.
    let hidden = f.alice_posts[0];
    let comments = app
        .store
        .comments_by_posts(
            &[hidden, f.bob_posts[0]],
            Page {
                after: None,
                limit: 10,
            },
        )
        .await
        .expect("comments");
    let on_hidden = comments
        .iter()
        .find(|c| c.post_id == hidden)
        .expect("a comment")
        .id;
    let on_public = comments
        .iter()
        .find(|c| c.post_id == f.bob_posts[0])
        .expect("a comment")
        .id;
    app.store
        .set_published(hidden, false)
        .await
        .expect("unpublish");
    let items = [
        rep("Post", f.bob_posts[0]),
        rep("Post", f.alice_draft),
        rep("Comment", on_hidden),
        rep("Comment", on_public),
    ];

    for (who, token) in [("anonymous", None), ("Bob", Some(bob.as_str()))] {
        let found = resolve(&app, token, &items).await;
        assert_eq!(found[0]["title"], "Winter gardening", "{who}");
        assert_eq!(found[1], Value::Null, "{who} may not see Alice's draft");
        assert_eq!(found[2], Value::Null, "{who} may not see a comment on it");
        assert_eq!(found[3]["body"], "Kale forever.", "{who}");
    }
    for (who, token) in [("Alice", alice.as_str()), ("an admin", admin.as_str())] {
        let found = resolve(&app, Some(token), &items).await;
        assert_eq!(found[1]["title"], "Secret draft", "{who} sees the draft");
        assert_eq!(found[1]["published"], false);
        assert_eq!(
            found[2]["id"],
            on_hidden.to_string(),
            "{who} sees its comment"
        );
    }
}

/// `User.email` and `User.plan` reached through `_entities` follow the field rule: the user and admins only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_user_fields_follow_the_field_rule() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let admin = new_admin(&app.store).await;
    let (alice, bob) = (token_for(f.alice), token_for(f.bob));
    let items = [rep("User", f.alice), rep("User", f.bob)];
    let cases = [
        ("anonymous", None, [Value::Null, Value::Null]),
        (
            "Alice",
            Some(alice.as_str()),
            [json!("alice@example.com"), Value::Null],
        ),
        (
            "Bob",
            Some(bob.as_str()),
            [Value::Null, json!("bob@example.com")],
        ),
        (
            "an admin",
            Some(admin.as_str()),
            [json!("alice@example.com"), json!("bob@example.com")],
        ),
    ];
    for (who, token, emails) in cases {
        let found = resolve(&app, token, &items).await;
        for (user, email) in found.iter().zip(&emails) {
            assert_eq!(&user["email"], email, "{who}: {user}");
            let plan = if email.is_null() {
                Value::Null
            } else {
                json!("FREE")
            };
            assert_eq!(user["plan"], plan, "{who}: {user}");
        }
        assert_eq!(found[0]["name"], "Alice Liddell", "names are public");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The response cache
// ---------------------------------------------------------------------------------------------------------------

/// An `_entities` answer is a query answer: cached (a repeat is a `HIT`), shared when it is public, kept to its
/// caller when it is not, and purged by the mutations that change what it read, including a draft that becomes
/// visible (its `null` was tagged) and a comment whose post is unpublished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_answers_are_cached_scoped_and_purged_by_tag() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let (alice, bob) = (token_for(f.alice), token_for(f.bob));
    // A comment by Bob on Alice's second post (which has none in the fixture).
    let body = app
        .gql_as(
            Some(&bob),
            "mutation($p: ID!) { addComment(input: { postId: $p, body: \"Nice one.\" }) { id } }",
            json!({ "p": f.alice_posts[1].to_string() }),
        )
        .await;
    let comment: i64 = body["data"]["addComment"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{body}"));
    let items = [
        rep("Post", f.alice_posts[0]),
        rep("Post", f.alice_draft),
        rep("Comment", comment),
    ];

    // Public: computed once, then served from the cache to everyone.
    let (first, h) = resolve_with_headers(&app, None, &items).await;
    assert_eq!(x_cache(&h), "MISS");
    assert_eq!(entities(&first)[1], Value::Null);
    let (again, h) = resolve_with_headers(&app, None, &items).await;
    assert_eq!(x_cache(&h), "HIT", "a repeated _entities query is a hit");
    assert_eq!(again, first);

    // Alice sees her draft; that answer is hers alone.
    let (mine, h) = resolve_with_headers(&app, Some(&alice), &items).await;
    assert_eq!(entities(&mine)[1]["title"], "Secret draft");
    assert_eq!(
        h.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("private, max-age=60")
    );
    let (theirs, _) = resolve_with_headers(&app, Some(&bob), &items).await;
    assert_eq!(
        entities(&theirs)[1],
        Value::Null,
        "Bob never gets Alice's answer"
    );

    // A title change purges the post's entity.
    app.gql_as(
        Some(&alice),
        "mutation($id: ID!) { updatePost(id: $id, input: { title: \"Ownership, revisited\" }) { id } }",
        json!({ "id": f.alice_posts[0].to_string() }),
    )
    .await;
    let (after, h) = resolve_with_headers(&app, None, &items).await;
    assert_eq!(x_cache(&h), "MISS", "purged by the update");
    assert_eq!(entities(&after)[0]["title"], "Ownership, revisited");

    // Publishing the draft purges its cached `null`.
    app.gql_as(
        Some(&alice),
        "mutation($id: ID!) { publishPost(id: $id) { id } }",
        json!({ "id": f.alice_draft.to_string() }),
    )
    .await;
    let (after, h) = resolve_with_headers(&app, None, &items).await;
    assert_eq!(x_cache(&h), "MISS", "purged by the publication");
    assert_eq!(entities(&after)[1]["title"], "Secret draft");
    assert_eq!(entities(&after)[2]["id"], comment.to_string());

    // Unpublishing a post hides its comment's entity at once.
    app.gql_as(
        Some(&alice),
        "mutation($id: ID!) { unpublishPost(id: $id) { id } }",
        json!({ "id": f.alice_posts[1].to_string() }),
    )
    .await;
    let (after, h) = resolve_with_headers(&app, None, &items).await;
    assert_eq!(x_cache(&h), "MISS", "purged by the unpublication");
    assert_eq!(entities(&after)[2], Value::Null, "{after}");
}
