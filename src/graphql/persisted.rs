//! Persisted queries: Apollo's automatic persisted queries (APQ) and
//! trusted documents.
//!
//! A request may name its document by the SHA-256 of its text in
//! `extensions.persistedQuery.sha256Hash` (version 1). With the text left
//! out, the text stored under that hash runs, or the answer is
//! `PERSISTED_QUERY_NOT_FOUND` and the client sends hash and text together;
//! the pair is checked (the hash must be the text's) and, once it has run
//! without a parse or validation error, stored: in a bounded in-process
//! cache, and in Redis when configured, so every instance knows every hash.
//!
//! With trusted documents on (`FLOWPILOT_TRUSTED_DOCUMENTS`), only the
//! documents registered ahead with `flowpilot documents add` run — by hash
//! alone, or by text whose hash is registered — and anything else is
//! `PERSISTED_QUERY_NOT_ALLOWED`. Every transport resolves its requests
//! here before they run.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_graphql::{ErrorExtensionValues, Request, ServerError, Value};
use chrono::Utc;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, DatabaseConnection, EntityTrait};

use super::limits::{self, VALIDATION_FAILED};
use crate::auth::tokens::hash_token as sha256_hex;

/// `extensions.code` of a hash the server does not know (send the text).
pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
/// `extensions.code` of a document that is not registered while trusted
/// documents are on.
pub const PERSISTED_QUERY_NOT_ALLOWED: &str = "PERSISTED_QUERY_NOT_ALLOWED";

/// How long Redis keeps a persisted query after it was last registered.
const REDIS_TTL_SECS: u64 = 7 * 24 * 3600;

/// The persisted-query store of one instance.
#[derive(Clone)]
pub struct PersistedQueries {
    inner: Arc<Inner>,
}

struct Inner {
    cache: Mutex<Cache>,
    redis: Option<ConnectionManager>,
    redis_prefix: String,
    trusted: Option<DatabaseConnection>,
}

/// What a request's persisted-query extension asked for, kept until the
/// request has run.
#[derive(Debug)]
pub struct Registration {
    hash: String,
    query: Arc<str>,
}

