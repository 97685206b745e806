//! OpenStack Swift, spoken directly over its object API: a handful of
//! requests (auth, HEAD, PUT, GET, container listing, DELETE, bulk delete,
//! `/info`) through a blocking HTTP client, so the store needs no runtime.
//!
//! Names: the container holds the same keys as an S3 bucket (Synapse's
//! relative paths after an optional prefix), each `/`-separated segment
//! percent-encoded in the URL.
//!
//! What the answers prove: Swift compares the `ETag` we send with the MD5
//! of what it stored and refuses a mismatch (422), and a plain object's
//! ETag is its content's MD5. Above the cluster's `max_file_size` (from
//! `/info`) or a configured segment size, a file goes up as a Static Large
//! Object: segments in `<container>_segments` (each PUT with its MD5 as
//! ETag), then a manifest naming every segment's MD5 and size, which Swift
//! checks against the segments before accepting it. Such an object's ETag
//! is not the content's MD5: it is proven by re-reading its manifest and
//! HEADing every segment against the local file's part MD5s. Our whole-file
//! MD5 goes into `X-Object-Meta-Mo-Md5` for people and other tools; it
//! proves nothing by itself. Deleting a manifest deletes its segments
//! (`multipart-manifest=delete`).
//!
//! Auth: TempAuth/v1 (`X-Auth-User`/`X-Auth-Key`), as python-swiftclient
//! takes it. The token is cached and fetched again once when a request is
//! refused with 401. Tokens and keys never appear in messages.

use std::collections::HashSet;
use std::io::Read;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use md5::{Digest as _, Md5};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use ureq::http::Response;
use ureq::typestate::{WithBody, WithoutBody};
use ureq::{Agent, RequestBuilder};

use super::{
    Comparison, Content, Difference, ErrorKind, Etag, Listed, LocalData, ObjectInfo, ObjectStore, Proof, PutIfAbsent,
    StoreError, parse_md5,
};
use crate::config::Secret;

/// Characters left as they are in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
/// Objects per listing page (Swift's default maximum).
const PAGE: usize = 10_000;
/// Segment size when a file exceeds the cluster's maximum object size and
/// none is configured.
const DEFAULT_SEGMENT_SIZE: u64 = 1024 * 1024 * 1024;
/// Attempts per request for transient failures (5xx, 429/498, resets).
const ATTEMPTS: u32 = 5;
/// Metadata naming the content's MD5 (`X-Object-Meta-Mo-Md5`): for people.
pub const MD5_META: &str = "x-object-meta-mo-md5";

/// How to log in.
#[derive(Clone, PartialEq, Eq)]
pub enum SwiftAuth {
    /// TempAuth / v1: `X-Auth-User` and `X-Auth-Key` against the auth URL
    /// (python-swiftclient's `ST_AUTH`, `ST_USER`, `ST_KEY`).
    V1 { auth_url: String, user: String, key: Secret },
    /// Keystone v3: a token (`X-Subject-Token`) and the `object-store`
    /// endpoint of its catalog, chosen by interface and region.
    V3 { auth_url: String, method: Box<V3Method>, region: Option<String>, interface: String },
}

/// How to log in to Keystone v3.
#[derive(Clone, PartialEq, Eq)]
pub enum V3Method {
    /// A user's password, scoped to a project.
    Password { user: Named, password: Secret, project: Named },
    /// An application credential (scoped by itself): by id, or by name
    /// with its user.
    ApplicationCredential { id: Option<String>, name: Option<String>, user: Option<Named>, secret: Secret },
}

/// A user or project: by id, or by name within a domain (by id or name).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Named {
    pub id: Option<String>,
    pub name: Option<String>,
    pub domain_id: Option<String>,
    pub domain_name: Option<String>,
}

impl Named {
    fn json(&self) -> serde_json::Value {
        let mut v = serde_json::Map::new();
        if let Some(id) = &self.id {
            v.insert("id".into(), id.clone().into());
        }
        if let Some(name) = &self.name {
            v.insert("name".into(), name.clone().into());
            let domain = match (&self.domain_id, &self.domain_name) {
                (Some(id), _) => serde_json::json!({ "id": id }),
                (None, Some(name)) => serde_json::json!({ "name": name }),
                (None, None) => serde_json::json!({ "id": "default" }),
            };
            v.insert("domain".into(), domain);
        }
        v.into()
    }

    fn describe(&self) -> String {
        self.name.clone().or_else(|| self.id.clone()).unwrap_or_default()
    }
}

impl V3Method {
    fn body(&self) -> serde_json::Value {
        match self {
            V3Method::Password { user, password, project } => {
                let mut u = user.json();
                u["password"] = password.0.clone().into();
                serde_json::json!({ "auth": {
                    "identity": { "methods": ["password"], "password": { "user": u } },
                    "scope": { "project": project.json() },
                } })
            }
            V3Method::ApplicationCredential { id, name, user, secret } => {
                let mut c = serde_json::json!({ "secret": secret.0 });
                if let Some(id) = id {
                    c["id"] = id.clone().into();
                }
                if let Some(name) = name {
                    c["name"] = name.clone().into();
                }
                if let Some(user) = user {
                    c["user"] = user.json();
                }
                serde_json::json!({ "auth": { "identity": {
                    "methods": ["application_credential"], "application_credential": c,
                } } })
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            V3Method::Password { user, project, .. } => {
                format!("user {} in project {}", user.describe(), project.describe())
            }
            V3Method::ApplicationCredential { id, name, .. } => {
                format!("application credential {}", name.clone().or_else(|| id.clone()).unwrap_or_default())
            }
        }
    }
}

impl std::fmt::Debug for SwiftAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwiftAuth::V1 { auth_url, user, .. } => write!(f, "V1 {{ {auth_url}, user {user}, key <redacted> }}"),
            SwiftAuth::V3 { auth_url, method, region, interface } => write!(
                f,
                "V3 {{ {auth_url}, {}, region {region:?}, interface {interface}, secret <redacted> }}",
                method.describe()
            ),
        }
    }
}

