//! Mutations as a client uses them: signing up and in, writing and publishing posts, commenting, roles; every
//! validation rule at its boundaries; refused input writes nothing.

use serde_json::{Value, json};

use crate::helpers::{Fixture, TestApp, admin_token, first_code, token_for};
use folio::store::Role;

const SIGN_UP: &str =
    "mutation($i: SignUpInput!) { signUp(input: $i) { token user { id name email role plan } } }";
const LOGIN: &str = "mutation($i: LoginInput!) { login(input: $i) { token user { id email } } }";
const CREATE_POST: &str = "mutation($i: CreatePostInput!) { createPost(input: $i) { id title content published publishedAt } }";
const UPDATE_POST: &str = "mutation($id: ID!, $i: UpdatePostInput!) { updatePost(id: $id, input: $i) { id title content } }";
const ADD_COMMENT: &str = "mutation($i: AddCommentInput!) { addComment(input: $i) { id body author { id } post { id commentCount } } }";

fn field_errors(body: &Value) -> Vec<String> {
    let mut keys: Vec<String> = body["errors"][0]["extensions"]["fieldErrors"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_log_in_and_use_the_token() {
    let app = TestApp::spawn().await;
    let body = app
        .gql(
            SIGN_UP,
            json!({ "i": { "email": "  Dana@Example.COM ", "name": "  Dana  ", "password": "correct horse battery" } }),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    let payload = &body["data"]["signUp"];
    // Trimmed, email lower-cased; the new user sees their own private fields.
    assert_eq!(payload["user"]["name"], "Dana");
    assert_eq!(payload["user"]["email"], "dana@example.com");
    assert_eq!(payload["user"]["role"], "USER");
    assert_eq!(payload["user"]["plan"], "FREE");
    let id = payload["user"]["id"].as_str().expect("id").to_owned();
    let token = payload["token"].as_str().expect("token").to_owned();
    let me = app
        .gql_as(Some(&token), "{ me { id email } }", json!({}))
        .await;
    assert_eq!(
        me["data"]["me"],
        json!({ "id": id, "email": "dana@example.com" })
    );

    // Login is case-insensitive on the email; its token works too.
    let body = app
        .gql(
            LOGIN,
            json!({ "i": { "email": "DANA@example.com", "password": "correct horse battery" } }),
        )
        .await;
    assert_eq!(body["data"]["login"]["user"]["id"], id.as_str(), "{body}");
    let token = body["data"]["login"]["token"].as_str().expect("token");
    let me = app.gql_as(Some(token), "{ me { id } }", json!({})).await;
    assert_eq!(me["data"]["me"]["id"], id.as_str());

    // A wrong password and an unknown email are indistinguishable.
    let wrong = app
        .gql(
            LOGIN,
            json!({ "i": { "email": "dana@example.com", "password": "wrong horse battery" } }),
        )
        .await;
    let unknown = app
        .gql(
            LOGIN,
            json!({ "i": { "email": "nobody@example.com", "password": "correct horse battery" } }),
        )
        .await;
    assert_eq!(first_code(&wrong), "UNAUTHENTICATED");
    assert_eq!(wrong["errors"], unknown["errors"]);
    assert_eq!(wrong["data"], Value::Null);

    // The same email again, in any case: CONFLICT on the email field, and no second account.
    let again = app
        .gql(
            SIGN_UP,
            json!({ "i": { "email": "dana@EXAMPLE.com", "name": "Other Dana", "password": "another long password" } }),
        )
        .await;
    assert_eq!(first_code(&again), "CONFLICT", "{again}");
    assert_eq!(field_errors(&again), ["email"]);
    assert_eq!(app.store.count_users().await.expect("count"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_validation_boundaries_and_all_failures_at_once() {
    let app = TestApp::spawn().await;
    let local = "a".repeat(64);
    let domain = format!(
        "{}.{}.{}.com",
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(57)
    );
    let email_254 = format!("{local}@{domain}");
    assert_eq!(email_254.len(), 254);
    let email_255 = format!(
        "{local}@{}.{}.{}.com",
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(58)
    );
    let ok = |email: &str, name: &str, password: &str| json!({ "i": { "email": email, "name": name, "password": password } });
    let mut n = 0;
    let mut next_email = || {
        n += 1;
        format!("user{n}@example.com")
    };
    // (variables, failing fields)
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (ok(&next_email(), "N", &"p".repeat(12)), vec![]),
        (ok(&next_email(), &"n".repeat(80), &"p".repeat(128)), vec![]),
        (ok(&email_254, "Long Email", &"p".repeat(12)), vec![]),
        (
            ok(&email_255, "Longer Email", &"p".repeat(12)),
            vec!["email"],
        ),
        (ok("not-an-email", "N", &"p".repeat(12)), vec!["email"]),
        (ok(&next_email(), "", &"p".repeat(12)), vec!["name"]),
        (ok(&next_email(), "   ", &"p".repeat(12)), vec!["name"]),
        (
            ok(&next_email(), &"n".repeat(81), &"p".repeat(12)),
            vec!["name"],
        ),
        (ok(&next_email(), "N", &"p".repeat(11)), vec!["password"]),
        (ok(&next_email(), "N", &"p".repeat(129)), vec!["password"]),
        (ok("@", "", "short"), vec!["email", "name", "password"]),
    ];
    let mut created = 0;
    for (vars, failing) in cases {
        let body = app.gql(SIGN_UP, vars.clone()).await;
        if failing.is_empty() {
            assert!(body.get("errors").is_none(), "{vars}: {body}");
            created += 1;
        } else {
            assert_eq!(first_code(&body), "BAD_USER_INPUT", "{vars}: {body}");
            assert_eq!(
                body["errors"][0]["message"],
                "Invalid input: failed to sign up."
            );
            assert_eq!(body["errors"].as_array().map(Vec::len), Some(1));
            assert_eq!(field_errors(&body), failing, "{vars}");
            let messages = &body["errors"][0]["extensions"]["fieldErrors"][failing[0]];
            assert!(messages[0].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    // Refused sign-ups wrote nothing.
    assert_eq!(app.store.count_users().await.expect("count"), created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_and_comment_validation_boundaries() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let alice = token_for(f.alice);
    let posts_before = app
        .store
        .count_posts(&Default::default())
        .await
        .expect("count");
    let create = |title: String, content: String| json!({ "i": { "title": title, "content": content, "published": true } });
    let t = |n: usize| "t".repeat(n);
    let c = |n: usize| "c".repeat(n);
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (create(t(5), c(10)), vec![]),
        (create(t(200), c(50_000)), vec![]),
        (create(t(4), c(10)), vec!["title"]),
        (create(format!("  {}  ", t(4)), c(10)), vec!["title"]),
        (create(t(201), c(10)), vec!["title"]),
        (create(t(5), c(9)), vec!["content"]),
        (create(t(5), c(50_001)), vec!["content"]),
        (create(t(2), c(3)), vec!["content", "title"]),
    ];
    let mut created = 0;
    for (vars, failing) in cases {
        let body = app.gql_as(Some(&alice), CREATE_POST, vars).await;
        if failing.is_empty() {
            assert!(body.get("errors").is_none(), "{body}");
            created += 1;
        } else {
            assert_eq!(first_code(&body), "BAD_USER_INPUT", "{body}");
            assert_eq!(
                body["errors"][0]["message"],
                "Invalid input: failed to create the post."
            );
            assert_eq!(field_errors(&body), failing);
        }
    }
    let posts_after = app
        .store
        .count_posts(&Default::default())
        .await
        .expect("count");
    assert_eq!(posts_after - posts_before, created);

    // updatePost checks only what it is given, with the same rules.
    let post = f.alice_posts[0].to_string();
    let body = app
        .gql_as(
            Some(&alice),
            UPDATE_POST,
            json!({ "id": post, "i": { "title": t(4), "content": c(9) } }),
        )
        .await;
    assert_eq!(field_errors(&body), ["content", "title"], "{body}");
    let body = app
        .gql_as(
            Some(&alice),
            UPDATE_POST,
            json!({ "id": post, "i": { "content": c(10) } }),
        )
        .await;
    assert_eq!(
        body["data"]["updatePost"]["title"], "Ownership in Rust",
        "{body}"
    );
    assert_eq!(body["data"]["updatePost"]["content"], c(10));

    // Comment bodies: 1..=5000 after trimming; the post id is checked with them.
    let comment = |post: &str, body: String| json!({ "i": { "postId": post, "body": body } });
    for (vars, failing) in [
        (comment(&post, "x".into()), vec![]),
        (comment(&post, "x".repeat(5000)), vec![]),
        (comment(&post, "   ".into()), vec!["body"]),
        (comment(&post, "x".repeat(5001)), vec!["body"]),
        (comment("abc", "".into()), vec!["body", "postId"]),
    ] {
        let body = app.gql_as(Some(&alice), ADD_COMMENT, vars).await;
        if failing.is_empty() {
            assert!(body.get("errors").is_none(), "{body}");
        } else {
            assert_eq!(first_code(&body), "BAD_USER_INPUT", "{body}");
            assert_eq!(
                body["errors"][0]["message"],
                "Invalid input: failed to add the comment."
            );
            assert_eq!(field_errors(&body), failing);
        }
    }
    let body = app
        .gql_as(
            Some(&alice),
            "mutation { updateProfile(input: { name: \" \" }) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(field_errors(&body), ["name"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_from_draft_to_published_to_deleted() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let bob = token_for(f.bob);
    let body = app
        .gql_as(
            Some(&bob),
            CREATE_POST,
            json!({ "i": { "title": "  Draft title  ", "content": "Draft content here." } }),
        )
        .await;
    let post = &body["data"]["createPost"];
    assert_eq!(post["title"], "Draft title", "{body}");
    assert_eq!(post["published"], false);
    assert_eq!(post["publishedAt"], Value::Null);
    let id = post["id"].as_str().expect("id").to_owned();
    let feed = "{ posts(first: 100) { nodes { id } } }";
    let listed = |body: &Value| {
        body["data"]["posts"]["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .any(|n| n["id"] == id.as_str())
    };
    assert!(!listed(&app.gql(feed, json!({})).await));

    let body = app
        .gql_as(
            Some(&bob),
            "mutation($id: ID!) { publishPost(id: $id) { published publishedAt } }",
            json!({ "id": id }),
        )
        .await;
    let published_at = body["data"]["publishPost"]["publishedAt"].clone();
    assert_eq!(body["data"]["publishPost"]["published"], true, "{body}");
    assert!(published_at.is_string());
    assert!(listed(&app.gql(feed, json!({})).await));
    // Publishing again changes nothing.
    let again = app
        .gql_as(
            Some(&bob),
            "mutation($id: ID!) { publishPost(id: $id) { publishedAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(again["data"]["publishPost"]["publishedAt"], published_at);

    // Alice comments; the count follows.
    let alice = token_for(f.alice);
    let body = app
        .gql_as(
            Some(&alice),
            ADD_COMMENT,
            json!({ "i": { "postId": id, "body": "  Great post!  " } }),
        )
        .await;
    let comment = &body["data"]["addComment"];
    assert_eq!(comment["body"], "Great post!", "{body}");
    assert_eq!(comment["author"]["id"], f.alice.to_string());
    assert_eq!(comment["post"]["commentCount"], 1);
    let comment_id = comment["id"].as_str().expect("id").to_owned();

    let body = app
        .gql_as(
            Some(&bob),
            "mutation($id: ID!) { unpublishPost(id: $id) { published publishedAt } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        body["data"]["unpublishPost"],
        json!({ "published": false, "publishedAt": null })
    );
    assert!(!listed(&app.gql(feed, json!({})).await));
    let anon = app
        .gql(
            "query($id: ID!) { post(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(anon["data"]["post"], Value::Null);

    let body = app
        .gql_as(
            Some(&bob),
            "mutation($id: ID!) { deletePost(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(body["data"]["deletePost"], id.as_str(), "{body}");
    let gone = app
        .gql_as(
            Some(&bob),
            "query($id: ID!) { post(id: $id) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(gone["data"]["post"], Value::Null);
    let comment_id: i64 = comment_id.parse().expect("numeric");
    assert!(
        app.store
            .comments_by_ids(&[comment_id])
            .await
            .expect("comments")
            .is_empty(),
        "comments go with their post"
    );
    // Deleting twice: NOT_FOUND.
    let body = app
        .gql_as(
            Some(&bob),
            "mutation($id: ID!) { deletePost(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(first_code(&body), "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_comment_updates_the_count() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let bob = token_for(f.bob);
    let post = f.alice_posts[1].to_string();
    let body = app
        .gql_as(
            Some(&bob),
            ADD_COMMENT,
            json!({ "i": { "postId": post, "body": "First!" } }),
        )
        .await;
    let id = body["data"]["addComment"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let count = "query($id: ID!) { post(id: $id) { commentCount } }";
    assert_eq!(
        app.gql(count, json!({ "id": post })).await["data"]["post"]["commentCount"],
        1
    );
    let body = app
        .gql_as(
            Some(&bob),
            "mutation($id: ID!) { deleteComment(id: $id) }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(body["data"]["deleteComment"], id.as_str(), "{body}");
    assert_eq!(
        app.gql(count, json!({ "id": post })).await["data"]["post"]["commentCount"],
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_take_effect_at_once_and_the_last_admin_stays() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let carol = admin_token(&app.store, f.carol).await;
    let set_role =
        "mutation($id: ID!, $r: Role!) { setUserRole(userId: $id, role: $r) { id role } }";

    // The only admin cannot demote herself.
    let body = app
        .gql_as(
            Some(&carol),
            set_role,
            json!({ "id": f.carol.to_string(), "r": "USER" }),
        )
        .await;
    assert_eq!(first_code(&body), "CONFLICT", "{body}");

    // Bob becomes an admin; his existing token carries the new role at once.
    let bob = token_for(f.bob);
    let users = "{ users { totalCount } }";
    assert_eq!(
        first_code(&app.gql_as(Some(&bob), users, json!({})).await),
        "FORBIDDEN"
    );
    let body = app
        .gql_as(
            Some(&carol),
            set_role,
            json!({ "id": f.bob.to_string(), "r": "ADMIN" }),
        )
        .await;
    assert_eq!(body["data"]["setUserRole"]["role"], "ADMIN", "{body}");
    let listed = app.gql_as(Some(&bob), users, json!({})).await;
    assert_eq!(listed["data"]["users"]["totalCount"], 3, "{listed}");

    // Now Carol may step down, and Bob's demotion of the last admin (himself) is refused.
    let body = app
        .gql_as(
            Some(&carol),
            set_role,
            json!({ "id": f.carol.to_string(), "r": "USER" }),
        )
        .await;
    assert_eq!(body["data"]["setUserRole"]["role"], "USER", "{body}");
    assert_eq!(
        first_code(&app.gql_as(Some(&carol), users, json!({})).await),
        "FORBIDDEN"
    );
    let body = app
        .gql_as(
            Some(&bob),
            set_role,
            json!({ "id": f.bob.to_string(), "r": "USER" }),
        )
        .await;
    assert_eq!(first_code(&body), "CONFLICT");
    let body = app
        .gql_as(Some(&bob), set_role, json!({ "id": "999999", "r": "USER" }))
        .await;
    assert_eq!(first_code(&body), "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    for _ in 0..5 {
        let alice = admin_token(&app.store, f.alice).await;
        let bob = admin_token(&app.store, f.bob).await;
        let set_role = "mutation($id: ID!) { setUserRole(userId: $id, role: USER) { id } }";
        let (a, b) = tokio::join!(
            app.gql_as(Some(&alice), set_role, json!({ "id": f.bob.to_string() })),
            app.gql_as(Some(&bob), set_role, json!({ "id": f.alice.to_string() })),
        );
        let admins = app
            .store
            .users_by_ids(&[f.alice, f.bob])
            .await
            .expect("users")
            .into_iter()
            .filter(|u| u.role == Role::Admin)
            .count();
        assert_eq!(admins, 1, "exactly one admin remains: {a} {b}");
        // One of the two succeeded; the other was refused as the last admin, or had lost the role by then.
        let refused = [&a, &b]
            .iter()
            .filter(|body| body.get("errors").is_some())
            .count();
        assert_eq!(refused, 1, "{a} {b}");
    }
}
