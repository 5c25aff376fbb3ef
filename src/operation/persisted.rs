//! Persisted documents: which document a request runs when it sends a hash or an id instead of (or beside) the
//! text, and whether that document may run at all (`FOLIO_DOCUMENTS`).
//!
//! - **Automatic persisted queries** (Apollo's protocol): `extensions.persistedQuery { version: 1, sha256Hash }`.
//!   A hash alone runs the document registered under it, or answers `PERSISTED_QUERY_NOT_FOUND` (message
//!   `PersistedQueryNotFound`, which Apollo's link answers by sending the text too); a hash with the text
//!   registers it after checking that the hash is the text's SHA-256 (`PERSISTED_QUERY_HASH_MISMATCH`
//!   otherwise). Registrations live in Redis when it is configured (every instance sees them) and in a bounded
//!   in-process cache in front of it.
//! - **Trusted documents** (`documentId`, also as `sha256:<hex>`): a manifest's document by its id.
//! - **Manifests** (`FOLIO_DOCUMENTS_MANIFEST`): Apollo's `persisted-query-manifest.json`, and the
//!   `{"<id>": "<document>"}` maps that graphql-codegen's client preset and Relay write. An id that is an MD5,
//!   SHA-1 or SHA-256 in hex, bare or as `sha256:<hex>` (Relay's and codegen's forms), must be that digest of its
//!   text, or the manifest refuses to load, naming the entry; other ids are taken as given. Every manifest document is also reachable
//!   by its SHA-256, so an APQ hash finds it.
//! - **Modes**: `open` runs anything; `apq` runs APQ requests and manifest documents, not bare unknown text;
//!   `safelist` runs manifest documents only (by id, hash or identical text); `log` runs anything and counts and
//!   logs the documents that are not in a manifest.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use async_graphql::Value;
use prometheus::IntCounter;
use sha2::Digest;

use crate::config::{DocumentMode, EdgeConfig};
use crate::error::Code;
use crate::redis_conn::RedisConn;

/// A request's document as sent: its text, a trusted-document id, and the request's extensions (which may hold
/// an APQ hash).
pub struct Sent<'a> {
    pub text: Option<String>,
    pub document_id: Option<&'a str>,
    pub extensions: &'a async_graphql::Extensions,
}

/// Why a persisted request cannot run.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub code: Code,
    pub message: String,
}