/// What a Swift store needs besides the container and prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwiftSettings {
    pub auth: SwiftAuth,
    /// Files larger than this go up as SLOs in segments of this size
    /// (also when below the cluster's maximum).
    pub segment_size: Option<u64>,
    /// Where the settings came from, for messages ("ST_AUTH", a cloud name).
    pub source: String,
}

/// The cluster's limits, from `/info`.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_file_size: u64,
    max_manifest_segments: u64,
    /// `None`: the cluster has no bulk delete.
    max_deletes: Option<usize>,
}

#[derive(Clone)]
struct Session {
    storage_url: String,
    token: String,
}

pub struct SwiftStore {
    agent: Agent,
    settings: SwiftSettings,
    container: String,
    segments: String,
    session: Mutex<Option<Session>>,
    limits: Limits,
    /// Whether the segments container exists (created by the first SLO).
    /// Unknown until looked at; a PUT of the first SLO turns it true.
    segments_exist: Mutex<Option<bool>>,
    /// Keys HEAD found to be SLOs: a PUT over one deletes its old segments.
    slos_seen: Mutex<HashSet<String>>,
    /// Whether the cluster refuses a PUT with `If-None-Match: *` over an
    /// existing object: found out once, after the run's first small upload.
    refuses_overwrite: OnceLock<bool>,
}

/// A request to make, again if need be (a new token, a retry).
type Build<'a> = dyn Fn(&Authed<'_>, &Session) -> Result<Response<ureq::Body>, ureq::Error> + 'a;

/// The agent, with every request carrying the session's token.
struct Authed<'a> {
    agent: &'a Agent,
    token: &'a str,
}

impl Authed<'_> {
    fn get(&self, url: &str) -> RequestBuilder<WithoutBody> {
        self.agent.get(url).header("X-Auth-Token", self.token)
    }
    fn head(&self, url: &str) -> RequestBuilder<WithoutBody> {
        self.agent.head(url).header("X-Auth-Token", self.token)
    }
    fn delete(&self, url: &str) -> RequestBuilder<WithoutBody> {
        self.agent.delete(url).header("X-Auth-Token", self.token)
    }
    fn put(&self, url: &str) -> RequestBuilder<WithBody> {
        self.agent.put(url).header("X-Auth-Token", self.token)
    }
    fn post(&self, url: &str) -> RequestBuilder<WithBody> {
        self.agent.post(url).header("X-Auth-Token", self.token)
    }
}

