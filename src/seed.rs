//! Deterministic demo data: `folio seed` and the first-start demo set.
//!
//! The same `--seed` gives the same users, posts and comments (with this build's locked dependencies), so
//! benchmarks and screenshots are reproducible. Text comes from the `fake` crate; rows go to the store in large
//! batches (see `store::seed`).

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use fake::Fake;
use fake::faker::company::en::{Buzzword, CatchPhrase};
use fake::faker::lorem::en::{Paragraph, Sentence};
use fake::faker::name::en::{FirstName, LastName};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::store::Store;
use crate::store::seed::{NewComment, NewPost, NewUser};

/// How much to create.
#[derive(Clone, Copy, Debug)]
pub struct SeedPlan {
    pub users: u64,
    pub posts: u64,
    pub comments: u64,
    pub seed: u64,
    /// Draw a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

/// What a seed run did and how long it took.
#[derive(Clone, Copy, Debug)]
pub struct SeedReport {
    pub users: u64,
    pub posts: u64,
    pub comments: u64,
    pub elapsed: Duration,
}

const USER_BATCH: usize = 2_000;
const POST_BATCH: usize = 1_000;
const COMMENT_BATCH: usize = 10_000;

/// Creates the planned rows. Posts go to random users; comments to random published posts.
pub async fn run(store: &Store, plan: SeedPlan) -> anyhow::Result<SeedReport> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let total = plan.users + plan.posts + plan.comments;
    let bar = if plan.progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:9} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows ({per_sec})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // Timestamps run forward from a year ago in row order, so ids and times agree.
    let now = Utc::now();
    let start = now - TimeDelta::days(365);
    let stamp = |i: u64, n: u64| -> DateTime<Utc> {
        let span = 365 * 24 * 3600_i64;
        let offset = (i as f64 / n.max(1) as f64 * span as f64) as i64;
        start + TimeDelta::seconds(offset)
    };
    // Emails must be unique even when seeding into a database that already has users.
    let first_user = store.count_users().await? as u64;

    bar.set_message("users");
    let mut user_ids = Vec::with_capacity(plan.users as usize);
    let mut i = 0;
    while i < plan.users {
        let n = (plan.users - i).min(USER_BATCH as u64);
        let batch: Vec<NewUser> = (i..i + n)
            .map(|k| {
                let first: String = FirstName().fake_with_rng(&mut rng);
                let last: String = LastName().fake_with_rng(&mut rng);
                let handle: String = format!("{first}.{last}")
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                    .collect();
                NewUser {
                    email: format!(
                        "{}.{}@example.com",
                        handle.to_ascii_lowercase(),
                        first_user + k + 1
                    ),
                    name: format!("{first} {last}"),
                    role: "USER",
                    plan: if rng.random_bool(0.1) { "PRO" } else { "FREE" },
                    created_at: stamp(k, plan.users) - TimeDelta::days(30),
                }
            })
            .collect();
        user_ids.extend(store.insert_users(&batch).await?);
        i += n;
        bar.inc(n);
    }
    if user_ids.is_empty() && (plan.posts > 0 || plan.comments > 0) {
        anyhow::bail!("posts and comments need users: pass --users 1 or more");
    }

    bar.set_message("posts");
    let mut published_ids = Vec::with_capacity(plan.posts as usize);
    let mut i = 0;
    while i < plan.posts {
        let n = (plan.posts - i).min(POST_BATCH as u64);
        let batch: Vec<NewPost> = (i..i + n)
            .map(|k| {
                let phrase: String = CatchPhrase().fake_with_rng(&mut rng);
                let topic: String = Buzzword().fake_with_rng(&mut rng);
                let paragraphs = rng.random_range(2..6);
                let content = (0..paragraphs)
                    .map(|_| Paragraph(3..7).fake_with_rng::<String, _>(&mut rng))
                    .collect::<Vec<_>>()
                    .join("\n\n");
                NewPost {
                    author_id: user_ids[rng.random_range(0..user_ids.len())],
                    title: format!("{phrase}: notes on {topic}"),
                    content,
                    published: rng.random_bool(0.85),
                    created_at: stamp(k, plan.posts),
                }
            })
            .collect();
        published_ids.extend(
            store
                .insert_posts(&batch)
                .await?
                .into_iter()
                .filter(|(_, p)| *p)
                .map(|(id, _)| id),
        );
        i += n;
        bar.inc(n);
    }
    if published_ids.is_empty() && plan.comments > 0 {
        anyhow::bail!("comments need published posts: pass more --posts");
    }

    bar.set_message("comments");
    let mut i = 0;
    while i < plan.comments {
        let n = (plan.comments - i).min(COMMENT_BATCH as u64);
        let batch: Vec<NewComment> = (i..i + n)
            .map(|k| NewComment {
                post_id: published_ids[rng.random_range(0..published_ids.len())],
                author_id: user_ids[rng.random_range(0..user_ids.len())],
                body: Sentence(4..18).fake_with_rng(&mut rng),
                created_at: stamp(k, plan.comments),
            })
            .collect();
        store.insert_comments(&batch).await?;
        i += n;
        bar.inc(n);
    }
    bar.set_message("analyze");
    store.analyze().await?;
    bar.finish_and_clear();
    Ok(SeedReport {
        users: plan.users,
        posts: plan.posts,
        comments: plan.comments,
        elapsed: started.elapsed(),
    })
}
