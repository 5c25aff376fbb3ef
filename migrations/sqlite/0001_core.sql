-- Core tables for the embedded backend. Timestamps are RFC 3339 UTC text written by Folio (never SQLite's
-- CURRENT_TIMESTAMP, whose format differs), ids are AUTOINCREMENT so a deleted id is never handed out again.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL COLLATE NOCASE,
    name          TEXT    NOT NULL,
    password_hash TEXT,
    role          TEXT    NOT NULL DEFAULT 'USER' CHECK (role IN ('USER', 'ADMIN')),
    plan          TEXT    NOT NULL DEFAULT 'FREE' CHECK (plan IN ('FREE', 'PRO')),
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
);
CREATE UNIQUE INDEX users_email_key ON users (email COLLATE NOCASE);

CREATE TABLE posts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    author_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title        TEXT    NOT NULL,
    content      TEXT    NOT NULL,
    published    INTEGER NOT NULL DEFAULT 0 CHECK (published IN (0, 1)),
    published_at TEXT,
    created_at   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL
);
-- The public feed: published posts, newest first.
CREATE INDEX posts_published_feed ON posts (id DESC) WHERE published = TRUE;
-- One author's posts (published, or all of them for the author and admins), newest first.
CREATE INDEX posts_author_feed ON posts (author_id, published, id DESC);

CREATE TABLE comments (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    post_id    INTEGER NOT NULL REFERENCES posts (id) ON DELETE CASCADE,
    author_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body       TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);
-- A post's comments oldest first, and its comment count, from the index alone.
CREATE INDEX comments_post_thread ON comments (post_id, id);
CREATE INDEX comments_author ON comments (author_id);