impl SwiftStore {
    /// GET the object (or a `bytes=` range of it), streaming it to `sink`.
    fn get(
        &self,
        key: &str,
        range: Option<String>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        let mut r = self.request("GET", key, &|a, s| {
            let req = a.get(&self.object_url(s, &self.container, key));
            match &range {
                Some(range) => req.header("Range", range).call(),
                None => req.call(),
            }
        })?;
        match r.status().as_u16() {
            200..=299 => {}
            404 => return Ok(false),
            _ => return Err(status_error("GET", key, r)),
        }
        let mut reader = r.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n =
                reader.read(&mut buf).map_err(|e| StoreError::new(ErrorKind::Transient, format!("GET {key}: {e}")))?;
            if n == 0 {
                return Ok(true);
            }
            sink(&buf[..n])?;
        }
    }

    pub fn new(settings: &SwiftSettings, container: &str) -> anyhow::Result<Self> {
        if container.is_empty() || container.contains('/') {
            anyhow::bail!("Swift container {container:?}: expected a container name without '/'");
        }
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .max_redirects(0)
            .user_agent(concat!("media-offload/", env!("CARGO_PKG_VERSION")))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .provider(ureq::tls::TlsProvider::NativeTls)
                    .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                    .build(),
            )
            .build();
        let mut store = Self {
            agent: Agent::new_with_config(config),
            settings: settings.clone(),
            container: container.to_owned(),
            segments: format!("{container}_segments"),
            session: Mutex::new(None),
            limits: Limits {
                max_file_size: 5 * 1024 * 1024 * 1024 + 2,
                max_manifest_segments: 1000,
                max_deletes: None,
            },
            segments_exist: Mutex::new(None),
            slos_seen: Mutex::new(HashSet::new()),
            refuses_overwrite: OnceLock::new(),
        };
        store.preflight()?;
        Ok(store)
    }

    /// Log in, read the cluster's limits, and make sure the container is
    /// there: one clear error instead of one per file.
    fn preflight(&mut self) -> anyhow::Result<()> {
        let session = self.session().map_err(|e| anyhow::anyhow!("{}: {e}", self.describe()))?;
        self.limits = self.read_limits(&session.storage_url);
        log::debug!("{}: {:?}", self.describe(), self.limits);
        let container = self.container.clone();
        match self.request("HEAD", &container, &|a, s| a.head(&self.container_url(s, &container)).call()) {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) if r.status() == 404 => anyhow::bail!(
                "container {container:?} does not exist at {} (create it, e.g. `swift post {container}`)",
                self.describe()
            ),
            Ok(r) => Err(anyhow::anyhow!("{}: {}", self.describe(), status_error("HEAD", &container, r))),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", self.describe())),
        }
    }

    /// `/info` beside the storage URL's `/v1/...`; its absence (it can be
    /// disabled) leaves Swift's defaults.
    fn read_limits(&self, storage_url: &str) -> Limits {
        let mut limits = self.limits;
        let Some(root) = storage_url.find("/v1/").map(|i| &storage_url[..i]) else { return limits };
        let info: serde_json::Value = match self.agent.get(&format!("{root}/info")).call() {
            Ok(r) if r.status().is_success() => match json_body(r, 1024 * 1024) {
                Ok(v) => v,
                Err(_) => return limits,
            },
            _ => {
                log::debug!("{root}/info is not available: assuming Swift's default limits");
                return limits;
            }
        };
        if let Some(n) = info.pointer("/swift/max_file_size").and_then(|v| v.as_u64()) {
            limits.max_file_size = n;
        }
        if let Some(n) = info.pointer("/slo/max_manifest_segments").and_then(|v| v.as_u64()) {
            limits.max_manifest_segments = n.max(1);
        }
        limits.max_deletes =
            info.pointer("/bulk_delete/max_deletes_per_request").and_then(|v| v.as_u64()).map(|n| n.max(1) as usize);
        limits
    }

    /// The cached session, logging in if there is none.
    fn session(&self) -> Result<Session, StoreError> {
        if let Some(s) = self.session.lock().expect("session lock").clone() {
            return Ok(s);
        }
        let fresh = self.login()?;
        *self.session.lock().expect("session lock") = Some(fresh.clone());
        Ok(fresh)
    }

    fn login(&self) -> Result<Session, StoreError> {
        let (auth_url, user, key) = match &self.settings.auth {
            SwiftAuth::V1 { auth_url, user, key } => (auth_url, user, key),
            SwiftAuth::V3 { auth_url, method, region, interface } => {
                return self.login_v3(auth_url, method, region.as_deref(), interface);
            }
        };
        let what = format!("logging in at {auth_url} as {user}");
        let response = self.login_call(&what, &|| {
            self.agent.get(auth_url).header("X-Auth-User", user).header("X-Auth-Key", &key.0).call()
        })?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(StoreError::new(
                ErrorKind::Denied,
                format!("{what}: refused ({status}); check the user and key (from {})", self.settings.source),
            ));
        }
        if !response.status().is_success() {
            return Err(status_error("login", auth_url, response));
        }
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        match (header("x-storage-url"), header("x-auth-token")) {
            (Some(storage_url), Some(token)) => {
                log::debug!("logged in at {auth_url}; storage URL {storage_url}");
                Ok(Session { storage_url: storage_url.trim_end_matches('/').to_owned(), token })
            }
            _ => Err(StoreError::new(
                ErrorKind::Invalid,
                format!("{what}: the answer has no X-Storage-Url and X-Auth-Token"),
            )),
        }
    }

    /// Keystone v3: POST /v3/auth/tokens, the token from X-Subject-Token,
    /// the storage URL from the catalog's object-store endpoint.
    fn login_v3(
        &self,
        auth_url: &str,
        method: &V3Method,
        region: Option<&str>,
        interface: &str,
    ) -> Result<Session, StoreError> {
        let base = auth_url.trim_end_matches('/');
        let url = if base.ends_with("/v3") { format!("{base}/auth/tokens") } else { format!("{base}/v3/auth/tokens") };
        let what = format!("logging in to Keystone at {auth_url} as {}", method.describe());
        let body = serde_json::to_vec(&method.body()).expect("JSON serializes");
        let response = self
            .login_call(&what, &|| self.agent.post(&url).header("Content-Type", "application/json").send(&body[..]))?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(StoreError::new(
                ErrorKind::Denied,
                format!("{what}: refused ({status}); check the credentials (from {})", self.settings.source),
            ));
        }
        if !response.status().is_success() {
            return Err(status_error("login", &url, response));
        }
        let token = response.headers().get("x-subject-token").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let token = token
            .ok_or_else(|| StoreError::new(ErrorKind::Invalid, format!("{what}: the answer has no X-Subject-Token")))?;
        let answer: TokenAnswer = json_body(response, 16 * 1024 * 1024)
            .map_err(|e| StoreError::new(ErrorKind::Invalid, format!("{what}: unreadable answer: {e}")))?;
        let storage_url = answer
            .token
            .catalog
            .iter()
            .filter(|s| s.kind == "object-store")
            .flat_map(|s| &s.endpoints)
            .find(|e| {
                e.interface == interface
                    && region.is_none_or(|r| e.region_id.as_deref() == Some(r) || e.region.as_deref() == Some(r))
            })
            .map(|e| e.url.trim_end_matches('/').to_owned())
            .ok_or_else(|| {
                StoreError::new(
                    ErrorKind::Invalid,
                    format!(
                        "{what}: the catalog has no object-store endpoint with interface {interface}{}",
                        region.map(|r| format!(" in region {r}")).unwrap_or_default()
                    ),
                )
            })?;
        log::debug!("logged in to Keystone at {auth_url}; storage URL {storage_url}");
        Ok(Session { storage_url, token })
    }

    /// A login request, with transient failures retried.
    fn login_call(
        &self,
        what: &str,
        call: &dyn Fn() -> Result<Response<ureq::Body>, ureq::Error>,
    ) -> Result<Response<ureq::Body>, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match call() {
                Ok(r) if retryable(r.status().as_u16()) && attempt < ATTEMPTS => backoff(attempt),
                Ok(r) => return Ok(r),
                Err(e) if attempt < ATTEMPTS && transient_io(&e) => backoff(attempt),
                Err(e) => return Err(transport_error(what, &e)),
            }
        }
    }

    fn container_url(&self, s: &Session, container: &str) -> String {
        format!("{}/{}", s.storage_url, utf8_percent_encode(container, SEGMENT))
    }

    fn object_url(&self, s: &Session, container: &str, key: &str) -> String {
        format!("{}/{}", self.container_url(s, container), encode_key(key))
    }

    /// Make a request: with the cached token, logging in again once if it
    /// is refused (expired), retrying transient failures with backoff.
    /// Any status but 401 and the retried ones is the caller's to judge.
    fn request(&self, op: &str, key: &str, build: &Build<'_>) -> Result<Response<ureq::Body>, StoreError> {
        let mut session = self.session()?;
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match build(&Authed { agent: &self.agent, token: &session.token }, &session) {
                Ok(r) if r.status() == 401 && !renewed => {
                    log::debug!("{op} {key}: the token was refused; logging in again");
                    renewed = true;
                    let mut cached = self.session.lock().expect("session lock");
                    // Another thread may have renewed it meanwhile.
                    match cached.as_ref().filter(|c| c.token != session.token) {
                        Some(newer) => session = newer.clone(),
                        None => {
                            *cached = None;
                            drop(cached);
                            session = self.session()?;
                        }
                    }
                }
                Ok(r) if r.status() == 401 => {
                    return Err(StoreError::new(
                        ErrorKind::Denied,
                        format!("{op} {key}: refused (401) with a new token (from {})", self.settings.source),
                    ));
                }
                Ok(r) if retryable(r.status().as_u16()) && attempt < ATTEMPTS => {
                    log::debug!("{op} {key}: {} (attempt {attempt}); retrying", r.status());
                    backoff(attempt);
                }
                Ok(r) => return Ok(r),
                Err(e) if attempt < ATTEMPTS && transient_io(&e) => {
                    log::debug!("{op} {key}: {e} (attempt {attempt}); retrying");
                    backoff(attempt);
                }
                Err(e) => return Err(transport_error(&format!("{op} {key}"), &e)),
            }
        }
    }

    fn head_in(&self, container: &str, key: &str) -> Result<Option<Response<ureq::Body>>, StoreError> {
        let r = self.request("HEAD", key, &|a, s| a.head(&self.object_url(s, container, key)).call())?;
        match r.status().as_u16() {
            200..=299 => Ok(Some(r)),
            404 => Ok(None),
            _ => Err(status_error("HEAD", key, r)),
        }
    }

    /// PUT `len` bytes of `content` from `offset` with their MD5 as ETag:
    /// Swift refuses them if what it stored has another MD5.
    fn put_object(
        &self,
        container: &str,
        key: &str,
        content: &Content,
        (offset, len): (u64, u64),
        md5: &[u8; 16],
        meta: &[(&str, String)],
    ) -> Result<(), StoreError> {
        let want = hex::encode(md5);
        let r = self.request("PUT", key, &|a, s| {
            let mut req = a
                .put(&self.object_url(s, container, key))
                .header("ETag", &want)
                .header("Content-Type", "application/octet-stream");
            for (name, value) in meta {
                req = req.header(*name, value);
            }
            match content {
                Content::Bytes(b) => {
                    let start = (offset as usize).min(b.len());
                    let end = (start + len as usize).min(b.len());
                    req.send(&b[start..end])
                }
                Content::File(_) | Content::Source(_) => {
                    let mut reader = RangeReader { content, at: offset, end: offset + len };
                    req.header("Content-Length", len.to_string()).send(ureq::SendBody::from_reader(&mut reader))
                }
            }
        })?;
        let status = r.status().as_u16();
        if status == 422 {
            return Err(StoreError::new(
                ErrorKind::BadDigest,
                format!("PUT {key}: Swift refused the body: it does not have the MD5 {want} (did the file change?)"),
            ));
        }
        if !(200..300).contains(&status) {
            return Err(status_error("PUT", key, r));
        }
        match etag_header(&r).and_then(|e| parse_md5(&e)) {
            Some(got) if got == *md5 => Ok(()),
            Some(got) => Err(StoreError::new(
                ErrorKind::BadDigest,
                format!("PUT {key}: Swift's ETag {} is not the MD5 {want} of the bytes sent", hex::encode(got)),
            )),
            // Swift accepted our ETag, which it compares before answering.
            None => Ok(()),
        }
    }

    /// One object of `data` at `key`, with its MD5 as ETag and in our
    /// metadata; with `if_absent`, only if no object is there (412, an
    /// [`ErrorKind::Exists`] error, if one is).
    fn put_plain(&self, key: &str, data: &LocalData, if_absent: bool) -> Result<(), StoreError> {
        let mut meta = vec![(MD5_META, hex::encode(data.digest.md5))];
        if if_absent {
            meta.push(("If-None-Match", "*".to_owned()));
        }
        self.put_object(&self.container, key, &data.content, (0, data.digest.size), &data.digest.md5, &meta)
    }

    /// After the run's first small upload: PUT the same bytes to the same
    /// key again, with `If-None-Match: *`. Refused (412): the cluster
    /// honours the condition, and new objects go up without a HEAD first.
    /// Stored: it ignores it (and holds the same bytes as before). Either
    /// way no other object is touched and no probe object is left behind.
    fn probe_conditional_put(&self, key: &str, data: &LocalData) {
        self.refuses_overwrite
            .get_or_init(|| super::conditional_put_probed(&self.describe(), self.put_plain(key, data, true)));
    }

    /// The segment size for a file of `size` bytes, if it is an SLO.
    fn segment_size_for(&self, size: u64) -> Option<u64> {
        slo_segment_size(size, self.settings.segment_size, self.limits)
    }

    fn ensure_segments_container(&self) -> Result<(), StoreError> {
        if *self.segments_exist.lock().expect("segments flag") == Some(true) {
            return Ok(());
        }
        let name = self.segments.clone();
        let r = self.request("PUT", &name, &|a, s| a.put(&self.container_url(s, &name)).send_empty())?;
        if !r.status().is_success() {
            return Err(status_error("PUT container", &name, r));
        }
        *self.segments_exist.lock().expect("segments flag") = Some(true);
        Ok(())
    }

    fn segments_container_exists(&self) -> Result<bool, StoreError> {
        if let Some(known) = *self.segments_exist.lock().expect("segments flag") {
            return Ok(known);
        }
        let name = self.segments.clone();
        let r = self.request("HEAD", &name, &|a, s| a.head(&self.container_url(s, &name)).call())?;
        let exists = match r.status().as_u16() {
            200..=299 => true,
            404 => false,
            _ => return Err(status_error("HEAD container", &name, r)),
        };
        let mut known = self.segments_exist.lock().expect("segments flag");
        Ok(*known.get_or_insert(exists))
    }

    /// Upload an SLO: segments (skipping those already there with the
    /// right MD5: a killed upload resumes), then the manifest, which Swift
    /// checks against every segment's MD5 and size.
    fn put_slo(&self, key: &str, data: &LocalData) -> Result<Proof, StoreError> {
        let d = &data.digest;
        self.ensure_segments_container()?;
        let mut manifest = Vec::with_capacity(d.part_md5s.len());
        for (i, md5) in d.part_md5s.iter().enumerate() {
            let offset = i as u64 * d.part_size;
            let len = d.part_size.min(d.size - offset);
            let name = segment_name(key, d.size, d.part_size, &d.md5, i);
            let present = self.head_in(&self.segments, &name)?.is_some_and(|r| {
                etag_header(&r).and_then(|e| parse_md5(&e)) == Some(*md5) && content_length(&r) == len
            });
            if present {
                log::debug!("{key}: segment {i} is already stored");
            } else {
                self.put_object(&self.segments, &name, &data.content, (offset, len), md5, &[])?;
            }
            manifest.push(serde_json::json!({
                "path": format!("/{}/{name}", self.segments),
                "etag": hex::encode(md5),
                "size_bytes": len,
            }));
        }
        let body = serde_json::to_vec(&manifest).expect("a manifest serializes");
        let md5_hex = hex::encode(d.md5);
        let r = self.request("PUT", key, &|a, s| {
            a.put(&format!("{}?multipart-manifest=put", self.object_url(s, &self.container, key)))
                .header("Content-Type", "application/octet-stream")
                .header(MD5_META, &md5_hex)
                .send(&body[..])
        })?;
        let status = r.status().as_u16();
        if status == 400 || status == 422 {
            let text = body_text(r);
            return Err(StoreError::new(
                ErrorKind::BadDigest,
                format!("PUT {key} (manifest): Swift refused it: the segments are not what was sent: {text}"),
            ));
        }
        if !(200..300).contains(&status) {
            return Err(status_error("PUT", key, r));
        }
        let want = slo_etag(&d.part_md5s);
        match etag_header(&r).and_then(|e| parse_md5(&e)) {
            Some(got) if got == want => Ok(Proof::PartEtags),
            Some(got) => Err(StoreError::new(
                ErrorKind::BadDigest,
                format!(
                    "PUT {key} (manifest): Swift's ETag {} is not the one its segments give ({})",
                    hex::encode(got),
                    hex::encode(want)
                ),
            )),
            None => Err(StoreError::new(ErrorKind::Invalid, format!("PUT {key} (manifest): no ETag in the answer"))),
        }
    }

    /// The manifest of an SLO: each segment's container/name, MD5, size.
    fn manifest(&self, key: &str) -> Result<Option<Vec<Segment>>, StoreError> {
        let r = self.request("GET", key, &|a, s| {
            a.get(&format!("{}?multipart-manifest=get", self.object_url(s, &self.container, key))).call()
        })?;
        match r.status().as_u16() {
            200..=299 => {}
            404 => return Ok(None),
            _ => return Err(status_error("GET manifest", key, r)),
        }
        let raw: Vec<RawSegment> = json_body(r, 64 * 1024 * 1024).map_err(|e| {
            StoreError::new(ErrorKind::Invalid, format!("GET {key}?multipart-manifest=get: not a manifest: {e}"))
        })?;
        raw.into_iter()
            .map(|s| {
                let (container, name) = s.name.trim_start_matches('/').split_once('/').ok_or_else(|| {
                    StoreError::new(ErrorKind::Invalid, format!("{key}: manifest names segment {:?}", s.name))
                })?;
                let md5 = parse_md5(&s.hash).ok_or_else(|| {
                    StoreError::new(ErrorKind::Invalid, format!("{key}: segment {:?} has hash {:?}", s.name, s.hash))
                })?;
                Ok(Segment { container: container.to_owned(), name: name.to_owned(), md5, size: s.bytes })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// An SLO against a local file: its manifest's segments, each HEADed
    /// (the ETag Swift computed of it, its size), against the file's MD5s
    /// of the same ranges.
    fn compare_slo(&self, key: &str, info: &ObjectInfo, data: &LocalData) -> Result<Comparison, StoreError> {
        let d = &data.digest;
        let different = || {
            Comparison::Different(Difference {
                object_size: info.size,
                object_md5: None,
                local_size: d.size,
                local_md5: d.md5,
            })
        };
        if info.size != d.size {
            return Ok(different());
        }
        let Some(segments) = self.manifest(key)? else {
            return Err(StoreError::new(
                ErrorKind::NotFound,
                format!("{key}: the object vanished while being checked"),
            ));
        };
        if segments.iter().map(|s| s.size).sum::<u64>() != d.size {
            return Ok(different());
        }
        let mut offset = 0;
        for seg in &segments {
            let mut hash = Md5::new();
            data.content.for_each_chunk(offset, seg.size, |chunk| {
                hash.update(chunk);
                Ok(())
            })?;
            offset += seg.size;
            if <[u8; 16]>::from(hash.finalize()) != seg.md5 {
                return Ok(different());
            }
            let stored = self.head_in(&seg.container, &seg.name)?;
            let proven = stored.as_ref().is_some_and(|r| {
                etag_header(r).and_then(|e| parse_md5(&e)) == Some(seg.md5) && content_length(r) == seg.size
            });
            if !proven {
                log::warn!("{key}: segment {}/{} is missing or not what the manifest says", seg.container, seg.name);
                return Ok(different());
            }
        }
        Ok(Comparison::Same(Proof::PartEtags))
    }

    fn delete_plain(&self, key: &str) -> Result<(), StoreError> {
        let r = self.request("DELETE", key, &|a, s| a.delete(&self.object_url(s, &self.container, key)).call())?;
        match r.status().as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(status_error("DELETE", key, r)),
        }
    }

    /// Delete a manifest and its segments.
    fn delete_slo(&self, key: &str) -> Result<(), StoreError> {
        let r = self.request("DELETE", key, &|a, s| {
            a.delete(&format!("{}?multipart-manifest=delete", self.object_url(s, &self.container, key)))
                .header("Accept", "application/json")
                .call()
        })?;
        if !r.status().is_success() {
            return Err(status_error("DELETE", key, r));
        }
        bulk_result(key, r)
    }

    /// One bulk-delete request for `keys` (plain objects).
    fn bulk_delete(&self, keys: &[&str]) -> Result<(), StoreError> {
        let mut body = String::new();
        for key in keys {
            body.push_str(&format!("/{}/{}\n", utf8_percent_encode(&self.container, SEGMENT), encode_key(key)));
        }
        let what = format!("{} objects", keys.len());
        let r = self.request("bulk DELETE", &what, &|a, s| {
            a.post(&format!("{}?bulk-delete", s.storage_url))
                .header("Content-Type", "text/plain")
                .header("Accept", "application/json")
                .send(body.as_bytes())
        })?;
        if !r.status().is_success() {
            return Err(status_error("bulk DELETE", &what, r));
        }
        bulk_result(&what, r)
    }
}

/// How to repair a container the old `swift_media_upload` filled.
pub const ABSOLUTE_NAMES_FIX: &str = "    To fix: copy each such object to the name shown in brackets (with \
python-swiftclient: swift copy --destination /CONTAINER/NEW_NAME CONTAINER OLD_NAME), check that Synapse serves the \
media, then delete the old names; media-offload names objects by the relative path";

/// The relative path in an object name the old `swift_media_upload` gave
/// (the file's absolute local path, `/var/lib/synapse/media/local_content/ab/cd/ef`),
/// if `key` is one: the part from Synapse's top-level folder on.
pub fn absolute_named(key: &str) -> Option<&str> {
    ["local_content/", "remote_content/", "local_thumbnails/", "remote_thumbnail/"].iter().find_map(|top| {
        let at = key.find(&format!("/{top}"))? + 1;
        let relative = &key[at..];
        crate::media_store::StoredFile::parse(relative).map(|_| relative)
    })
}

/// The segment size for a file of `size` bytes, if it goes up as an SLO:
/// above the configured segment size, or above the cluster's maximum object
/// size; never more segments than a manifest may hold.
fn slo_segment_size(size: u64, configured: Option<u64>, limits: Limits) -> Option<u64> {
    let segment = match configured {
        Some(s) if s > 0 && size > s => s.min(limits.max_file_size),
        _ if size > limits.max_file_size => DEFAULT_SEGMENT_SIZE.min(limits.max_file_size),
        _ => return None,
    };
    Some(segment.max(size.div_ceil(limits.max_manifest_segments)))
}

/// `<key>/slo/<size>/<segment size>/<md5>/<index>`: python-swiftclient's
/// layout with the content's MD5 for its timestamp, so a rerun after a
/// kill finds the segments it already stored.
fn segment_name(key: &str, size: u64, segment_size: u64, md5: &[u8; 16], index: usize) -> String {
    format!("{key}/slo/{size}/{segment_size}/{}/{index:08}", hex::encode(md5))
}

/// The ETag Swift gives an SLO: the MD5 of its segments' hex MD5s.
fn slo_etag(part_md5s: &[[u8; 16]]) -> [u8; 16] {
    let mut all = Md5::new();
    for p in part_md5s {
        all.update(hex::encode(p).as_bytes());
    }
    all.finalize().into()
}

/// Each `/`-separated piece percent-encoded, the slashes kept.
fn encode_key(key: &str) -> String {
    key.split('/').map(|p| utf8_percent_encode(p, SEGMENT).to_string()).collect::<Vec<_>>().join("/")
}

/// The parts of a Keystone token answer we use.
#[derive(Deserialize)]
struct TokenAnswer {
    token: TokenBody,
}

#[derive(Deserialize)]
struct TokenBody {
    #[serde(default)]
    catalog: Vec<CatalogEntry>,
}

#[derive(Deserialize)]
struct CatalogEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    endpoints: Vec<Endpoint>,
}

