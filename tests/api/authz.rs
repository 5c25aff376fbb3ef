//! The authorization matrix: every mutation and every protected field, asked by each of {anonymous, the owner,
//! another user, an admin}, must be allowed or fail with exactly the listed code. A refused write must also
//! leave the data as it was.
//!
//! Each (case, actor) pair gets fresh targets owned by Alice, so one actor's successful `deletePost` cannot
//! change what the next actor sees.

use serde_json::{Value, json};

use crate::helpers::{Fixture, TestApp, admin_token, token_for};
use folio::domain::{CommentBody, PostContent, Title};
use folio::store::{CreateComment, NewPost, Store};

/// Who asks.
#[derive(Clone, Copy, Debug)]
enum Actor {
    Anonymous,
    Owner,
    Other,
    Admin,
}

const ACTORS: [Actor; 4] = [Actor::Anonymous, Actor::Owner, Actor::Other, Actor::Admin];

/// Fresh objects owned by Alice for one (case, actor) run.
struct Targets {
    owner: i64,
    other: i64,
    /// A published post with a comment by the owner.
    post: i64,
    comment: i64,
    /// A draft.
    draft: i64,
    /// A draft that has a comment (written while it was published).
    draft_with_comment: i64,
    /// That comment, by the owner.
    draft_comment: i64,
}

impl Targets {
    async fn create(store: &Store, f: &Fixture) -> Self {
        let new_post = |published: bool| NewPost {
            title: Title::parse("Matrix target".into()).expect("title"),
            content: PostContent::parse("Content of a matrix target.".into()).expect("content"),
            published,
        };
        let (published, unpublished) = (new_post(true), new_post(false));
        let post = store
            .create_post(f.alice, &published)
            .await
            .expect("post")
            .id;
        let draft = store
            .create_post(f.alice, &unpublished)
            .await
            .expect("draft")
            .id;
        let draft_with_comment = store
            .create_post(f.alice, &published)
            .await
            .expect("post")
            .id;
        let comment = |post_id: i64| CreateComment {
            post_id,
            author_id: f.alice,
            body: CommentBody::parse("A comment by the owner.".into()).expect("body"),
        };
        let c = store
            .add_comment(&comment(post))
            .await
            .expect("comment")
            .expect("published");
        let draft_comment = store
            .add_comment(&comment(draft_with_comment))
            .await
            .expect("comment")
            .expect("published")
            .id;
        store
            .set_published(draft_with_comment, false)
            .await
            .expect("unpublish");
        Targets {
            owner: f.alice,
            other: f.bob,
            post,
            comment: c.id,
            draft,
            draft_with_comment,
            draft_comment,
        }
    }

    /// Everything a refused write could have touched.
    async fn snapshot(&self, store: &Store) -> String {
        let posts = store
            .posts_by_ids(&[self.post, self.draft, self.draft_with_comment])
            .await
            .expect("posts");
        let mut posts: Vec<String> = posts.iter().map(|p| format!("{p:?}")).collect();
        posts.sort();
        let comments = store
            .comments_by_ids(&[self.comment])
            .await
            .expect("comments");
        let users = store
            .users_by_ids(&[self.owner, self.other])
            .await
            .expect("users");
        let mut users: Vec<String> = users
            .iter()
            .map(|u| format!("{} {} {:?}", u.id, u.name, u.role))
            .collect();
        users.sort();
        format!("{posts:?} {comments:?} {users:?}")
    }
}

/// What an actor got: `ok`, `null` (the field answered null), `hidden` (not in the list), or the error code.
type Outcome = String;

struct Case {
    name: &'static str,
    /// The operation and its variables for these targets.
    op: fn(&Targets) -> (String, Value),
    /// Reads the outcome from the response body.
    read: fn(&Value, &Targets) -> Outcome,
    /// Expected outcome for anonymous, owner, other user, admin.
    expect: [&'static str; 4],
    writes: bool,
}

/// The outcome of a single root field: its error code, `null`, or `ok`.
fn root(body: &Value, _: &Targets) -> Outcome {
    if let Some(code) = body["errors"][0]["extensions"]["code"].as_str() {
        return code.to_owned();
    }
    let data = body["data"].as_object().expect("data object");
    assert_eq!(data.len(), 1, "one root field: {body}");
    match data.values().next() {
        Some(Value::Null) | None => "null".into(),
        Some(_) => "ok".into(),
    }
}

/// `ok` when a nested value (reached by a JSON pointer) is present and not null, `null` otherwise.
fn at(pointer: &'static str) -> impl Fn(&Value) -> Outcome {
    move |body: &Value| {
        if let Some(code) = body["errors"][0]["extensions"]["code"].as_str() {
            return code.to_owned();
        }
        match body.pointer(pointer) {
            None | Some(Value::Null) => "null".into(),
            Some(_) => "ok".into(),
        }
    }
}

/// `ok` when the draft is among the listed nodes, `hidden` when it is not.
fn lists_draft(body: &Value, t: &Targets, pointer: &str) -> Outcome {
    if let Some(code) = body["errors"][0]["extensions"]["code"].as_str() {
        return code.to_owned();
    }
    let nodes = body
        .pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("no list at {pointer}: {body}"));
    let draft = t.draft.to_string();
    if nodes.iter().any(|n| n["id"] == draft.as_str()) {
        "ok".into()
    } else {
        "hidden".into()
    }
}

