//! Cache keys: a SHA-256 of the normalised document, the operation name, the variables and the scope.
//!
//! Normalising lets the same document written with other line breaks, indentation, commas or comments share an
//! entry without parsing it (a hit must cost a hash and a lookup, not a parse): runs of whitespace, commas and
//! comments outside string literals collapse to one space. It does not remove a space next to a punctuator, so
//! `{ posts { id } }` and `{posts{id}}` are two entries. String literals are kept byte for byte, so `"a  b"`
//! and `"a b"` stay different.

use sha2::{Digest, Sha256};

/// Who an entry may be served to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The response is the same for every caller.
    Public,
    /// The response depends on who asks, and this is an anonymous caller's version.
    Anonymous,
    /// The response depends on who asks, and this is that user's version.
    User(i64),
}

impl Scope {
    /// Hashes the scope's name (`public`, `anonymous`, `user:<id>`) without building it: two keys a request.
    fn hash_into(&self, hasher: &mut Sha256) {
        match self {
            Scope::Public => hasher.update(b"public"),
            Scope::Anonymous => hasher.update(b"anonymous"),
            Scope::User(id) => {
                hasher.update(b"user:");
                hasher.update(itoa::Buffer::new().format(*id).as_bytes());
            }
        }
    }
}

/// A cache key (32 bytes of SHA-256).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

impl Key {
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(64);
        self.push_hex(&mut out);
        out
    }

    /// Appends the key in lower-case hex.
    pub fn push_hex(&self, out: &mut String) {
        push_hex(&self.0, out);
    }
}

/// Appends up to 32 bytes in lower-case hex (keys, ETags): `hex::encode` builds its string a `char` at a time,
/// which cost more than a Redis lookup's own encoding.
pub fn push_hex(bytes: &[u8], out: &mut String) {
    let mut buf = [0u8; 64];
    let Some(buf) = buf.get_mut(..2 * bytes.len()) else {
        return;
    };
    if hex::encode_to_slice(bytes, buf).is_ok() {
        out.push_str(std::str::from_utf8(buf).unwrap_or_default());
    }
}

/// The scope-independent part of a key, hashed once per request.
#[derive(Clone)]
pub struct KeyBase {
    hasher: Sha256,
}

/// The document's part of a key: its normalised text, hashed. Kept with a recent document
/// (`operation/documents.rs`), so a repeated query is not normalised again.
#[derive(Clone)]
pub struct DocumentHash(Sha256);

impl DocumentHash {
    pub fn new(document: &str) -> Self {
        let mut hasher = Sha256::new();
        update_part(&mut hasher, normalize(document).as_bytes());
        Self(hasher)
    }
}

/// Length-prefixed parts, so no two different (document, name, variables) triples hash the same bytes.
fn update_part(hasher: &mut Sha256, part: &[u8]) {
    hasher.update((part.len() as u64).to_le_bytes());
    hasher.update(part);
}

impl KeyBase {
    pub fn new(document: &str, operation_name: Option<&str>, variables: &[u8]) -> Self {
        Self::of(&DocumentHash::new(document), operation_name, variables)
    }

    /// `new` for a document already hashed.
    pub fn of(document: &DocumentHash, operation_name: Option<&str>, variables: &[u8]) -> Self {
        let mut hasher = document.0.clone();
        update_part(&mut hasher, operation_name.unwrap_or("").as_bytes());
        update_part(&mut hasher, variables);
        Self { hasher }
    }

    /// The key of this request's response in `scope`.
    pub fn key(&self, scope: &Scope) -> Key {
        let mut hasher = self.hasher.clone();
        scope.hash_into(&mut hasher);
        Key(hasher.finalize().into())
    }

    /// The keys a request by a caller in `own` is looked up and stored under.
    pub fn keys(&self, own: &Scope) -> Keys {
        Keys {
            public: self.key(&Scope::Public),
            own: self.key(own),
        }
    }
}

/// A request's keys, hashed once: the shared entry's, and the caller's own (where a response that depends on
/// who asks is kept). A lookup tries them in that order.
#[derive(Clone, Copy, Debug)]
pub struct Keys {
    pub public: Key,
    pub own: Key,
}

