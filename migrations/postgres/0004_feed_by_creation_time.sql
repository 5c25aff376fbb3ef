-- Published posts by creation time, newest first. Folio's own feed pages by id, which is the same order for
-- posts created through the API; this index serves SQL that orders the feed by `created_at` instead: reporting
-- queries, and the side-by-side performance harness, whose peers and pgbench ceiling would otherwise sort
-- every published post on each request.
CREATE INDEX IF NOT EXISTS posts_published_created ON posts (created_at DESC, id DESC) WHERE published = TRUE;
