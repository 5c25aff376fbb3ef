//! Running a plan: its variables checked, the rows fetched level by level with the store's batch functions,
//! the response written as JSON.
//!
//! **Fetching.** The root fields' statements run first (all `post(id)` roots share one, as do all `user(id)`).
//! Then, level by level, every relation the plan reads at that level is one statement for all of its parents,
//! through the same store functions the loaders and `prefetch.rs` call, run concurrently: the authors of a
//! page's posts come joined into the page's statement, a comment page with its post's count and (if selected)
//! its authors, an author's page of posts with `User.posts`. What an earlier statement already brought (a
//! comment's author, a count) is not asked again. Tags are recorded where the resolvers record them.
//!
//! **Writing.** The JSON is the executor's for the same request (tests compare them): strings escaped by
//! serde_json as async-graphql's serialisation does, dates in RFC 3339, ids as strings. Fields come in
//! selection order, as the GraphQL spec asks.

// foldhash, not SipHash: these maps live for one request and are keyed by ids the database returned; SipHash
// over them was a twentieth of a feed's instructions.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::io;

use async_graphql::connection::CursorType;
use async_graphql::{InputType, Value, Variables};
use futures_util::future::try_join_all;

use super::{
    CommentField, CommentSel, Conn, ConnField, EdgeField, ListArgs, PageInfoField, Plan, PostField,
    PostSel, RootField, Source, UserField, UserSel, cost,
};
use crate::auth::Viewer;
use crate::cache::{Tag, Tracker};
use crate::error::AppError;
use crate::graphql::connection::{self, Cursor};
use crate::graphql::posts::{PostFilter, visible_with};
use crate::graphql::users::may_see_private;
use crate::store::{CommentRow, Content, Page, PostListFilter, PostRow, Role, Store, UserRow};

/// A planned operation's response body.
pub struct Output {
    pub body: Vec<u8>,
}

/// What a run fetched, keyed as the loaders key it.
#[derive(Default)]
struct Data {
    posts: HashMap<i64, PostRow>,
    users: HashMap<i64, UserRow>,
    /// A post's number of comments.
    counts: HashMap<i64, i64>,
    /// A page of a post's comments.
    comment_pages: HashMap<(i64, Page), Vec<CommentRow>>,
    /// A page of an author's posts (ids into `posts`), with or without drafts.
    author_pages: HashMap<(i64, bool, Page), Vec<i64>>,
    /// An author's number of posts, with or without drafts.
    author_counts: HashMap<(i64, bool), i64>,
}

/// A root field as resolved for this request.
enum Root {
    Typename,
    Posts {
        page: Page,
        /// The page's post ids (one more than shown when another page follows).
        ids: Vec<i64>,
        total: Option<i64>,
    },
    /// The post, if there is one the viewer may see.
    Post(Option<i64>),
    /// The user, if there is one.
    User(Option<i64>),
}

/// One statement.
enum Fetch {
    Feed {
        root: usize,
        filter: PostListFilter,
        page: Page,
        authors: bool,
        content: Content,
    },
    FeedTotal {
        root: usize,
        filter: PostListFilter,
    },
    Posts {
        ids: Vec<i64>,
        authors: bool,
    },
    Users(Vec<i64>),
    CommentPages {
        page: Page,
        posts: Vec<i64>,
        authors: bool,
    },
    Counts(Vec<i64>),
    AuthorPages {
        drafts: bool,
        page: Page,
        authors: Vec<i64>,
        content: Content,
    },
    AuthorCounts {
        drafts: bool,
        authors: Vec<i64>,
    },
}

/// What a statement returned.
enum Got {
    Feed(usize, Vec<PostRow>, Vec<UserRow>),
    FeedTotal(usize, i64),
    Posts(Vec<PostRow>),
    PostsWithAuthors(Vec<PostRow>, Vec<UserRow>),
    Users(Vec<UserRow>),
    CommentPages(Page, Vec<i64>, Vec<(CommentRow, i64, Option<UserRow>)>),
    Counts(Vec<i64>, Vec<(i64, i64)>),
    AuthorPages(bool, Page, Vec<i64>, Vec<PostRow>),
    AuthorCounts(bool, Vec<i64>, Vec<(i64, i64)>),
}