impl PersistedQueries {
    /// A store keeping at most `capacity` documents in process, using
    /// `redis` when given. With `trusted` set, only documents registered in
    /// that database run.
    pub fn new(
        capacity: usize,
        redis: Option<ConnectionManager>,
        redis_prefix: &str,
        trusted: Option<DatabaseConnection>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                cache: Mutex::new(Cache::new(capacity)),
                redis,
                redis_prefix: format!("{redis_prefix}apq:"),
                trusted,
            }),
        }
    }

    /// Whether only registered documents run.
    pub fn trusted_only(&self) -> bool {
        self.inner.trusted.is_some()
    }

    /// Fills in the text of a request that names its document by hash, and
    /// holds the request to the trusted documents when they are on. A
    /// returned registration is to be passed to [`Self::register`] once the
    /// request ran without a parse or validation error.
    pub async fn resolve(
        &self,
        request: &mut Request,
    ) -> Result<Option<Registration>, ServerError> {
        let hash = requested_hash(request)?;
        if self.trusted_only() {
            return self.resolve_trusted(request, hash).await.map(|()| None);
        }
        let Some(hash) = hash else {
            return Ok(None);
        };
        if request.query.is_empty() {
            return match self.lookup(&hash).await {
                Some(query) => {
                    request.query = query.to_string();
                    Ok(None)
                }
                None => Err(persisted_error(
                    "PersistedQueryNotFound",
                    PERSISTED_QUERY_NOT_FOUND,
                )),
            };
        }
        if sha256_hex(&request.query) != hash {
            return Err(refusal(
                "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query",
            ));
        }
        Ok(Some(Registration {
            hash,
            query: Arc::from(request.query.as_str()),
        }))
    }

    /// Keeps a checked hash and its text, in process and in Redis.
    pub async fn register(&self, registration: Registration) {
        self.cache()
            .insert(registration.hash.clone(), registration.query.clone());
        if let Some(redis) = &self.inner.redis {
            let key = format!("{}{}", self.inner.redis_prefix, registration.hash);
            let stored: Result<(), _> = redis
                .clone()
                .set_ex(key, registration.query.as_ref(), REDIS_TTL_SECS)
                .await;
            if let Err(err) = stored {
                tracing::warn!(error = %err, "could not keep a persisted query in Redis");
            }
        }
    }

    async fn resolve_trusted(
        &self,
        request: &mut Request,
        hash: Option<String>,
    ) -> Result<(), ServerError> {
        let hash = match hash {
            Some(hash) if !request.query.is_empty() && sha256_hex(&request.query) != hash => {
                return Err(refusal(
                    "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query",
                ));
            }
            Some(hash) => hash,
            None => sha256_hex(&request.query),
        };
        match self.trusted_document(&hash).await {
            Some(query) => {
                request.query = query.to_string();
                Ok(())
            }
            None => Err(persisted_error(
                "only documents registered with `flowpilot documents add` run on this server",
                PERSISTED_QUERY_NOT_ALLOWED,
            )),
        }
    }

    async fn lookup(&self, hash: &str) -> Option<Arc<str>> {
        if let Some(query) = self.cache().get(hash) {
            return Some(query);
        }
        let redis = self.inner.redis.as_ref()?;
        let key = format!("{}{hash}", self.inner.redis_prefix);
        let found: Option<String> = match redis.clone().get(key).await {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(error = %err, "could not read a persisted query from Redis");
                None
            }
        };
        // What Redis holds was checked by the instance that stored it; a
        // key someone else wrote is checked again here.
        let query: Arc<str> = Arc::from(found.filter(|text| sha256_hex(text) == hash)?);
        self.cache().insert(hash.to_owned(), query.clone());
        Some(query)
    }

    async fn trusted_document(&self, hash: &str) -> Option<Arc<str>> {
        if let Some(query) = self.cache().get(hash) {
            return Some(query);
        }
        let db = self.inner.trusted.as_ref()?;
        let document = match entity::trusted_document::Entity::find_by_id(hash.to_owned())
            .one(db)
            .await
        {
            Ok(document) => document?,
            Err(err) => {
                tracing::error!(error = %err, "could not read the trusted documents");
                return None;
            }
        };
        let query: Arc<str> = Arc::from(document.body);
        self.cache().insert(hash.to_owned(), query.clone());
        Some(query)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A request's `extensions` as its client sent them (JSON), which is where
/// a persisted query's hash travels; every transport sets them here.
pub fn set_extensions(
    request: &mut Request,
    extensions: Option<serde_json::Map<String, serde_json::Value>>,
) {
    for (name, value) in extensions.into_iter().flatten() {
        if let Ok(value) = Value::from_json(value) {
            request.extensions.insert(name, value);
        }
    }
}

/// Whether a client's `extensions` name a persisted query, so that the
/// request may leave its query out.
pub fn names_persisted_query(
    extensions: Option<&serde_json::Map<String, serde_json::Value>>,
) -> bool {
    extensions.is_some_and(|extensions| extensions.contains_key("persistedQuery"))
}

/// The hash a request names in `extensions.persistedQuery`, checked for
/// shape.
fn requested_hash(request: &Request) -> Result<Option<String>, ServerError> {
    let Some(persisted) = request.extensions.get("persistedQuery") else {
        return Ok(None);
    };
    let Value::Object(persisted) = persisted else {
        return Err(refusal("extensions.persistedQuery must be an object"));
    };
    match persisted.get("version") {
        Some(Value::Number(version)) if version.as_u64() == Some(1) => {}
        _ => {
            return Err(refusal(
                "extensions.persistedQuery.version must be 1 (the only version there is)",
            ));
        }
    }
    match persisted.get("sha256Hash") {
        Some(Value::String(hash)) if is_sha256_hex(hash) => Ok(Some(hash.to_ascii_lowercase())),
        _ => Err(refusal(
            "extensions.persistedQuery.sha256Hash must be the 64 hexadecimal digits of a SHA-256",
        )),
    }
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn persisted_error(message: &str, code: &str) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", code);
    error.extensions = Some(extensions);
    error
}

fn refusal(message: &str) -> ServerError {
    let mut error = limits::refusal(message, VALIDATION_FAILED, None);
    if let Some(extensions) = error.extensions.as_mut() {
        extensions.set("field", "extensions.persistedQuery");
    }
    error
}

/// A document registered ahead.
#[derive(Debug, PartialEq, Eq)]
pub struct TrustedDocument {
    /// Lower-case hex SHA-256 of `body`.
    pub hash: String,
    /// The document's text.
    pub body: String,
    /// Its first named operation, for listings.
    pub operation_name: Option<String>,
}

impl TrustedDocument {
    /// A document from its text: it must parse as GraphQL and hold at least
    /// one operation; when `hash` is given (a manifest's key) it must be the
    /// text's SHA-256.
    pub fn new(body: String, hash: Option<&str>) -> anyhow::Result<Self> {
        let document = async_graphql::parser::parse_query(&body)
            .map_err(|err| anyhow::anyhow!("the document does not parse: {err}"))?;
        let operation_name = match &document.operations {
            async_graphql::parser::types::DocumentOperations::Single(_) => None,
            async_graphql::parser::types::DocumentOperations::Multiple(operations) => {
                operations.keys().next().map(ToString::to_string)
            }
        };
        let computed = sha256_hex(&body);
        if let Some(hash) = hash
            && !hash.eq_ignore_ascii_case(&computed)
        {
            anyhow::bail!("the manifest names a document {hash}, but its SHA-256 is {computed}");
        }
        Ok(Self {
            hash: computed,
            body,
            operation_name,
        })
    }
}

impl TrustedDocument {
    /// The documents of one file: a `.json` manifest mapping hashes to
    /// documents, or any other file as one document.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Vec<Self>> {
        use anyhow::Context;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let is_manifest = path
            .extension()
            .is_some_and(|extension| extension.eq_ignore_ascii_case("json"));
        let described = |err: anyhow::Error| anyhow::anyhow!("{}: {err}", path.display());
        if !is_manifest {
            return Ok(vec![Self::new(text, None).map_err(described)?]);
        }
        let manifest: std::collections::BTreeMap<String, String> = serde_json::from_str(&text)
            .with_context(|| {
                format!(
                    "{} is not a manifest (a JSON object of SHA-256 hashes to documents)",
                    path.display()
                )
            })?;
        manifest
            .into_iter()
            .map(|(hash, body)| Self::new(body, Some(&hash)).map_err(described))
            .collect()
    }
}

