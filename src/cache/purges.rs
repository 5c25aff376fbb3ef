//! The purges an entry is checked against when it is read, on both backends: each purged tag with the number of
//! its last purge.
//!
//! Purge numbers only grow and never fall behind a clock in microseconds (Redis's clock for the shared cache,
//! the process's monotonic clock in process), so a number also tells when the purge happened. That is what lets
//! the log forget: a purge older than [`WINDOW`] concerns only entries whose execution started before it, and
//! those have expired.

use std::collections::HashMap;
use std::time::Duration;

use super::MAX_TTL;

/// How long a purge is remembered. A purge matters to entries whose execution started before it; those were
/// stored at most an execution later and live at most [`MAX_TTL`], so a purge older than `MAX_TTL` plus the
/// longest execution matters to no live entry.
pub const WINDOW: Duration = Duration::from_secs(2 * MAX_TTL.as_secs());
/// The log is not trimmed below this many tags.
const MIN_TRIM: usize = 1024;
/// At most this many purged tags are remembered; past it, all are forgotten and every entry that started before
/// counts as purged.
const MAX_TAGS: usize = 1 << 20;

/// Each purged tag's last purge number, for the purges of the last [`WINDOW`].
#[derive(Default)]
pub struct PurgeLog {
    /// The highest purge number recorded: an entry that started at or after it is fresh whatever its tags.
    newest: u64,
    /// Entries that started before this are stale: purges that concern them may have been forgotten (see
    /// [`PurgeLog::trim`]).
    floor: u64,
    tags: HashMap<String, u64>,
    /// The number of tags after the last trim, so that trimming runs as often as the log doubles.
    trimmed: usize,
}

impl PurgeLog {
    /// The highest purge number recorded (0 before the first).
    pub fn newest(&self) -> u64 {
        self.newest
    }

    /// Records that `tag` was purged at `number`. An older report never lowers a tag's number. Returns whether
    /// the tag's number rose (false for a tag already recorded at `number`: a repeat within one purge).
    pub fn record(&mut self, tag: &str, number: u64) -> bool {
        self.newest = self.newest.max(number);
        match self.tags.get_mut(tag) {
            Some(last) if *last >= number => false,
            Some(last) => {
                *last = number;
                true
            }
            None => {
                self.tags.insert(tag.to_owned(), number);
                true
            }
        }
    }

    /// Whether a result whose execution started at `start` and read `tags` is fresh: none of them purged since.
    pub fn fresh(&self, start: u64, tags: impl IntoIterator<Item = impl AsRef<str>>) -> bool {
        start >= self.newest
            || (start >= self.floor
                && tags
                    .into_iter()
                    .all(|tag| self.tags.get(tag.as_ref()).is_none_or(|n| *n <= start)))
    }

    /// Forgets the purges older than [`WINDOW`] before the newest, once the log has doubled since the last
    /// trim, so a trim costs each purge a constant share. Should more than `MAX_TAGS` be left, all are
    /// forgotten and every entry that started before the newest purge counts as purged: memory stays bounded,
    /// at the price of recomputing what the cache held.
    pub fn trim(&mut self) {
        if self.tags.len() <= (2 * self.trimmed).max(MIN_TRIM) {
            return;
        }
        let oldest = self.newest.saturating_sub(WINDOW.as_micros() as u64);
        self.tags.retain(|_, number| *number >= oldest);
        if self.tags.len() > MAX_TAGS {
            self.tags.clear();
            self.floor = self.newest;
        }
        self.trimmed = self.tags.len();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_fresh_unless_one_of_its_tags_was_purged_after_it_started() {
        let mut log = PurgeLog::default();
        log.record("Post:7", 100);
        log.record("User:3", 90);
        assert!(log.fresh(100, ["Post:7"]), "purged when it started");
        assert!(!log.fresh(99, ["Comment:1", "Post:7"]));
        assert!(log.fresh(50, ["Comment:1"]), "other tags");
        assert!(log.fresh(100, ["User:3", "Post:7"]));
        assert!(log.fresh(100, [""; 0]), "at or after the newest purge");
        // A later purge raises the tag's number; an older report never lowers it.
        assert!(log.record("Post:7", 125));
        assert!(!log.record("Post:7", 125), "a repeat within one purge");
        assert!(!log.record("Post:7", 110));
        assert!(!log.fresh(120, ["Post:7"]));
        assert_eq!(log.newest(), 125);
    }

    /// Purges are forgotten only once they are a window older than the newest (nothing they concern is alive),
    /// and only once the log has doubled.
    #[test]
    fn purges_older_than_the_window_are_forgotten() {
        let mut log = PurgeLog::default();
        let window = WINDOW.as_micros() as u64;
        for i in 0..2 * MIN_TRIM {
            log.record(&format!("Post:{i}"), 1000);
        }
        log.trim();
        assert_eq!(log.len(), 2 * MIN_TRIM, "nothing old yet");
        assert!(!log.fresh(999, ["Post:7"]));
        let now = 1000 + window + 1;
        for i in 0..3 * MIN_TRIM {
            log.record(&format!("User:{i}"), now);
        }
        log.trim();
        assert_eq!(log.len(), 3 * MIN_TRIM, "the old purges are gone");
        assert!(log.fresh(now - 1, ["Post:7"]));
        assert!(!log.fresh(now - 1, ["User:5"]), "recent purges stay");
    }

    /// Past its bound the log is dropped whole, and every entry that started before counts as purged.
    #[test]
    fn a_log_past_its_bound_leaves_older_entries_stale() {
        let mut log = PurgeLog::default();
        for i in 0..=MAX_TAGS {
            log.record(&format!("Post:{i}"), 10 + i as u64);
        }
        let newest = log.newest();
        log.trim();
        assert_eq!(log.len(), 0);
        assert!(!log.fresh(newest - 1, ["User:1"]), "started before: stale");
        assert!(log.fresh(newest, ["Post:7"]));
        log.record("Post:7", newest + 5);
        assert!(!log.fresh(newest + 1, ["Post:7"]));
        assert!(log.fresh(newest + 1, ["Post:8"]));
    }
}