impl Fetch {
    async fn run(self, store: &Store) -> Result<Got, AppError> {
        Ok(match self {
            Fetch::Feed {
                root,
                filter,
                page,
                authors: true,
                content,
            } => {
                let rows = store
                    .list_posts_with_authors(&filter, page, content)
                    .await?;
                let (posts, users) = rows.into_iter().unzip();
                Got::Feed(root, posts, users)
            }
            Fetch::Feed {
                root,
                filter,
                page,
                content,
                ..
            } => Got::Feed(
                root,
                store.list_posts(&filter, page, content).await?,
                Vec::new(),
            ),
            Fetch::FeedTotal { root, filter } => {
                Got::FeedTotal(root, store.count_posts(&filter).await?)
            }
            Fetch::Posts { ids, authors: true } => {
                let rows = store.posts_by_ids_with_authors(&ids).await?;
                let (posts, users) = rows.into_iter().unzip();
                Got::PostsWithAuthors(posts, users)
            }
            Fetch::Posts { ids, .. } => Got::Posts(store.posts_by_ids(&ids).await?),
            Fetch::Users(ids) => Got::Users(store.users_by_ids(&ids).await?),
            Fetch::CommentPages {
                page,
                posts,
                authors,
            } => {
                let rows = store.comment_pages(&posts, page, authors).await?;
                Got::CommentPages(page, posts, rows)
            }
            Fetch::Counts(ids) => {
                let found = store.comment_counts(&ids).await?;
                Got::Counts(ids, found)
            }
            Fetch::AuthorPages {
                drafts,
                page,
                authors,
                content,
            } => {
                let rows = store
                    .posts_by_authors(&authors, drafts, page, content)
                    .await?;
                Got::AuthorPages(drafts, page, authors, rows)
            }
            Fetch::AuthorCounts { drafts, authors } => {
                let found = store.post_counts_by_authors(&authors, drafts).await?;
                Got::AuthorCounts(drafts, authors, found)
            }
        })
    }
}

impl Data {
    fn absorb(&mut self, got: Got, roots: &mut [Root]) {
        match got {
            Got::Feed(root, posts, users) => {
                if let Some(Root::Posts { ids, .. }) = roots.get_mut(root) {
                    *ids = posts.iter().map(|p| p.id).collect();
                }
                self.add_posts(posts);
                self.add_users(users);
            }
            Got::FeedTotal(root, n) => {
                if let Some(Root::Posts { total, .. }) = roots.get_mut(root) {
                    *total = Some(n);
                }
            }
            Got::Posts(posts) => self.add_posts(posts),
            Got::PostsWithAuthors(posts, users) => {
                self.add_posts(posts);
                self.add_users(users);
            }
            Got::Users(users) => self.add_users(users),
            Got::CommentPages(page, posts, rows) => {
                for post in posts {
                    self.comment_pages.entry((post, page)).or_default();
                    // A post without rows has no comments after the cursor; without a cursor, none at all.
                    if page.after.is_none() {
                        self.counts.entry(post).or_insert(0);
                    }
                }
                for (comment, total, author) in rows {
                    // Counted over all of the post's comments, whatever the cursor.
                    self.counts.insert(comment.post_id, total);
                    if let Some(author) = author {
                        self.users.insert(author.id, author);
                    }
                    self.comment_pages
                        .entry((comment.post_id, page))
                        .or_default()
                        .push(comment);
                }
            }
            Got::Counts(ids, found) => {
                // Posts without comments are absent from the result: they count zero.
                for id in ids {
                    self.counts.entry(id).or_insert(0);
                }
                self.counts.extend(found);
            }
            Got::AuthorPages(drafts, page, authors, rows) => {
                for author in authors {
                    self.author_pages.entry((author, drafts, page)).or_default();
                }
                for row in rows {
                    if let Some(list) = self.author_pages.get_mut(&(row.author_id, drafts, page)) {
                        list.push(row.id);
                    }
                    self.posts.insert(row.id, row);
                }
            }
            Got::AuthorCounts(drafts, authors, found) => {
                let found: HashMap<i64, i64> = found.into_iter().collect();
                for author in authors {
                    let n = found.get(&author).copied().unwrap_or(0);
                    self.author_counts.insert((author, drafts), n);
                }
            }
        }
    }

    fn add_posts(&mut self, posts: Vec<PostRow>) {
        for p in posts {
            self.posts.insert(p.id, p);
        }
    }