const U: &str = "UNAUTHENTICATED";
const F: &str = "FORBIDDEN";
const N: &str = "NOT_FOUND";

fn cases() -> Vec<Case> {
    vec![
        // ---- mutations ----
        Case {
            name: "signUp",
            op: |_| {
                let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
                (
                    "mutation($i: SignUpInput!) { signUp(input: $i) { token } }".into(),
                    json!({ "i": { "email": email, "name": "New", "password": "long enough password" } }),
                )
            },
            read: root,
            expect: ["ok", "ok", "ok", "ok"],
            writes: true,
        },
        Case {
            name: "login (wrong password)",
            op: |_| {
                (
                    "mutation($i: LoginInput!) { login(input: $i) { token } }".into(),
                    json!({ "i": { "email": "alice@example.com", "password": "not her password" } }),
                )
            },
            read: root,
            expect: [U, U, U, U],
            writes: true,
        },
        Case {
            name: "updateProfile",
            op: |_| {
                (
                    "mutation { updateProfile(input: { name: \"Renamed\" }) { id } }".into(),
                    json!({}),
                )
            },
            read: root,
            expect: [U, "ok", "ok", "ok"],
            writes: false, // every signed-in actor edits only themself
        },
        Case {
            name: "createPost",
            op: |_| {
                (
                    "mutation { createPost(input: { title: \"A new post\", content: \"Some content here.\" }) { id } }"
                        .into(),
                    json!({}),
                )
            },
            read: root,
            expect: [U, "ok", "ok", "ok"],
            writes: false,
        },
        Case {
            name: "updatePost (published)",
            op: |t| update_post(t.post),
            read: root,
            expect: [U, "ok", F, "ok"],
            writes: true,
        },
        Case {
            name: "updatePost (draft)",
            op: |t| update_post(t.draft),
            read: root,
            expect: [U, "ok", N, "ok"],
            writes: true,
        },
        Case {
            name: "publishPost (draft)",
            op: |t| by_id("publishPost", t.draft, "{ id }"),
            read: root,
            expect: [U, "ok", N, "ok"],
            writes: true,
        },
        Case {
            name: "unpublishPost (published)",
            op: |t| by_id("unpublishPost", t.post, "{ id }"),
            read: root,
            expect: [U, "ok", F, "ok"],
            writes: true,
        },
        Case {
            name: "deletePost (published)",
            op: |t| by_id("deletePost", t.post, ""),
            read: root,
            expect: [U, "ok", F, "ok"],
            writes: true,
        },
        Case {
            name: "deletePost (draft)",
            op: |t| by_id("deletePost", t.draft, ""),
            read: root,
            expect: [U, "ok", N, "ok"],
            writes: true,
        },
        Case {
            name: "addComment (published)",
            op: |t| add_comment(t.post),
            read: root,
            expect: [U, "ok", "ok", "ok"],
            writes: false,
        },
        Case {
            name: "addComment (draft)",
            op: |t| add_comment(t.draft),
            read: root,
            expect: [U, F, N, F],
            writes: true,
        },
        Case {
            name: "deleteComment",
            op: |t| by_id("deleteComment", t.comment, ""),
            read: root,
            expect: [U, "ok", F, "ok"],
            writes: true,
        },
        Case {
            // Hidden behind someone else's draft: answered exactly as a missing comment.
            name: "deleteComment (on a draft)",
            op: |t| by_id("deleteComment", t.draft_comment, ""),
            read: root,
            expect: [U, "ok", N, "ok"],
            writes: true,
        },
        Case {
            name: "setUserRole",
            op: |t| {
                (
                    "mutation($id: ID!) { setUserRole(userId: $id, role: ADMIN) { id role } }"
                        .into(),
                    json!({ "id": t.other.to_string() }),
                )
            },
            read: root,
            expect: [U, F, F, "ok"],
            writes: true,
        },
        // ---- protected reads ----
        Case {
            name: "me",
            op: |_| ("{ me { id } }".into(), json!({})),
            read: root,
            expect: ["null", "ok", "ok", "ok"],
            writes: false,
        },
        Case {
            name: "users",
            op: |_| ("{ users { totalCount } }".into(), json!({})),
            read: root,
            expect: [U, F, F, "ok"],
            writes: false,
        },
        Case {
            name: "User.email",
            op: |t| user_field(t.owner, "email"),
            read: |b, _| at("/data/user/email")(b),
            expect: ["null", "ok", "null", "ok"],
            writes: false,
        },
        Case {
            name: "User.plan",
            op: |t| user_field(t.owner, "plan"),
            read: |b, _| at("/data/user/plan")(b),
            expect: ["null", "ok", "null", "ok"],
            writes: false,
        },
        Case {
            name: "post(id) of a draft",
            op: |t| {
                (
                    "query($id: ID!) { post(id: $id) { id } }".into(),
                    json!({ "id": t.draft.to_string() }),
                )
            },
            read: root,
            expect: ["null", "ok", "null", "ok"],
            writes: false,
        },
        Case {
            name: "posts(filter: { authorId, drafts: true })",
            op: |t| {
                (
                    "query($a: ID!) { posts(first: 100, filter: { authorId: $a, drafts: true }) { nodes { id } } }"
                        .into(),
                    json!({ "a": t.owner.to_string() }),
                )
            },
            read: |b, t| lists_draft(b, t, "/data/posts/nodes"),
            expect: ["hidden", "ok", "hidden", "ok"],
            writes: false,
        },
        Case {
            name: "User.posts",
            op: |t| {
                (
                    "query($id: ID!) { user(id: $id) { posts(first: 100) { nodes { id } } } }"
                        .into(),
                    json!({ "id": t.owner.to_string() }),
                )
            },
            read: |b, t| lists_draft(b, t, "/data/user/posts/nodes"),
            expect: ["hidden", "ok", "hidden", "ok"],
            writes: false,
        },
        Case {
            name: "Comment.post of a draft",
            op: |t| {
                (
                    "query($id: ID!) { post(id: $id) { comments { nodes { post { id } } } } }"
                        .into(),
                    json!({ "id": t.draft_with_comment.to_string() }),
                )
            },
            read: |b, _| at("/data/post/comments/nodes/0/post/id")(b),
            expect: ["null", "ok", "null", "ok"],
            writes: false,
        },
    ]
}

