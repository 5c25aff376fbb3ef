//! A bounded fuzzer for the document and variables path (what `cargo fuzz` would do; libFuzzer needs a nightly
//! toolchain, which this project's machines do not have). For `FOLIO_FUZZ_SECS` seconds (default 5; `.ci/run`
//! gives it more) it takes real documents clients send, damages them (characters inserted, deleted, replaced,
//! duplicated, braces and quotes stirred in, fragments repeated, huge numbers), pairs them with arbitrary
//! variables, and runs them through the operation pipeline as an anonymous caller and as a user. No input may
//! panic, answer `INTERNAL_SERVER_ERROR`, or take the pipeline past its timeout.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use serde_json::{Value, json};

use folio::auth::Viewer;
use folio::operation::{Accepts, Request, Status};
use folio::store::Role;

/// Documents as clients send them: the seeds every case damages.
const SEEDS: &[&str] = &[
    "query Feed($n: Int!) { posts(first: $n) { edges { node { id title author { name } commentCount comments(first: 5) { edges { node { body author { name } } } } } } pageInfo { hasNextPage endCursor } } }",
    "query Post($id: ID!) { post(id: $id) { __typename id ...P comments(first: 20) { nodes { ...C } } } } fragment P on Post { title content author { ...U } } fragment C on Comment { body author { ...U } } fragment U on User { __typename id name }",
    "query User($id: ID!, $skip: Boolean!) { user(id: $id) { name posts(first: 10) @skip(if: $skip) { totalCount nodes { id title } } } me { id email } }",
    "query Search($s: String) { posts(first: 10, filter: { search: $s, drafts: true }) { nodes { id title } } }",
    "mutation Create($i: CreatePostInput!) { createPost(input: $i) { id title published } }",
    "mutation Comment($p: ID!, $b: String!) { addComment(input: { postId: $p, body: $b }) { id body } }",
    "mutation Login($i: LoginInput!) { login(input: $i) { token user { id } } }",
    "query Entities($r: [_Any!]!) { _entities(representations: $r) { ... on Post { id title } ... on User { name } } }",
    "{ __schema { queryType { name } types { name fields { name } } } __type(name: \"Post\") { name } }",
    "{ _service { sdl } }",
    "query Live @live { posts(first: 3) { totalCount } }",
    "subscription { postPublished { id } }",
    "query A { a: posts(first: 1) { totalCount } b: posts(first: 2) { totalCount } } query B { me { id } }",
];

/// Bits of GraphQL syntax to stir in.
const PIECES: &[&str] = &[
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "\"",
    "\"\"\"",
    "...",
    "$",
    "@",
    ":",
    "!",
    "=",
    "#",
    "\\",
    "\n",
    "\u{0}",
    "fragment F on Query { ...F }",
    "...F",
    "99999999999999999999",
    "-1",
    "1e309",
    "null",
    "__typename",
    "@include(if: true)",
    "@skip(if: $x)",
    "on",
    "query",
    "mutation",
    "subscription",
    "\u{feff}",
    "é",
    "\u{10ffff}",
];

#[derive(Clone, Debug)]
enum Edit {
    Insert(usize, usize),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Char(usize, char),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0..PIECES.len()).prop_map(|(at, p)| Edit::Insert(at, p)),
        (any::<usize>(), 1usize..12).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Edit::Duplicate(at, n)),
        (any::<usize>(), any::<char>()).prop_map(|(at, c)| Edit::Char(at, c)),
    ]
}

/// `document` with `edits` applied (positions taken modulo the length, on character boundaries).
fn damage(document: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = document.chars().collect();
    for edit in edits {
        let len = chars.len().max(1);
        match edit {
            Edit::Insert(at, piece) => {
                let at = at % (len + 1).min(chars.len() + 1);
                chars.splice(at..at, PIECES[*piece].chars());
            }
            Edit::Delete(at, n) => {
                if !chars.is_empty() {
                    let at = at % chars.len();
                    let end = (at + n).min(chars.len());
                    chars.drain(at..end);
                }
            }
            Edit::Duplicate(at, n) => {
                if !chars.is_empty() && chars.len() < 20_000 {
                    let at = at % chars.len();
                    let end = (at + n).min(chars.len());
                    let copy: Vec<char> = chars[at..end].to_vec();
                    chars.splice(at..at, copy);
                }
            }
            Edit::Char(at, c) => {
                if !chars.is_empty() {
                    let at = at % chars.len();
                    chars[at] = *c;
                }
            }
        }
    }
    chars.into_iter().collect()
}

/// Variables of every shape.
fn variables() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
        (1usize..3).prop_map(|k| Value::from("z".repeat(k * 40_000))),
    ];
    let value = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z_]{1,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(
        prop_oneof![
            Just("n".to_owned()),
            Just("id".to_owned()),
            Just("s".to_owned()),
            Just("i".to_owned()),
            Just("r".to_owned()),
            Just("p".to_owned()),
            Just("b".to_owned()),
            Just("skip".to_owned()),
            "[a-z]{1,4}",
        ],
        value,
        0..5,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

#[test]
fn damaged_documents_and_arbitrary_variables_never_break_the_pipeline() {
    let seconds: u64 = std::env::var("FOLIO_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (rt, app, fx) = crate::properties::setup();
    let pipeline = app.pipeline.clone().expect("an in-process app");
    let user = Viewer::User {
        id: fx.alice,
        role: Role::User,
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let strategy = (
        0..SEEDS.len(),
        prop::collection::vec(edit(), 0..8),
        variables(),
        any::<bool>(),
    );
    let check =
        |(seed, edits, vars, signed_in): (usize, Vec<Edit>, Value, bool)| -> Result<(), String> {
            let document = damage(SEEDS[seed], &edits);
            let request = Request {
                document: Some(document.clone()),
                document_id: None,
                operation_name: None,
                variables: async_graphql::Variables::from_json(vars.clone()),
                extensions: Default::default(),
                viewer: if signed_in {
                    user.clone()
                } else {
                    Viewer::Anonymous
                },
                client: IpAddr::V4(Ipv4Addr::LOCALHOST),
                request_id: "fuzz".to_owned(),
                accepts: Accepts::Any,
                deadline: None,
                reveals_sdl: false,
            };
            let outcome = rt.block_on(pipeline.run(request));
            let body = String::from_utf8_lossy(&outcome.entry.body).into_owned();
            if matches!(outcome.status, Status::Internal | Status::TimedOut)
                || body.contains("INTERNAL_SERVER_ERROR")
            {
                return Err(format!(
                    "{document:?} with {vars} answered {:?}: {body}",
                    outcome.status
                ));
            }
            Ok(())
        };
    let mut runner = TestRunner::new(RunnerConfig {
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let mut cases = 0u64;
    while Instant::now() < deadline {
        let mut tree = strategy.new_tree(&mut runner).expect("a case");
        cases += 1;
        if let Err(first) = check(tree.current()) {
            // Shrink to a smaller failing input before reporting.
            let mut smallest = first;
            for _ in 0..256 {
                if !tree.simplify() {
                    break;
                }
                match check(tree.current()) {
                    Err(failure) => smallest = failure,
                    Ok(()) => {
                        if !tree.complicate() {
                            break;
                        }
                    }
                }
            }
            panic!("after {cases} cases: {smallest}");
        }
    }
    println!("fuzzed {cases} documents in {seconds} s");
    assert!(cases > 0);
}