/// Collapses insignificant characters (whitespace, commas, comments) outside string literals to one space.
pub fn normalize(document: &str) -> String {
    let bytes = document.as_bytes();
    let mut out = String::with_capacity(document.len());
    let mut i = 0;
    let mut pending_space = false;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                pending_space = true;
                i += 1;
            }
            // A comment ends at any line terminator the parser knows: `\n`, `\r` or `\r\n`. Ending it only at
            // `\n` would let text after a `\r` change the query without changing its key.
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                pending_space = true;
            }
            b'"' => {
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                let end = string_end(bytes, i);
                out.push_str(&document[i..end]);
                i = end;
            }
            _ => {
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                // Copy one whole UTF-8 character.
                let len = utf8_len(b);
                let end = (i + len).min(bytes.len());
                out.push_str(document.get(i..end).unwrap_or(""));
                i = end;
            }
        }
    }
    out
}

/// The index just past the string literal (plain or block) starting at `start`.
fn string_end(bytes: &[u8], start: usize) -> usize {
    if bytes[start..].starts_with(b"\"\"\"") {
        let mut i = start + 3;
        while i < bytes.len() {
            if bytes[i..].starts_with(b"\\\"\"\"") {
                i += 4;
            } else if bytes[i..].starts_with(b"\"\"\"") {
                return i + 3;
            } else {
                i += 1;
            }
        }
        return bytes.len();
    }
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            b'\n' | b'\r' => return i,
            _ => i += 1,
        }
    }
    bytes.len().min(i)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_as_its_lower_case_hex_digest() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[31] = 0x0f;
        let hex = Key(bytes).hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(&hex[..4], "ab00");
        assert_eq!(&hex[60..], "000f");
        let mut named = String::from("folio:e:");
        Key(bytes).push_hex(&mut named);
        assert_eq!(named, format!("folio:e:{hex}"));
    }

    #[test]
    fn insignificant_characters_collapse_outside_strings() {
        assert_eq!(
            normalize("{\n  posts(first: 2, after: null) { id }  # trailing\n}"),
            "{ posts(first: 2 after: null) { id } }"
        );
        assert_eq!(normalize("{posts{id}}"), "{posts{id}}");
        assert_eq!(
            normalize(r#"{ posts(filter: { search: "a  b, c # d" }) { id } }"#),
            r#"{ posts(filter: { search: "a  b, c # d" }) { id } }"#
        );
        assert_eq!(
            normalize(r#"{ a(s: "x \" y  z") }"#),
            r#"{ a(s: "x \" y  z") }"#
        );
        assert_eq!(
            normalize("{ a(s: \"\"\"x  \"\" y\"\"\") }"),
            "{ a(s: \"\"\"x  \"\" y\"\"\") }"
        );
        assert_eq!(normalize("{ a(s: \"é  ü\")   b }"), "{ a(s: \"é  ü\") b }");
        // `\r` ends a comment for the parser, so what follows it is query text and part of the key.
        assert_eq!(
            normalize("{ a #x\r@skip(if: true)\n }"),
            "{ a @skip(if: true) }"
        );
    }

    #[test]
    fn keys_differ_by_every_part() {
        let a = KeyBase::new("{ a }", None, b"{}");
        assert_eq!(
            a.key(&Scope::Public),
            KeyBase::new("{\n  a,\n}", None, b"{}").key(&Scope::Public)
        );
        assert_ne!(a.key(&Scope::Public), a.key(&Scope::Anonymous));
        assert_ne!(a.key(&Scope::User(1)), a.key(&Scope::User(2)));
        assert_ne!(
            a.key(&Scope::Public),
            KeyBase::new("{ a }", Some("A"), b"{}").key(&Scope::Public)
        );
        assert_ne!(
            a.key(&Scope::Public),
            KeyBase::new("{ a }", None, b"{\"x\":1}").key(&Scope::Public)
        );
        assert_ne!(
            a.key(&Scope::Public),
            KeyBase::new("{ b }", None, b"{}").key(&Scope::Public)
        );
    }
}