fn update_post(id: i64) -> (String, Value) {
    (
        "mutation($id: ID!) { updatePost(id: $id, input: { title: \"Edited title\" }) { id } }"
            .into(),
        json!({ "id": id.to_string() }),
    )
}

fn by_id(mutation: &str, id: i64, selection: &str) -> (String, Value) {
    (
        format!("mutation($id: ID!) {{ {mutation}(id: $id) {selection} }}"),
        json!({ "id": id.to_string() }),
    )
}

fn add_comment(post: i64) -> (String, Value) {
    (
        "mutation($p: ID!) { addComment(input: { postId: $p, body: \"Nice.\" }) { id } }".into(),
        json!({ "p": post.to_string() }),
    )
}

fn user_field(id: i64, field: &str) -> (String, Value) {
    (
        format!("query($id: ID!) {{ user(id: $id) {{ {field} }} }}"),
        json!({ "id": id.to_string() }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_allows_or_refuses_each_kind_of_caller() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let admin = admin_token(&app.store, f.carol).await;
    let owner = token_for(f.alice);
    let other = token_for(f.bob);
    let mut failures = Vec::new();
    for case in cases() {
        for (i, actor) in ACTORS.into_iter().enumerate() {
            let targets = Targets::create(&app.store, &f).await;
            let token = match actor {
                Actor::Anonymous => None,
                Actor::Owner => Some(owner.as_str()),
                Actor::Other => Some(other.as_str()),
                Actor::Admin => Some(admin.as_str()),
            };
            let before = targets.snapshot(&app.store).await;
            let (query, vars) = (case.op)(&targets);
            let body = app.gql_as(token, &query, vars).await;
            let got = (case.read)(&body, &targets);
            if got != case.expect[i] {
                failures.push(format!(
                    "{} as {actor:?}: expected {}, got {got}: {body}",
                    case.name, case.expect[i]
                ));
            }
            if case.writes && got != "ok" {
                let after = targets.snapshot(&app.store).await;
                if before != after {
                    failures.push(format!(
                        "{} as {actor:?} was refused ({got}) but changed data",
                        case.name
                    ));
                }
            }
            // setUserRole succeeded for the admin: put Bob back.
            if case.name == "setUserRole" && got == "ok" {
                app.store
                    .set_user_role(f.bob, folio::store::Role::User)
                    .await
                    .expect("reset role");
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