#[derive(Deserialize)]
struct Endpoint {
    interface: String,
    url: String,
    region_id: Option<String>,
    region: Option<String>,
}

#[derive(Deserialize)]
struct RawSegment {
    name: String,
    hash: String,
    bytes: u64,
}

struct Segment {
    container: String,
    name: String,
    md5: [u8; 16],
    size: u64,
}

#[derive(Deserialize)]
struct ListEntry {
    name: Option<String>,
    #[serde(default)]
    bytes: u64,
    last_modified: Option<String>,
    /// A pseudo-folder (only with a delimiter, which is never sent).
    subdir: Option<String>,
}

#[derive(Deserialize)]
struct BulkAnswer {
    #[serde(rename = "Response Status")]
    status: String,
    #[serde(rename = "Errors", default)]
    errors: Vec<(String, String)>,
}

/// A bulk or manifest delete's answer: 200 even when some deletes failed.
fn bulk_result(what: &str, r: Response<ureq::Body>) -> Result<(), StoreError> {
    let answer: BulkAnswer = json_body(r, 16 * 1024 * 1024)
        .map_err(|e| StoreError::new(ErrorKind::Invalid, format!("DELETE {what}: unreadable answer: {e}")))?;
    if answer.errors.is_empty() && (answer.status.starts_with('2') || answer.status.starts_with("404")) {
        return Ok(());
    }
    let sample: Vec<String> = answer.errors.iter().take(3).map(|(name, why)| format!("{name}: {why}")).collect();
    let kind = if answer.status.starts_with("401") || answer.status.starts_with("403") {
        ErrorKind::Denied
    } else {
        ErrorKind::Transient
    };
    Err(StoreError::new(kind, format!("DELETE {what}: {} ({})", answer.status, sample.join("; "))))
}