fn refused(code: Code, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// The documents of every configured manifest.
#[derive(Default)]
pub struct Manifest {
    /// By every id it is known under: the manifest's own, and its SHA-256 in hex.
    by_id: HashMap<String, Arc<str>>,
    texts: HashSet<Arc<str>>,
    /// The entries as the manifests list them (for `folio documents check`).
    entries: Vec<(String, Arc<str>)>,
}

impl Manifest {
    /// Loads and checks every file; the first bad entry stops the start.
    pub fn load(paths: &[impl AsRef<Path>]) -> anyhow::Result<Self> {
        let mut manifest = Self::default();
        for path in paths {
            let path = path.as_ref();
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the manifest {}", path.display()))?;
            let entries = parse_manifest(&text)
                .with_context(|| format!("the manifest {} does not load", path.display()))?;
            for (id, body) in entries {
                manifest.add(id, body);
            }
        }
        Ok(manifest)
    }

    fn add(&mut self, id: String, body: String) {
        let body: Arc<str> = body.into();
        self.by_id.insert(
            hex::encode(sha2::Sha256::digest(body.as_bytes())),
            body.clone(),
        );
        self.by_id.insert(id.clone(), body.clone());
        self.texts.insert(body.clone());
        self.entries.push((id, body));
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// The document under `id` (a manifest id, or any document's SHA-256).
    pub fn get(&self, id: &str) -> Option<&Arc<str>> {
        self.by_id.get(id)
    }

    pub fn contains_text(&self, text: &str) -> bool {
        self.texts.contains(text)
    }

    /// Every entry of the manifests, with its manifest id, in the order they were loaded.
    pub fn documents(&self) -> &[(String, Arc<str>)] {
        &self.entries
    }
}

/// The `(id, document)` entries of one manifest file, in any of the formats client tooling writes.
pub fn parse_manifest(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let json: serde_json::Value = serde_json::from_str(text).context("it is not JSON")?;
    let serde_json::Value::Object(object) = json else {
        bail!("it is not a JSON object");
    };
    let mut entries = Vec::new();
    if object.get("format").and_then(|f| f.as_str()) == Some("apollo-persisted-query-manifest") {
        if object.get("version").and_then(|v| v.as_u64()) != Some(1) {
            bail!("only version 1 of apollo-persisted-query-manifest is understood");
        }
        let operations = object
            .get("operations")
            .and_then(|o| o.as_array())
            .context("`operations` is not a list")?;
        for (i, op) in operations.iter().enumerate() {
            let id = op.get("id").and_then(|v| v.as_str());
            let body = op.get("body").and_then(|v| v.as_str());
            let (Some(id), Some(body)) = (id, body) else {
                bail!("operation {i} has no string `id` and `body`");
            };
            entries.push((id.to_owned(), body.to_owned()));
        }
    } else {
        for (id, body) in object {
            let Some(body) = body.as_str() else {
                bail!("the entry `{id}` is not a document (a string)");
            };
            entries.push((id, body.to_owned()));
        }
    }
    for (id, body) in &entries {
        if let Some((algorithm, claimed, digest)) = digest_of(id, body)
            && !digest.eq_ignore_ascii_case(&claimed)
        {
            bail!("the entry `{id}` is not the {algorithm} of its document (that is {digest})");
        }
    }
    Ok(entries)
}

/// The digest an id claims to be, and what that digest of `body` is: `sha256:<hex>` (graphql-codegen's form),
/// `sha1:`, `md5:`, or bare hex of one of those lengths. `None` for an id that is no digest.
fn digest_of(id: &str, body: &str) -> Option<(&'static str, String, String)> {
    let (algorithm, hex) = match id.split_once(':') {
        Some((algorithm, hex)) => (Some(algorithm.to_ascii_lowercase()), hex),
        None => (None, id),
    };
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = body.as_bytes();
    let (name, digest) = match (algorithm.as_deref(), hex.len()) {
        (Some("md5") | None, 32) => ("MD5", hex::encode(md5::Md5::digest(bytes))),
        (Some("sha1") | None, 40) => ("SHA-1", hex::encode(sha1::Sha1::digest(bytes))),
        (Some("sha256") | None, 64) => ("SHA-256", hex::encode(sha2::Sha256::digest(bytes))),
        _ => return None,
    };
    Some((name, hex.to_owned(), digest))
}

/// APQ registrations: Redis (shared) behind a bounded in-process cache.
pub struct Registry {
    local: moka::sync::Cache<String, Arc<str>>,
    redis: Option<(Arc<RedisConn>, String)>,
    errors: IntCounter,
}

/// How long a registration lives in Redis after it was last written.
const REGISTRATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl Registry {
    pub fn new(redis: Option<Arc<RedisConn>>, prefix: &str, errors: IntCounter) -> Self {
        Self {
            local: moka::sync::Cache::builder()
                .max_capacity(16 * 1024 * 1024)
                .weigher(|k: &String, v: &Arc<str>| {
                    u32::try_from(k.len() + v.len()).unwrap_or(u32::MAX)
                })
                .build(),
            redis: redis.map(|r| (r, format!("{prefix}apq:"))),
            errors,
        }
    }

    async fn get(&self, hash: &str) -> Option<Arc<str>> {
        if let Some(text) = self.local.get(hash) {
            return Some(text);
        }
        let (conn, prefix) = self.redis.as_ref()?;
        let key = format!("{prefix}{hash}");
        let found: Result<Option<String>, String> = conn
            .call(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await;
        match found {
            Ok(Some(text)) => {
                let text: Arc<str> = text.into();
                self.local.insert(hash.to_owned(), text.clone());
                Some(text)
            }
            Ok(None) => None,
            Err(error) => {
                self.errors.inc();
                tracing::warn!(%error, "cannot read a persisted query from Redis");
                None
            }
        }
    }

    async fn put(&self, hash: &str, text: &str) {
        self.local.insert(hash.to_owned(), text.into());
        let Some((conn, prefix)) = &self.redis else {
            return;
        };
        let key = format!("{prefix}{hash}");
        let ttl = REGISTRATION_TTL.as_secs();
        let stored: Result<(), String> = conn
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(text)
                    .arg("EX")
                    .arg(ttl)
                    .query_async(&mut c)
                    .await
            })
            .await;
        if let Err(error) = stored {
            // Served from this instance's cache; another instance asks the client for the text again.
            self.errors.inc();
            tracing::warn!(%error, "cannot register a persisted query in Redis");
        }
    }
}

/// The persisted-document policy of one instance.
pub struct Persisted {
    pub mode: DocumentMode,
    pub manifest: Manifest,
    pub registry: Registry,
    /// `folio_documents_unknown_total`: documents outside the manifests (run in `log` mode).
    pub unknown: IntCounter,
    /// Unknown documents already logged, so each is logged once per instance, not per request.
    logged: moka::sync::Cache<String, ()>,
}

impl Persisted {
    pub fn new(
        mode: DocumentMode,
        manifest: Manifest,
        registry: Registry,
        unknown: IntCounter,
    ) -> Self {
        Self {
            mode,
            manifest,
            registry,
            unknown,
            logged: moka::sync::Cache::new(10_000),
        }
    }

    /// The text the request runs, or why it may not. `limits` bound what APQ may register: a document the edge
    /// would refuse is never stored.
    pub async fn resolve(&self, sent: Sent<'_>, limits: &EdgeConfig) -> Result<String, Refused> {
        if let Some(id) = sent.document_id {
            let id = id.strip_prefix("sha256:").unwrap_or(id);
            return match self.manifest.get(id) {
                Some(text) => Ok(text.to_string()),
                None => Err(refused(
                    Code::PersistedQueryNotFound,
                    format!("No trusted document has the id `{id}`."),
                )),
            };
        }
        if let Some(hash) = apq_hash(sent.extensions)? {
            return self.resolve_apq(hash, sent.text, limits).await;
        }
        let Some(text) = sent.text else {
            return Err(refused(Code::BadRequest, "The request has no document."));
        };
        self.admit(text)
    }

    async fn resolve_apq(
        &self,
        hash: String,
        text: Option<String>,
        limits: &EdgeConfig,
    ) -> Result<String, Refused> {
        let hash = hash.to_ascii_lowercase();
        if let Some(known) = self.manifest.get(&hash) {
            return match text {
                Some(text) if *text != **known => Err(mismatch()),
                _ => Ok(known.to_string()),
            };
        }
        if self.mode == DocumentMode::Safelist {
            return Err(not_allowed());
        }
        match text {
            None => match self.registry.get(&hash).await {
                Some(text) => Ok(text.to_string()),
                None => Err(refused(
                    Code::PersistedQueryNotFound,
                    "PersistedQueryNotFound",
                )),
            },
            Some(text) => {
                if hex::encode(sha2::Sha256::digest(text.as_bytes())) != hash {
                    return Err(mismatch());
                }
                if let Err(e) = super::limits::check_text(&text, limits) {
                    return Err(refused(e.code, e.message));
                }
                let text = if self.mode == DocumentMode::Log {
                    self.admit(text)?
                } else {
                    text
                };
                self.registry.put(&hash, &text).await;
                Ok(text)
            }
        }
    }

    /// A document sent as text (or registered by APQ in `log` mode): whether the mode runs it.
    fn admit(&self, text: String) -> Result<String, Refused> {
        match self.mode {
            DocumentMode::Open => Ok(text),
            _ if self.manifest.contains_text(&text) => Ok(text),
            DocumentMode::Log => {
                self.unknown.inc();
                let hash = hex::encode(sha2::Sha256::digest(text.as_bytes()));
                if !self.logged.contains_key(&hash) {
                    self.logged.insert(hash.clone(), ());
                    tracing::warn!(sha256 = %hash, document = %text, "a document outside the manifests ran (FOLIO_DOCUMENTS=log)");
                }
                Ok(text)
            }
            DocumentMode::Apq | DocumentMode::Safelist => Err(not_allowed()),
        }
    }
}

fn mismatch() -> Refused {
    refused(
        Code::PersistedQueryHashMismatch,
        "The persisted query's sha256Hash is not the SHA-256 of the document sent with it.",
    )
}

fn not_allowed() -> Refused {
    refused(
        Code::PersistedQueryNotAllowed,
        "This server runs only its trusted documents (FOLIO_DOCUMENTS); send one by its documentId.",
    )
}

/// The APQ hash in `extensions.persistedQuery`, if any.
fn apq_hash(extensions: &async_graphql::Extensions) -> Result<Option<String>, Refused> {
    let Some(pq) = extensions.get("persistedQuery") else {
        return Ok(None);
    };
    let Value::Object(pq) = pq else {
        return Err(refused(
            Code::BadRequest,
            "`extensions.persistedQuery` must be an object.",
        ));
    };
    match pq.get("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        _ => {
            return Err(refused(
                Code::PersistedQueryNotSupported,
                "Only version 1 of automatic persisted queries is supported.",
            ));
        }
    }
    match pq.get("sha256Hash") {
        Some(Value::String(hash))
            if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Ok(Some(hash.clone()))
        }
        _ => Err(refused(
            Code::BadRequest,
            "`extensions.persistedQuery.sha256Hash` must be a SHA-256 in hex.",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(s: &str) -> String {
        hex::encode(sha2::Sha256::digest(s.as_bytes()))
    }

    #[test]
    fn every_manifest_format_loads_and_a_wrong_hash_names_its_entry() {
        let doc = "query Feed { posts(first: 2) { nodes { id } } }";
        let apollo = serde_json::json!({
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": [{ "id": sha256(doc), "name": "Feed", "type": "query", "body": doc }]
        });
        let entries = parse_manifest(&apollo.to_string()).unwrap();
        assert_eq!(entries, [(sha256(doc), doc.to_owned())]);

        let sha1 = hex::encode(sha1::Sha1::digest(doc.as_bytes()));
        let codegen = serde_json::json!({ sha1.clone(): doc });
        assert_eq!(parse_manifest(&codegen.to_string()).unwrap().len(), 1);
        let md5 = hex::encode(md5::Md5::digest(doc.as_bytes()));
        let relay = serde_json::json!({ md5: doc, "my-custom-id": doc });
        assert_eq!(parse_manifest(&relay.to_string()).unwrap().len(), 2);

        // graphql-codegen writes `sha256:<hex>` keys.
        let prefixed = serde_json::json!({ format!("sha256:{}", sha256(doc)): doc });
        assert_eq!(parse_manifest(&prefixed.to_string()).unwrap().len(), 1);
        let bad = serde_json::json!({ format!("sha256:{}", sha256("{ x }")): doc });
        assert!(parse_manifest(&bad.to_string()).is_err());

        let wrong = serde_json::json!({ sha1.clone(): "query Other { me { id } }" });
        let err = format!("{:#}", parse_manifest(&wrong.to_string()).unwrap_err());
        assert!(err.contains(&sha1) && err.contains("SHA-1"), "{err}");
        assert!(parse_manifest("[1]").is_err());
    }

    #[tokio::test]
    async fn modes_decide_what_runs() {
        let doc = "{ me { id } }";
        let edge = crate::Config::default().edge;
        let counter = IntCounter::new("u", "u").unwrap();
        let docs = |mode| {
            let mut m = Manifest::default();
            m.add("doc-1".into(), doc.into());
            Persisted::new(
                mode,
                m,
                Registry::new(None, "", counter.clone()),
                counter.clone(),
            )
        };
        let none = async_graphql::Extensions::default();
        let text = |t: &str| Sent {
            text: Some(t.to_owned()),
            document_id: None,
            extensions: &none,
        };
        let safelist = docs(DocumentMode::Safelist);
        assert_eq!(safelist.resolve(text(doc), &edge).await.unwrap(), doc);
        assert_eq!(
            safelist
                .resolve(text("{ posts { totalCount } }"), &edge)
                .await
                .unwrap_err()
                .code,
            Code::PersistedQueryNotAllowed
        );
        let by_id = Sent {
            text: None,
            document_id: Some("doc-1"),
            extensions: &none,
        };
        assert_eq!(safelist.resolve(by_id, &edge).await.unwrap(), doc);
        let by_sha = format!("sha256:{}", sha256(doc));
        let by_sha = Sent {
            text: None,
            document_id: Some(&by_sha),
            extensions: &none,
        };
        assert_eq!(safelist.resolve(by_sha, &edge).await.unwrap(), doc);

        let log = docs(DocumentMode::Log);
        let before = counter.get();
        assert!(
            log.resolve(text("{ posts { totalCount } }"), &edge)
                .await
                .is_ok()
        );
        assert_eq!(counter.get(), before + 1);
        assert!(log.resolve(text(doc), &edge).await.is_ok());
        assert_eq!(
            counter.get(),
            before + 1,
            "manifest documents are not unknown"
        );

        let apq = docs(DocumentMode::Apq);
        assert_eq!(
            apq.resolve(text("{ posts { totalCount } }"), &edge)
                .await
                .unwrap_err()
                .code,
            Code::PersistedQueryNotAllowed
        );
    }
}