    fn add_users(&mut self, users: Vec<UserRow>) {
        for u in users {
            self.users.insert(u.id, u);
        }
    }
}

/// The work of one level: a selection over the objects it applies to.
enum Work<'p> {
    Posts(&'p PostSel, Vec<i64>),
    Comments(&'p CommentSel, Vec<(i64, Page)>),
    Users(&'p UserSel, Vec<i64>),
}

/// One run of a plan.
struct Runner<'a> {
    plan: &'a Plan,
    store: &'a Store,
    viewer: &'a Viewer,
    variables: &'a Variables,
    tracker: Option<&'a Tracker>,
}

impl Plan {
    /// Runs the plan for a request by `viewer` with `variables`, recording what it read in `tracker`. `None`
    /// when this request should run on the executor instead (see the module header): nothing has been written
    /// then.
    pub async fn run(
        &self,
        store: &Store,
        viewer: &Viewer,
        variables: &Variables,
        max_complexity: usize,
        tracker: Option<&Tracker>,
    ) -> Option<Output> {
        if cost::evaluate(&self.cost, variables, &self.variables)? > max_complexity {
            return None;
        }
        let runner = Runner {
            plan: self,
            store,
            viewer,
            variables,
            tracker,
        };
        match runner.fetch().await {
            Ok(Some((roots, data))) => {
                let mut body = Vec::with_capacity(8192);
                runner.write(&mut body, &roots, &data).ok()?;
                Some(Output { body })
            }
            Ok(None) => None,
            Err(err) => {
                tracing::warn!(error = ?err, "a planned read's statement failed; running on the executor");
                None
            }
        }
    }
}

impl Runner<'_> {
    /// The viewer, noting (as `ContextExt::viewer` does) that the response depends on who asks.
    fn viewer(&self) -> &Viewer {
        if let Some(tracker) = self.tracker {
            tracker.mark_viewer_dependent();
        }
        self.viewer
    }

    fn tag(&self, tag: Tag) {
        if let Some(tracker) = self.tracker {
            tracker.tag(tag);
        }
    }

    fn value(&self, source: &Source) -> Option<Option<Value>> {
        super::value(source, self.variables, &self.plan.variables)
    }

    /// A list field's page, checked as `connection::page_args` checks it for the resolvers.
    fn page(&self, args: &ListArgs) -> Option<Page> {
        let first = match self.value(&args.first)? {
            None => 20,
            Some(Value::Number(n)) => i32::try_from(n.as_i64()?).ok()?,
            Some(_) => return None,
        };
        let after = match self.value(&args.after)? {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return None,
        };
        connection::page_args(first, after.as_deref()).ok()
    }

    /// An `ID` argument, read as `ids::parse` reads it.
    fn id(&self, source: &Source) -> Option<i64> {
        match self.value(source)?? {
            Value::String(s) => s.trim().parse().ok(),
            Value::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// `posts(filter:)`, through the resolver's own checks and draft rule.
    fn filter(&self, source: &Source) -> Option<PostListFilter> {
        let filter = match self.value(source)? {
            None | Some(Value::Null) => PostFilter::default(),
            Some(v) => PostFilter::parse(Some(v)).ok()?,
        };
        filter.into_store(|| self.viewer()).ok()
    }

    /// Fetches everything the plan reads. `Ok(None)`: leave the request to the executor.
    async fn fetch(&self) -> Result<Option<(Vec<Root>, Data)>, AppError> {
        let mut data = Data::default();
        let mut roots = Vec::with_capacity(self.plan.root.len());
        let mut fetches = Vec::new();
        let (mut post_ids, mut user_ids) = (Vec::new(), Vec::new());
        for (i, root) in self.plan.root.iter().enumerate() {
            roots.push(match &root.field {
                RootField::Typename => Root::Typename,
                RootField::Posts(args, conn) => {
                    let (Some(page), Some(filter)) = (self.page(args), self.filter(&args.filter))
                    else {
                        return Ok(None);
                    };
                    let authors = conn
                        .nodes()
                        .iter()
                        .any(|sel| sel.iter().any(|f| matches!(f.field, PostField::Author(_))));
                    if conn.has_total() {
                        fetches.push(Fetch::FeedTotal {
                            root: i,
                            filter: filter.clone(),
                        });
                    }
                    // A post's content is read only if the plan shows it anywhere (a post fetched twice, by the
                    // page and by id, is one row).
                    let content = match self.plan.reads_content {
                        true => Content::Read,
                        false => Content::Skip,
                    };
                    fetches.push(Fetch::Feed {
                        root: i,
                        filter,
                        page,
                        authors,
                        content,
                    });
                    Root::Posts {
                        page,
                        ids: Vec::new(),
                        total: None,
                    }
                }
                RootField::Post(id, _) => {
                    let Some(id) = self.id(id) else {
                        return Ok(None);
                    };
                    // Tagged even when null: creating or publishing this post must purge a cached `null`.
                    self.tag(Tag::Post(id));
                    post_ids.push(id);
                    Root::Post(Some(id))
                }
                RootField::User(id, _) => {
                    let Some(id) = self.id(id) else {
                        return Ok(None);
                    };
                    self.tag(Tag::User(id));
                    user_ids.push(id);
                    Root::User(Some(id))
                }
            });
        }
        if !post_ids.is_empty() {
            // The authors joined in when any `post(id)` root reads them.
            let authors = self.plan.root.iter().any(|r| match &r.field {
                RootField::Post(_, sel) => {
                    sel.iter().any(|f| matches!(f.field, PostField::Author(_)))
                }
                _ => false,
            });
            fetches.push(Fetch::Posts {
                ids: dedup(post_ids),
                authors,
            });
        }
        if !user_ids.is_empty() {
            fetches.push(Fetch::Users(dedup(user_ids)));
        }
        self.run_all(fetches, &mut data, &mut roots).await?;

        // The roots' rows, checked as their resolvers check them, and the first level of work.
        let mut work = Vec::new();
        for (root, planned) in roots.iter_mut().zip(&self.plan.root) {
            match (root, &planned.field) {
                (Root::Posts { ids, page, .. }, RootField::Posts(_, conn)) => {
                    // Every fetched row is tagged, as the resolver tags them; only the shown ones are resolved
                    // further (the extra row only tells whether another page follows).
                    self.tag(Tag::PostList);
                    for id in ids.iter() {
                        self.tag(Tag::Post(*id));
                    }
                    let shown = &ids[..page.shown().min(ids.len())];
                    for sel in conn.nodes() {
                        work.push(Work::Posts(sel, shown.to_vec()));
                    }
                }
                (Root::Post(found), RootField::Post(_, sel)) => {
                    *found = found.filter(|id| {
                        data.posts
                            .get(id)
                            .is_some_and(|row| visible_with(row, || self.viewer()))
                    });
                    if let Some(id) = found {
                        work.push(Work::Posts(sel, vec![*id]));
                    }
                }
                (Root::User(found), RootField::User(_, sel)) => {
                    *found = found.filter(|id| data.users.contains_key(id));
                    if let Some(id) = found {
                        work.push(Work::Users(sel, vec![*id]));
                    }
                }
                _ => {}
            }
        }
        while !work.is_empty() {
            let Some(fetches) = self.level(&work, &data) else {
                return Ok(None);
            };
            self.run_all(fetches, &mut data, &mut roots).await?;
            let Some(next) = self.next(&work, &data) else {
                return Ok(None);
            };
            work = next;
        }
        Ok(Some((roots, data)))
    }

    async fn run_all(
        &self,
        fetches: Vec<Fetch>,
        data: &mut Data,
        roots: &mut [Root],
    ) -> Result<(), AppError> {
        let got = try_join_all(fetches.into_iter().map(|f| f.run(self.store))).await?;
        for got in got {
            data.absorb(got, roots);
        }
        Ok(())
    }

    /// The statements a level needs (one per relation), and its tags. `None`: leave it to the executor.
    fn level(&self, work: &[Work<'_>], data: &Data) -> Option<Vec<Fetch>> {
        let mut users: HashSet<i64> = HashSet::new();
        let mut counts: HashSet<i64> = HashSet::new();
        // page -> (posts, whether their comments' authors are read)
        let mut comment_pages: HashMap<Page, (HashSet<i64>, bool)> = HashMap::new();
        let mut author_pages: HashMap<(bool, Page), HashSet<i64>> = HashMap::new();
        let mut author_counts: HashMap<bool, HashSet<i64>> = HashMap::new();
        for w in work {
            match w {
                Work::Posts(sel, ids) => {
                    let rows: Vec<&PostRow> =
                        ids.iter().filter_map(|id| data.posts.get(id)).collect();
                    for f in sel.iter() {
                        match &f.field {
                            PostField::Author(_) => {
                                for p in &rows {
                                    self.tag(Tag::User(p.author_id));
                                    if !data.users.contains_key(&p.author_id) {
                                        users.insert(p.author_id);
                                    }
                                }
                            }
                            PostField::CommentCount => {
                                for p in &rows {
                                    self.tag(Tag::PostComments(p.id));
                                    counts.insert(p.id);
                                }
                            }
                            PostField::Comments(comments) => {
                                let (args, conn) = &**comments;
                                let page = self.page(args)?;
                                let authors = conn.nodes().iter().any(|sel| {
                                    sel.iter()
                                        .any(|f| matches!(f.field, CommentField::Author(_)))
                                });
                                let entry = comment_pages.entry(page).or_default();
                                entry.1 |= authors;
                                for p in &rows {
                                    self.tag(Tag::PostComments(p.id));
                                    if !data.comment_pages.contains_key(&(p.id, page)) {
                                        entry.0.insert(p.id);
                                    }
                                    if conn.has_total() {
                                        counts.insert(p.id);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Work::Comments(sel, pages) => {
                    for f in sel.iter() {
                        if let CommentField::Author(_) = f.field {
                            for c in pages.iter().flat_map(|k| data.shown_comments(k)) {
                                self.tag(Tag::User(c.author_id));
                                if !data.users.contains_key(&c.author_id) {
                                    users.insert(c.author_id);
                                }
                            }
                        }
                    }
                }
                Work::Users(sel, ids) => {
                    for f in sel.iter() {
                        if let UserField::Posts(posts) = &f.field {
                            let (args, conn) = &**posts;
                            let page = self.page(args)?;
                            for id in ids {
                                let drafts = may_see_private(self.viewer(), *id);
                                self.tag(Tag::UserPosts(*id));
                                if !data.author_pages.contains_key(&(*id, drafts, page)) {
                                    author_pages.entry((drafts, page)).or_default().insert(*id);
                                }
                                if conn.has_total()
                                    && !data.author_counts.contains_key(&(*id, drafts))
                                {
                                    author_counts.entry(drafts).or_default().insert(*id);
                                }
                            }
                        }
                    }
                }
            }
        }
        let mut fetches = Vec::new();
        for (page, (posts, authors)) in comment_pages {
            // A page without a cursor brings its posts' counts along.
            if page.after.is_none() {
                for id in &posts {
                    counts.remove(id);
                }
            }
            if !posts.is_empty() {
                fetches.push(Fetch::CommentPages {
                    page,
                    posts: posts.into_iter().collect(),
                    authors,
                });
            }
        }
        counts.retain(|id| !data.counts.contains_key(id));
        if !counts.is_empty() {
            fetches.push(Fetch::Counts(counts.into_iter().collect()));
        }
        if !users.is_empty() {
            fetches.push(Fetch::Users(users.into_iter().collect()));
        }
        for ((drafts, page), authors) in author_pages {
            fetches.push(Fetch::AuthorPages {
                drafts,
                page,
                authors: authors.into_iter().collect(),
                content: match self.plan.reads_content {
                    true => Content::Read,
                    false => Content::Skip,
                },
            });
        }
        for (drafts, authors) in author_counts {
            fetches.push(Fetch::AuthorCounts {
                drafts,
                authors: authors.into_iter().collect(),
            });
        }
        Some(fetches)
    }

    /// The next level's work: the objects this level's relations brought. `None` for a broken invariant (a
    /// post or comment whose author is missing): the executor reports it.
    fn next<'p>(&self, work: &[Work<'p>], data: &Data) -> Option<Vec<Work<'p>>> {
        let mut next = Vec::new();
        for w in work {
            match w {
                Work::Posts(sel, ids) => {
                    for f in sel.iter() {
                        match &f.field {
                            PostField::Author(user) => {
                                let authors = ids
                                    .iter()
                                    .map(|id| Some(data.posts.get(id)?.author_id))
                                    .collect::<Option<Vec<_>>>()?;
                                next.push(Work::Users(user, authors));
                            }
                            PostField::Comments(comments) => {
                                let (args, conn) = &**comments;
                                let page = self.page(args)?;
                                let keys: Vec<(i64, Page)> =
                                    ids.iter().map(|id| (*id, page)).collect();
                                for sel in conn.nodes() {
                                    next.push(Work::Comments(sel, keys.clone()));
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Work::Comments(sel, pages) => {
                    for f in sel.iter() {
                        if let CommentField::Author(user) = &f.field {
                            let authors: Vec<i64> = pages
                                .iter()
                                .flat_map(|k| data.shown_comments(k))
                                .map(|c| c.author_id)
                                .collect();
                            next.push(Work::Users(user, authors));
                        }
                    }
                }
                Work::Users(sel, ids) => {
                    for f in sel.iter() {
                        if let UserField::Posts(posts) = &f.field {
                            let (args, conn) = &**posts;
                            let page = self.page(args)?;
                            let mut posts = Vec::new();
                            for id in ids {
                                let drafts = may_see_private(self.viewer(), *id);
                                let fetched = data.author_pages.get(&(*id, drafts, page))?;
                                for post in fetched {
                                    self.tag(Tag::Post(*post));
                                }
                                posts.extend(fetched.iter().take(page.shown()));
                            }
                            for sel in conn.nodes() {
                                next.push(Work::Posts(sel, posts.clone()));
                            }
                        }
                    }
                }
            }
        }
        // Every author a level asked for must have come back.
        for w in &next {
            if let Work::Users(_, ids) = w
                && !ids.iter().all(|id| data.users.contains_key(id))
            {
                return None;
            }
        }
        Some(next)
    }

    fn write(&self, out: &mut Vec<u8>, roots: &[Root], data: &Data) -> io::Result<()> {
        out.extend_from_slice(b"{\"data\":{");
        for (i, (root, planned)) in roots.iter().zip(&self.plan.root).enumerate() {
            comma(out, i);
            key(out, &planned.key);
            match (root, &planned.field) {
                (Root::Typename, _) => string(out, "Query")?,
                (Root::Posts { page, ids, total }, RootField::Posts(_, conn)) => {
                    let rows = lookup(ids, &data.posts)?;
                    let w = ConnWrite {
                        types: POST_CONNECTION,
                        page: *page,
                        total: *total,
                    };
                    w.write(
                        out,
                        conn,
                        &rows,
                        |p| p.id,
                        |out, p, sel| self.post(out, p, sel, data),
                    )?;
                }
                (Root::Post(found), RootField::Post(_, sel)) => match found {
                    Some(id) => {
                        let row = data.posts.get(id).ok_or_else(missing)?;
                        self.post(out, row, sel, data)?;
                    }
                    None => out.extend_from_slice(b"null"),
                },
                (Root::User(found), RootField::User(_, sel)) => match found {
                    Some(id) => {
                        let row = data.users.get(id).ok_or_else(missing)?;
                        self.user(out, row, sel, data)?;
                    }
                    None => out.extend_from_slice(b"null"),
                },
                _ => return Err(missing()),
            }
        }
        out.extend_from_slice(b"}}");
        Ok(())
    }

    fn post(&self, out: &mut Vec<u8>, p: &PostRow, sel: &PostSel, data: &Data) -> io::Result<()> {
        out.push(b'{');
        for (i, f) in sel.iter().enumerate() {
            comma(out, i);
            key(out, &f.key);
            match &f.field {
                PostField::Typename => string(out, "Post")?,
                PostField::Id => id(out, p.id)?,
                PostField::Title => string(out, &p.title)?,
                PostField::Content => string(out, &p.content)?,
                PostField::Published => boolean(out, p.published),
                PostField::PublishedAt => opt_string(out, p.published_at.map(|t| t.to_rfc3339()))?,
                PostField::CreatedAt => string(out, &p.created_at.to_rfc3339())?,
                PostField::UpdatedAt => string(out, &p.updated_at.to_rfc3339())?,
                PostField::CommentCount => {
                    let n = data.counts.get(&p.id).ok_or_else(missing)?;
                    number(out, connection::count(*n).into())?;
                }
                PostField::Author(user) => {
                    let author = data.users.get(&p.author_id).ok_or_else(missing)?;
                    self.user(out, author, user, data)?;
                }
                PostField::Comments(comments) => {
                    let (args, conn) = &**comments;
                    let page = self.page(args).ok_or_else(missing)?;
                    let rows: Vec<&CommentRow> = data.comments(&(p.id, page)).collect();
                    let total = match conn.has_total() {
                        true => Some(*data.counts.get(&p.id).ok_or_else(missing)?),
                        false => None,
                    };
                    let w = ConnWrite {
                        types: COMMENT_CONNECTION,
                        page,
                        total,
                    };
                    w.write(
                        out,
                        conn,
                        &rows,
                        |c| c.id,
                        |out, c, sel| self.comment(out, c, sel, data),
                    )?;
                }
            }
        }
        out.push(b'}');
        Ok(())
    }

    fn comment(
        &self,
        out: &mut Vec<u8>,
        c: &CommentRow,
        sel: &CommentSel,
        data: &Data,
    ) -> io::Result<()> {
        out.push(b'{');
        for (i, f) in sel.iter().enumerate() {
            comma(out, i);
            key(out, &f.key);
            match &f.field {
                CommentField::Typename => string(out, "Comment")?,
                CommentField::Id => id(out, c.id)?,
                CommentField::Body => string(out, &c.body)?,
                CommentField::CreatedAt => string(out, &c.created_at.to_rfc3339())?,
                CommentField::Author(user) => {
                    let author = data.users.get(&c.author_id).ok_or_else(missing)?;
                    self.user(out, author, user, data)?;
                }
            }
        }
        out.push(b'}');
        Ok(())
    }

    fn user(&self, out: &mut Vec<u8>, u: &UserRow, sel: &UserSel, data: &Data) -> io::Result<()> {
        out.push(b'{');
        for (i, f) in sel.iter().enumerate() {
            comma(out, i);
            key(out, &f.key);
            match &f.field {
                UserField::Typename => string(out, "User")?,
                UserField::Id => id(out, u.id)?,
                UserField::Name => string(out, &u.name)?,
                UserField::Role => string(
                    out,
                    match u.role {
                        Role::User => "USER",
                        Role::Admin => "ADMIN",
                    },
                )?,
                UserField::CreatedAt => string(out, &u.created_at.to_rfc3339())?,
                UserField::Posts(posts) => {
                    let (args, conn) = &**posts;
                    let page = self.page(args).ok_or_else(missing)?;
                    // Decided as the resolver decides it (and already noted as viewer-dependent by `level`).
                    let drafts = may_see_private(self.viewer, u.id);
                    let ids = data
                        .author_pages
                        .get(&(u.id, drafts, page))
                        .ok_or_else(missing)?;
                    let rows = lookup(ids, &data.posts)?;
                    let total = match conn.has_total() {
                        true => Some(
                            *data
                                .author_counts
                                .get(&(u.id, drafts))
                                .ok_or_else(missing)?,
                        ),
                        false => None,
                    };
                    let w = ConnWrite {
                        types: POST_CONNECTION,
                        page,
                        total,
                    };
                    w.write(
                        out,
                        conn,
                        &rows,
                        |p| p.id,
                        |out, p, sel| self.post(out, p, sel, data),
                    )?;
                }
            }
        }
        out.push(b'}');
        Ok(())
    }
}

impl Data {
    /// A post's page of comments, as fetched (one more than shown when another page follows).
    fn comments(&self, key: &(i64, Page)) -> impl Iterator<Item = &CommentRow> {
        self.comment_pages.get(key).into_iter().flatten()
    }

    /// The comments of a page that are shown (not the extra one that tells whether another page follows).
    fn shown_comments(&self, key: &(i64, Page)) -> impl Iterator<Item = &CommentRow> {
        self.comments(key).take(key.1.shown())
    }
}

impl<N> Conn<N> {
    /// The node selections of the connection (under `edges { node }` and `nodes`).
    pub(super) fn nodes(&self) -> Vec<&N> {
        let mut out = Vec::new();
        for f in &self.fields {
            match &f.field {
                ConnField::Nodes(n) => out.push(n),
                ConnField::Edges(edges) => {
                    for e in edges {
                        if let EdgeField::Node(n) = &e.field {
                            out.push(n);
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    fn has_total(&self) -> bool {
        self.fields
            .iter()
            .any(|f| matches!(f.field, ConnField::TotalCount))
    }
}

/// A connection's and its edges' `__typename`.
struct ConnTypes {
    connection: &'static str,
    edge: &'static str,
}

const POST_CONNECTION: ConnTypes = ConnTypes {
    connection: "PostConnection",
    edge: "PostEdge",
};

const COMMENT_CONNECTION: ConnTypes = ConnTypes {
    connection: "CommentConnection",
    edge: "CommentEdge",
};

/// How to write one connection: its type names, page and total.
struct ConnWrite {
    types: ConnTypes,
    page: Page,
    total: Option<i64>,
}

impl ConnWrite {
    /// Writes the connection object over `rows` as fetched (one more than shown when another page follows).
    fn write<T, N>(
        &self,
        out: &mut Vec<u8>,
        conn: &Conn<N>,
        rows: &[&T],
        id: impl Fn(&T) -> i64,
        node: impl Fn(&mut Vec<u8>, &T, &N) -> io::Result<()>,
    ) -> io::Result<()> {
        let shown = self.page.shown().min(rows.len());
        let (items, has_next_page) = (&rows[..shown], rows.len() > shown);
        out.push(b'{');
        for (i, f) in conn.fields.iter().enumerate() {
            comma(out, i);
            key(out, &f.key);
            match &f.field {
                ConnField::Typename => string(out, self.types.connection)?,
                ConnField::TotalCount => {
                    let total = self.total.ok_or_else(missing)?;
                    number(out, connection::count(total).into())?;
                }
                ConnField::Nodes(n) => list(out, items, |out, item| node(out, item, n))?,
                ConnField::Edges(edges) => list(out, items, |out, item| {
                    out.push(b'{');
                    for (j, e) in edges.iter().enumerate() {
                        comma(out, j);
                        key(out, &e.key);
                        match &e.field {
                            EdgeField::Typename => string(out, self.types.edge)?,
                            EdgeField::Cursor => string(out, &Cursor(id(item)).encode_cursor())?,
                            EdgeField::Node(n) => node(out, item, n)?,
                        }
                    }
                    out.push(b'}');
                    Ok(())
                })?,
                ConnField::PageInfo(fields) => {
                    out.push(b'{');
                    for (j, p) in fields.iter().enumerate() {
                        comma(out, j);
                        key(out, &p.key);
                        let cursor =
                            |item: Option<&&T>| item.map(|t| Cursor(id(t)).encode_cursor());
                        match p.field {
                            PageInfoField::Typename => string(out, "PageInfo")?,
                            PageInfoField::HasNextPage => boolean(out, has_next_page),
                            PageInfoField::HasPreviousPage => {
                                boolean(out, self.page.after.is_some())
                            }
                            PageInfoField::StartCursor => opt_string(out, cursor(items.first()))?,
                            PageInfoField::EndCursor => opt_string(out, cursor(items.last()))?,
                        }
                    }
                    out.push(b'}');
                }
            }
        }
        out.push(b'}');
        Ok(())
    }
}

fn dedup(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The rows of `ids`, in order.
fn lookup<'d, T>(ids: &[i64], rows: &'d HashMap<i64, T>) -> io::Result<Vec<&'d T>> {
    ids.iter()
        .map(|id| rows.get(id).ok_or_else(missing))
        .collect()
}

fn missing() -> io::Error {
    io::Error::other("a planned read lacks a row it fetched")
}

fn key(out: &mut Vec<u8>, key: &str) {
    // Response keys are GraphQL names (`[_A-Za-z][_0-9A-Za-z]*`): nothing to escape.
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn comma(out: &mut Vec<u8>, index: usize) {
    if index > 0 {
        out.push(b',');
    }
}

fn string(out: &mut Vec<u8>, s: &str) -> io::Result<()> {
    serde_json::to_writer(out, s).map_err(io::Error::other)
}

fn opt_string(out: &mut Vec<u8>, s: Option<String>) -> io::Result<()> {
    match s {
        Some(s) => string(out, &s),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

fn id(out: &mut Vec<u8>, id: i64) -> io::Result<()> {
    // An `ID` is a string.
    out.push(b'"');
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    out.push(b'"');
    Ok(())
}

fn number(out: &mut Vec<u8>, n: i64) -> io::Result<()> {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    Ok(())
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

fn list<T>(
    out: &mut Vec<u8>,
    items: &[T],
    mut each: impl FnMut(&mut Vec<u8>, &T) -> io::Result<()>,
) -> io::Result<()> {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        comma(out, i);
        each(out, item)?;
    }
    out.push(b']');
    Ok(())
}