/// A JSON answer, at most `limit` bytes of it.
fn json_body<T: serde::de::DeserializeOwned>(mut r: Response<ureq::Body>, limit: u64) -> Result<T, String> {
    let bytes = r.body_mut().with_config().limit(limit).read_to_vec().map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

fn etag_header(r: &Response<ureq::Body>) -> Option<String> {
    r.headers().get("etag").and_then(|v| v.to_str().ok()).map(|s| s.trim_matches('"').to_owned())
}

fn content_length(r: &Response<ureq::Body>) -> u64 {
    r.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn header_is_true(r: &Response<ureq::Body>, name: &str) -> bool {
    r.headers().get(name).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn retryable(status: u16) -> bool {
    matches!(status, 429 | 498 | 500 | 502 | 503 | 504)
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(200 << attempt.min(5)));
}

fn transient_io(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Io(_) | ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::Protocol(_))
}

fn transport_error(what: &str, e: &ureq::Error) -> StoreError {
    let kind = match e {
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => ErrorKind::Unreachable,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => ErrorKind::Unreachable,
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => ErrorKind::Invalid,
        _ => ErrorKind::Transient,
    };
    StoreError::new(kind, format!("{what}: {e}"))
}

/// A little of an error answer's body, for the message.
fn body_text(mut r: Response<ureq::Body>) -> String {
    let text = r.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
    let text = text.replace(['\n', '\r'], " ");
    let text = text.trim();
    let text = text.strip_prefix("<html>").unwrap_or(text);
    text.chars().take(300).collect()
}

fn status_error(op: &str, key: &str, r: Response<ureq::Body>) -> StoreError {
    let status = r.status().as_u16();
    let kind = match status {
        401 | 403 => ErrorKind::Denied,
        404 => ErrorKind::NoBucket,
        412 => ErrorKind::Exists,
        422 => ErrorKind::BadDigest,
        429 | 498 => ErrorKind::Throttled,
        500..=599 => ErrorKind::Transient,
        _ => ErrorKind::Invalid,
    };
    let reason = r.status().canonical_reason().unwrap_or("");
    let text = body_text(r);
    StoreError::new(kind, format!("{op} {key}: {status} {reason} {text}").trim_end().to_owned())
}

/// A byte range of a file, read by offset, as a request body.
struct RangeReader<'a> {
    content: &'a Content,
    at: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = ((self.end - self.at) as usize).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.content.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file got shorter while being read",
            ));
        }
        self.at += n as u64;
        Ok(n)
    }
}