/// Registers `documents`; one already registered is left as it is.
/// Returns how many were new.
pub async fn add_trusted_documents(
    db: &DatabaseConnection,
    documents: Vec<TrustedDocument>,
) -> anyhow::Result<usize> {
    if documents.is_empty() {
        return Ok(0);
    }
    let now = Utc::now();
    let rows = documents
        .into_iter()
        .map(|document| entity::trusted_document::ActiveModel {
            hash: Set(document.hash),
            body: Set(document.body),
            operation_name: Set(document.operation_name),
            created_at: Set(now),
        });
    let inserted = entity::trusted_document::Entity::insert_many(rows)
        .on_conflict(
            OnConflict::column(entity::trusted_document::Column::Hash)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    Ok(usize::try_from(inserted).unwrap_or(0))
}

/// Every registered document, oldest first.
pub async fn trusted_documents(
    db: &DatabaseConnection,
) -> anyhow::Result<Vec<entity::trusted_document::Model>> {
    use sea_orm::QueryOrder;
    Ok(entity::trusted_document::Entity::find()
        .order_by_asc(entity::trusted_document::Column::CreatedAt)
        .order_by_asc(entity::trusted_document::Column::Hash)
        .all(db)
        .await?)
}

/// Documents by hash, at most `capacity` of them; the oldest entry leaves
/// first when it is full.
struct Cache {
    capacity: usize,
    entries: HashMap<String, Arc<str>>,
    order: VecDeque<String>,
}

impl Cache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, hash: &str) -> Option<Arc<str>> {
        self.entries.get(hash).cloned()
    }

    fn insert(&mut self, hash: String, query: Arc<str>) {
        if self.capacity == 0 || self.entries.contains_key(&hash) {
            return;
        }
        while self.entries.len() >= self.capacity {
            match self.order.pop_front() {
                Some(oldest) => {
                    self.entries.remove(&oldest);
                }
                None => break,
            }
        }
        self.order.push_back(hash.clone());
        self.entries.insert(hash, query);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apq(hash: &str) -> Request {
        let mut request = Request::new("");
        request.extensions.insert(
            "persistedQuery".to_owned(),
            Value::from_json(serde_json::json!({ "version": 1, "sha256Hash": hash })).unwrap(),
        );
        request
    }

    fn code(error: &ServerError) -> String {
        match error.extensions.as_ref().and_then(|e| e.get("code")) {
            Some(Value::String(code)) => code.clone(),
            other => panic!("no code: {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unknown_hash_is_not_found_then_runs_once_registered() {
        let store = PersistedQueries::new(10, None, "t:", None);
        let query = "{ __typename }";
        let hash = sha256_hex(query);
        let missing = store.resolve(&mut apq(&hash)).await.unwrap_err();
        assert_eq!(code(&missing), PERSISTED_QUERY_NOT_FOUND);
        assert_eq!(missing.message, "PersistedQueryNotFound");

        let mut full = apq(&hash);
        full.query = query.to_owned();
        let registration = store.resolve(&mut full).await.unwrap().unwrap();
        store.register(registration).await;

        let mut hash_only = apq(&hash);
        assert!(store.resolve(&mut hash_only).await.unwrap().is_none());
        assert_eq!(hash_only.query, query);
    }

    #[tokio::test]
    async fn a_hash_that_is_not_the_query_s_is_refused() {
        let store = PersistedQueries::new(10, None, "t:", None);
        let mut request = apq(&sha256_hex("{ viewer { id } }"));
        request.query = "{ __typename }".to_owned();
        let error = store.resolve(&mut request).await.unwrap_err();
        assert_eq!(code(&error), "BAD_USER_INPUT");
    }

    #[tokio::test]
    async fn malformed_persisted_query_extensions_are_refused() {
        let store = PersistedQueries::new(10, None, "t:", None);
        for extension in [
            serde_json::json!("x"),
            serde_json::json!({ "version": 2, "sha256Hash": sha256_hex("{ a }") }),
            serde_json::json!({ "version": 1, "sha256Hash": "not-hex" }),
        ] {
            let mut request = Request::new("{ __typename }");
            request.extensions.insert(
                "persistedQuery".to_owned(),
                Value::from_json(extension.clone()).unwrap(),
            );
            let error = store.resolve(&mut request).await.unwrap_err();
            assert_eq!(code(&error), "BAD_USER_INPUT", "{extension}");
        }
    }

    #[test]
    fn the_cache_keeps_at_most_its_capacity_oldest_leaving_first() {
        let mut cache = Cache::new(2);
        for name in ["a", "b", "c"] {
            cache.insert(name.to_owned(), Arc::from(name));
        }
        assert!(cache.get("a").is_none());
        assert_eq!(cache.get("b").as_deref(), Some("b"));
        assert_eq!(cache.get("c").as_deref(), Some("c"));
        assert_eq!(cache.order.len(), 2);
    }

    #[test]
    fn a_manifest_entry_whose_hash_is_not_its_text_s_is_refused() {
        let body = "query A { __typename }".to_owned();
        assert!(TrustedDocument::new(body.clone(), Some(&sha256_hex("other"))).is_err());
        let document = TrustedDocument::new(body.clone(), Some(&sha256_hex(&body))).unwrap();
        assert_eq!(document.operation_name.as_deref(), Some("A"));
        assert!(TrustedDocument::new("query {".to_owned(), None).is_err());
    }
}