fn parse_modified(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

impl ObjectStore for SwiftStore {
    fn describe(&self) -> String {
        format!("swift://{} ({})", self.container, self.settings.source)
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let Some(r) = self.head_in(&self.container, key)? else { return Ok(None) };
        // An SLO's (or DLO's) ETag is not its content's MD5.
        let slo = header_is_true(&r, "x-static-large-object");
        if slo {
            self.slos_seen.lock().expect("SLO set").insert(key.to_owned());
        }
        let large = slo || r.headers().contains_key("x-object-manifest");
        let etag = match etag_header(&r) {
            Some(e) if !large => super::parse_etag(&e),
            _ => Etag::Opaque,
        };
        Ok(Some(ObjectInfo { size: content_length(&r), etag, storage_class: None, readable: true }))
    }

    fn compare(&self, key: &str, info: &ObjectInfo, data: &LocalData) -> Result<Comparison, StoreError> {
        // A large object: proven by its manifest and segments, not its ETag.
        if self.slos_seen.lock().expect("SLO set").contains(key) {
            return self.compare_slo(key, info, data);
        }
        super::compare_existing(self, key, info, data)
    }

    fn put(&self, key: &str, data: &LocalData) -> Result<Option<Proof>, StoreError> {
        // An SLO being replaced (HEAD saw it) leaves its segments behind
        // unless they go once the new object is in place.
        let old = match self.slos_seen.lock().expect("SLO set").remove(key) {
            true => self.manifest(key)?.unwrap_or_default(),
            false => Vec::new(),
        };
        let proof = if data.digest.part_md5s.is_empty() {
            self.put_plain(key, data, false)?;
            // In-memory content only: the second PUT then sends the very
            // bytes the first one proved, whatever happens to the file.
            if matches!(data.content, Content::Bytes(_)) && self.refuses_overwrite.get().is_none() {
                self.probe_conditional_put(key, data);
            }
            Proof::Etag
        } else {
            self.put_slo(key, data)?
        };
        let d = &data.digest;
        let kept: Vec<String> =
            (0..d.part_md5s.len()).map(|i| segment_name(key, d.size, d.part_size, &d.md5, i)).collect();
        for seg in old.iter().filter(|s| s.container != self.segments || !kept.contains(&s.name)) {
            let r = self
                .request("DELETE", &seg.name, &|a, s| a.delete(&self.object_url(s, &seg.container, &seg.name)).call());
            if let Err(e) = r {
                log::warn!("{key}: could not delete the replaced segment {}/{}: {e}", seg.container, seg.name);
            }
        }
        Ok(Some(proof))
    }

    fn put_if_absent(&self, key: &str, data: &LocalData) -> Result<Option<PutIfAbsent>, StoreError> {
        // Plain objects only: an SLO (its segments, then its manifest) goes
        // the HEAD way, which also finds an SLO being replaced.
        if !data.digest.part_md5s.is_empty() || !self.refuses_overwrite.get().copied().unwrap_or(false) {
            return Ok(None);
        }
        match self.put_plain(key, data, true) {
            Ok(()) => Ok(Some(PutIfAbsent::Stored(Some(Proof::Etag)))),
            Err(e) if e.kind == ErrorKind::Exists => Ok(Some(PutIfAbsent::Exists)),
            Err(e) => Err(e),
        }
    }

    fn read_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<bool, StoreError> {
        if len == 0 {
            return Ok(self.head(key)?.is_some());
        }
        self.get(key, super::http_range(offset, len), sink)
    }

    fn list(&self, prefix: &str, each: &mut dyn FnMut(Listed) -> Result<(), StoreError>) -> Result<(), StoreError> {
        let mut marker = String::new();
        loop {
            let limit = PAGE.to_string();
            let r = self.request("LIST", prefix, &|a, s| {
                a.get(&self.container_url(s, &self.container))
                    .query("format", "json")
                    .query("prefix", prefix)
                    .query("marker", &marker)
                    .query("limit", &limit)
                    .call()
            })?;
            if r.status() == 404 {
                return Err(StoreError::new(
                    ErrorKind::NoBucket,
                    format!("container {:?} does not exist", self.container),
                ));
            }
            if !r.status().is_success() {
                return Err(status_error("LIST", prefix, r));
            }
            let page: Vec<ListEntry> = json_body(r, 256 * 1024 * 1024).map_err(|e| {
                StoreError::new(ErrorKind::Invalid, format!("LIST {prefix:?}: unreadable listing: {e}"))
            })?;
            let Some(last) = page.iter().rev().find_map(|e| e.name.clone().or_else(|| e.subdir.clone())) else {
                return Ok(());
            };
            for entry in page {
                let Some(key) = entry.name else { continue };
                let modified = entry.last_modified.as_deref().and_then(parse_modified);
                each(Listed { key, size: entry.bytes, modified })?;
            }
            marker = last;
        }
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        if !self.segments_container_exists()? {
            return self.delete_plain(key);
        }
        match self.head_in(&self.container, key)? {
            None => Ok(()),
            Some(r) if header_is_true(&r, "x-static-large-object") => self.delete_slo(key),
            Some(_) => self.delete_plain(key),
        }
    }

    fn delete_many(&self, keys: &[&str]) -> Vec<(String, StoreError)> {
        let Some(batch) = self.limits.max_deletes else {
            return super::delete_each(self, keys);
        };
        // SLOs need their segments deleted too: those one by one.
        let (mut plain, mut failed) = (Vec::with_capacity(keys.len()), Vec::new());
        match self.segments_container_exists() {
            Ok(false) => plain.extend_from_slice(keys),
            Ok(true) => {
                for key in keys {
                    match self.head_in(&self.container, key) {
                        Ok(None) => {}
                        Ok(Some(r)) if header_is_true(&r, "x-static-large-object") => {
                            if let Err(e) = self.delete_slo(key) {
                                failed.push(((*key).to_owned(), e));
                            }
                        }
                        Ok(Some(_)) => plain.push(*key),
                        Err(e) => failed.push(((*key).to_owned(), e)),
                    }
                }
            }
            Err(e) => return keys.iter().map(|k| ((*k).to_owned(), e.clone())).collect(),
        }
        for chunk in plain.chunks(batch) {
            if let Err(e) = self.bulk_delete(chunk) {
                log::debug!("bulk delete failed ({e}); deleting one by one");
                failed.extend(super::delete_each(self, chunk));
            }
        }
        failed
    }

    fn part_size(&self, size: u64) -> Option<u64> {
        self.segment_size_for(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_segment_by_segment() {
        assert_eq!(encode_key("local_content/ab/cd/ef"), "local_content/ab/cd/ef");
        assert_eq!(encode_key("p x/a?b#c/%"), "p%20x/a%3Fb%23c/%25");
        assert_eq!(encode_key("remote_content/m.org/ab/cd/é"), "remote_content/m.org/ab/cd/%C3%A9");
    }

    #[test]
    fn slo_above_the_configured_size_or_the_cluster_maximum() {
        const MIB: u64 = 1024 * 1024;
        let limits = Limits { max_file_size: 100 * MIB, max_manifest_segments: 10, max_deletes: None };
        assert_eq!(slo_segment_size(5 * MIB, None, limits), None);
        assert_eq!(slo_segment_size(5 * MIB, Some(MIB), limits), Some(MIB));
        assert_eq!(slo_segment_size(MIB, Some(MIB), limits), None, "exactly one segment's size is one object");
        // Above the maximum: segments of at most the maximum.
        assert_eq!(slo_segment_size(150 * MIB, None, limits), Some(100 * MIB));
        // Never more segments than a manifest holds.
        assert_eq!(slo_segment_size(50 * MIB, Some(MIB), limits), Some(5 * MIB));
    }

    #[test]
    fn slo_etag_is_the_md5_of_the_hex_segment_md5s() {
        let parts = [[1u8; 16], [2u8; 16]];
        let want: [u8; 16] =
            Md5::digest(format!("{}{}", hex::encode([1u8; 16]), hex::encode([2u8; 16])).as_bytes()).into();
        assert_eq!(slo_etag(&parts), want);
    }

    #[test]
    fn the_key_is_never_shown() {
        let auth =
            SwiftAuth::V1 { auth_url: "http://x/auth/v1.0".into(), user: "a:b".into(), key: Secret("hunter2".into()) };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn names_the_old_script_gave_are_recognised() {
        assert_eq!(
            absolute_named("/var/lib/synapse/media/local_content/ab/cd/efghijklmnop"),
            Some("local_content/ab/cd/efghijklmnop")
        );
        assert_eq!(
            absolute_named("srv/media/remote_content/m.org/ab/cd/efgh"),
            Some("remote_content/m.org/ab/cd/efgh")
        );
        assert_eq!(absolute_named("local_content/ab/cd/efgh"), None, "the right name is not a finding");
        assert_eq!(absolute_named("backup/notes.txt"), None);
    }

    #[test]
    fn listing_dates_parse() {
        assert!(parse_modified("2026-12-02T01:03:35.663910").is_some());
    }
}
