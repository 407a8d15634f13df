//! The registry HTTP client: scheme choice (plain HTTP only for loopback and listed insecure
//! registries), per-registry auth (basic, or bearer tokens per repository scope from the
//! `WWW-Authenticate` challenge), bounded retries with backoff, and a deadline per logical request
//! across its retries ([`Deadlines`], [`Budget`]). Pull and push are elsewhere.

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;

use super::auth::{parse_challenge, Challenge, Credential, DockerConfig};
use super::error::{RegistryError, Result};
use crate::model::reference::DOCKER_HUB;

/// How often and how patiently requests are retried on 5xx, 429 and connection failures, always
/// within the request's [`Deadlines`]. Requests that are not idempotent (the steps of a blob
/// upload) are not sent again blindly; the upload asks the registry where it stands instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// The first wait; doubled after every failed attempt.
    pub base_delay: Duration,
    /// No single wait (backoff or `Retry-After`) is longer than this.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 5, base_delay: Duration::from_millis(250), max_delay: Duration::from_secs(20) }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempt counts from 1): `Retry-After` when the
    /// registry sent one, else exponential backoff; capped at `max_delay` either way.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.base_delay.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        retry_after.unwrap_or(backoff).min(self.max_delay)
    }
}

/// How long a logical request may take, retries and waits included, so a hung or crawling
/// registry fails in bounded time instead of costing every attempt's full timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// A small request (manifest, config, HEAD, token, upload bookkeeping, one attempt after
    /// another): 60 s.
    pub request: Duration,
    /// A blob transfer gets [`Deadlines::request`] plus its size at this many bytes per second:
    /// 1 MiB/s.
    pub min_rate: u64,
    /// One attempt is given up (and retried while time is left) when the registry sends nothing
    /// for this long: 30 s. A request with a body gets its size at `min_rate` on top.
    pub stall: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines { request: Duration::from_secs(60), min_rate: 1 << 20, stall: Duration::from_secs(30) }
    }
}

impl Deadlines {
    /// `bytes` at [`Deadlines::min_rate`].
    pub fn at_min_rate(&self, bytes: u64) -> Duration {
        Duration::from_secs_f64(bytes as f64 / self.min_rate.max(1) as f64)
    }

    /// The deadline of a blob transfer of `size` bytes: [`Deadlines::request`] + size at
    /// [`Deadlines::min_rate`] (a 1 GiB layer: 60 s + 1024 s by default).
    pub fn transfer(&self, size: u64) -> Duration {
        self.request.saturating_add(self.at_min_rate(size))
    }
}

/// One logical request's allowance, shared by all its attempts: a deadline, and the attempts
/// made so far (counted against the [`RetryPolicy`]). Requests that are steps of a larger
/// transfer take a [`Budget::step`] of the transfer's budget.
#[derive(Debug)]
pub(crate) struct Budget {
    /// The registry the request is for and its `http(s)://host` (named when time runs out).
    registry: String,
    base: String,
    started: Instant,
    deadline: Instant,
    /// Requests sent (or, for a transfer, rounds begun) so far.
    pub attempts: u32,
    /// Digest mismatches retried so far (one is: a bit flipped in transit).
    pub mismatches: u32,
}

impl Budget {
    fn new(registry: &str, base: String, limit: Duration) -> Budget {
        let now = Instant::now();
        Budget {
            registry: registry.to_string(),
            base,
            started: now,
            deadline: now.checked_add(limit).unwrap_or(now + Duration::from_secs(86400 * 365)),
            attempts: 0,
            mismatches: 0,
        }
    }

    /// A request that is one step of this one: its own attempts, at most `limit`, and never
    /// past this deadline.
    pub fn step(&self, limit: Duration) -> Budget {
        let mut b = Budget::new(&self.registry, self.base.clone(), limit);
        b.deadline = b.deadline.min(self.deadline);
        b
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline to `limit` after the start (a download whose size became known).
    pub fn extend_to(&mut self, limit: Duration) {
        if let Some(d) = self.started.checked_add(limit) {
            self.deadline = self.deadline.max(d);
        }
    }

    /// Time left until the deadline.
    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Before another attempt after a failure: `false` when the policy's attempts are used up
    /// or the wait (backoff, or `Retry-After`) would end past the deadline; else waits and
    /// returns `true`.
    pub async fn wait_retry(&self, policy: &RetryPolicy, retry_after: Option<Duration>) -> bool {
        if self.attempts >= policy.max_attempts.max(1) {
            return false;
        }
        let wait = policy.delay(self.attempts.max(1), retry_after);
        if Instant::now() + wait >= self.deadline {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }

    /// The error when this request ran out of time while doing `what`.
    pub fn timeout(&self, what: String) -> RegistryError {
        RegistryError::Timeout {
            registry: self.registry.clone(),
            base: self.base.clone(),
            what,
            after: self.started.elapsed(),
            attempts: self.attempts.max(1),
        }
    }
}

/// Settings of a [`Client`].
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// Registries (`host` or `host:port`) reached over plain HTTP although not on loopback
    /// (`cbuild.toml`'s insecure list). Loopback registries always use plain HTTP.
    pub insecure: Vec<String>,
    /// The directory of `config.json`; `None`: `$DOCKER_CONFIG`, else `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// Credentials given directly (e.g. from flags); they win over config.json.
    pub credentials: Vec<(String, Credential)>,
    /// Retry behaviour.
    pub retry: RetryPolicy,
    /// Time limits of every logical request, its retries included.
    pub deadlines: Deadlines,
}

/// True when `registry` is reached over plain HTTP: `localhost`, `127.0.0.0/8`, `[::1]`, or listed
/// in `insecure` (by `host:port` or by host).
pub fn uses_plain_http(registry: &str, insecure: &[String]) -> bool {
    let host = host_of(registry);
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback())
        || host.trim_start_matches('[').trim_end_matches(']').parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    loopback
        || insecure.iter().any(|i| {
            let i = i.trim().to_ascii_lowercase();
            let i =
                i.strip_prefix("http://").or_else(|| i.strip_prefix("https://")).unwrap_or(&i).trim_end_matches('/');
            i.eq_ignore_ascii_case(registry) || i.eq_ignore_ascii_case(host)
        })
}

fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        registry.split_once(']').map_or(registry, |(h, _)| &registry[..h.len() + 1])
    } else {
        registry.split(':').next().unwrap_or(registry)
    }
}

/// Which repository a request is about and what it needs to do there; bearer tokens are
/// requested (and cached) per scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Scope {
    pub repository: String,
    pub push: bool,
    /// Other repositories read by the request (the source of a cross-repository mount).
    pub also_pull: Vec<String>,
}

impl Scope {
    pub fn pull(repository: &str) -> Scope {
        Scope { repository: repository.to_string(), push: false, also_pull: vec![] }
    }
    pub fn push(repository: &str) -> Scope {
        Scope { repository: repository.to_string(), push: true, also_pull: vec![] }
    }
    fn strings(&self) -> Vec<String> {
        let mut v = vec![format!("repository:{}:{}", self.repository, if self.push { "pull,push" } else { "pull" })];
        v.extend(self.also_pull.iter().map(|r| format!("repository:{r}:pull")));
        v
    }
}

/// One request, replayable (for retries and the auth round trip).
#[derive(Clone)]
pub(crate) struct Req {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// Whether sending it twice does no harm. A request that is not (a PATCH of an upload
    /// session, the PUT closing one) is sent again only when it never left (connecting failed)
    /// or the registry said it did not act (429); after a lost answer the caller asks the
    /// registry what happened.
    pub idempotent: bool,
}

impl Req {
    pub fn new(method: Method, url: Url) -> Req {
        Req { method, url, headers: HeaderMap::new(), body: None, idempotent: true }
    }
    /// Marks the request as not idempotent (see [`Req::idempotent`]).
    pub fn once(mut self) -> Req {
        self.idempotent = false;
        self
    }
    pub fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Req {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }
    pub fn body(mut self, b: Bytes) -> Req {
        self.body = Some(b);
        self
    }
}

struct Token {
    value: crate::registry::auth::Secret,
    expires: Instant,
}

struct State {
    /// Credentials looked up so far (`None`: anonymous).
    creds: HashMap<String, Option<Credential>>,
    /// What each registry's `/v2/` asked for (`None`: nothing, anonymous works).
    challenges: HashMap<String, Option<Challenge>>,
    tokens: HashMap<(String, Vec<String>), Token>,
}

struct Inner {
    http: reqwest::Client,
    opts: ClientOptions,
    config: DockerConfig,
    state: Mutex<State>,
    /// Serialises credential lookups, so a helper runs once per registry.
    lookup: tokio::sync::Mutex<()>,
}

/// A registry client. Cheap to clone (shared connection pool, credentials and tokens); safe to use
/// from many tasks. Its `Debug` names registries, never credentials.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.state.lock().unwrap();
        let mut with_creds: Vec<&String> = st.creds.iter().filter(|(_, c)| c.is_some()).map(|(r, _)| r).collect();
        with_creds.sort();
        f.debug_struct("Client")
            .field("insecure", &self.inner.opts.insecure)
            .field("registries_with_credentials", &with_creds)
            .field("retry", &self.inner.opts.retry)
            .field("deadlines", &self.inner.opts.deadlines)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Client {
    /// A client with `opts`; reads config.json now (helpers run later, once per registry, when a
    /// registry asks for credentials).
    pub fn new(opts: ClientOptions) -> Result<Client> {
        let config = DockerConfig::load(opts.docker_config_dir.as_deref())?;
        // No reqwest read/total timeout: its read timeout runs from the start of a request to the
        // answer's head, so a large upload on a slow link would time out while still sending. Each
        // attempt is bounded in `send_retrying` (stall + body at the minimum rate, never past the
        // deadline) and each read of an answer's body in `read_limited` / the blob download.
        let http = reqwest::Client::builder()
            .user_agent(concat!("cbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(opts.deadlines.stall)
            .build()
            .map_err(|source| RegistryError::Http { url: "(client setup)".into(), source })?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                opts,
                config,
                state: Mutex::new(State { creds: HashMap::new(), challenges: HashMap::new(), tokens: HashMap::new() }),
                lookup: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// The budget of a small logical request to `registry`.
    pub(crate) fn budget(&self, registry: &str) -> Budget {
        self.budget_for(registry, self.inner.opts.deadlines.request)
    }

    /// The budget of a logical request to `registry` that may take `limit`.
    pub(crate) fn budget_for(&self, registry: &str, limit: Duration) -> Budget {
        Budget::new(registry, self.base_url(registry), limit)
    }

    /// Time limits.
    pub(crate) fn deadlines(&self) -> &Deadlines {
        &self.inner.opts.deadlines
    }

    /// `http(s)://<api host>` of a registry (`docker.io` is served by `registry-1.docker.io`).
    pub fn base_url(&self, registry: &str) -> String {
        let scheme = if uses_plain_http(registry, &self.inner.opts.insecure) { "http" } else { "https" };
        let host = if registry == DOCKER_HUB { "registry-1.docker.io" } else { registry };
        format!("{scheme}://{host}")
    }

    /// `<base>/v2/<repository>/<rest>` as a URL.
    pub(crate) fn url(&self, registry: &str, repository: &str, rest: &str) -> Result<Url> {
        let s = format!("{}/v2/{repository}/{rest}", self.base_url(registry));
        Url::parse(&s).map_err(|e| RegistryError::BadResponse { url: s, reason: e.to_string() })
    }

    async fn credential(&self, registry: &str) -> Result<Option<Credential>> {
        if let Some(c) = self.inner.state.lock().unwrap().creds.get(registry) {
            return Ok(c.clone());
        }
        let _one = self.inner.lookup.lock().await;
        if let Some(c) = self.inner.state.lock().unwrap().creds.get(registry) {
            return Ok(c.clone());
        }
        let given = self.inner.opts.credentials.iter().find(|(r, _)| r == registry).map(|(_, c)| c.clone());
        let c = match given {
            Some(c) => Some(c),
            None => self.inner.config.credential(registry).await?,
        };
        self.inner.state.lock().unwrap().creds.insert(registry.to_string(), c.clone());
        Ok(c)
    }

    /// The `Authorization` value for a request, from what the registry asked for before.
    async fn authorization(&self, registry: &str, scope: &Scope, budget: &Budget) -> Result<Option<String>> {
        let challenge = self.inner.state.lock().unwrap().challenges.get(registry).cloned().flatten();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(match self.credential(registry).await? {
                Some(Credential::Basic { username, password }) => Some(basic(&username, password.expose())),
                _ => None,
            }),
            Some(Challenge::Bearer { realm, service }) => {
                let key = (registry.to_string(), scope.strings());
                if let Some(t) = self.inner.state.lock().unwrap().tokens.get(&key) {
                    if t.expires > Instant::now() {
                        return Ok(Some(format!("Bearer {}", t.value.expose())));
                    }
                }
                let token = self.fetch_token(registry, scope, &realm, service.as_deref(), budget).await?;
                let value = format!("Bearer {}", token.value.expose());
                self.inner.state.lock().unwrap().tokens.insert(key, token);
                Ok(Some(value))
            }
        }
    }

    /// The token exchange of the Docker token spec: GET with basic credentials (or none), or the
    /// OAuth2 refresh-token POST for identity tokens.
    async fn fetch_token(
        &self,
        registry: &str,
        scope: &Scope,
        realm: &str,
        service: Option<&str>,
        parent: &Budget,
    ) -> Result<Token> {
        let mut budget = parent.step(self.deadlines().request);
        let cred = self.credential(registry).await?;
        let bad_url = |reason: String| RegistryError::BadResponse { url: realm.to_string(), reason };
        let mut url = Url::parse(realm).map_err(|e| bad_url(format!("the token realm is not a URL: {e}")))?;
        let scopes = scope.strings();
        let req = match &cred {
            Some(Credential::IdentityToken(t)) => {
                let mut form = Url::parse("http://form/").expect("static URL");
                {
                    let mut q = form.query_pairs_mut();
                    q.append_pair("grant_type", "refresh_token");
                    q.append_pair("client_id", "cbuild");
                    q.append_pair("refresh_token", t.expose());
                    q.append_pair("scope", &scopes.join(" "));
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                }
                let body = form.query().unwrap_or("").to_string();
                Req::new(Method::POST, url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Bytes::from(body))
            }
            _ => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in &scopes {
                        q.append_pair("scope", s);
                    }
                }
                let mut r = Req::new(Method::GET, url.clone());
                if let Some(Credential::Basic { username, password }) = &cred {
                    r = r.header(AUTHORIZATION, &basic(username, password.expose()));
                }
                r
            }
        };
        let resp = self.send_retrying(&req, &mut budget).await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized {
                registry: registry.to_string(),
                repository: scope.repository.clone(),
                action: if scope.push { "push" } else { "pull" },
                status: status.as_u16(),
                had_credentials: cred.is_some(),
            });
        }
        if !status.is_success() {
            return Err(status_error(&Method::GET, realm, resp).await);
        }
        let body = self.read_limited(resp, 1 << 20, realm, &budget).await?;
        let ans: TokenAnswer = serde_json::from_slice(&body).map_err(|source| RegistryError::Json {
            url: realm.to_string(),
            what: "not a token answer",
            source,
        })?;
        let value = ans
            .token
            .or(ans.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad_url("the token answer has no `token`".into()))?;
        // The spec's default lifetime is 60 s; renew a little early.
        let life = ans.expires_in.unwrap_or(60).max(10) - 5;
        Ok(Token {
            value: crate::registry::auth::Secret::new(value),
            expires: Instant::now() + Duration::from_secs(life),
        })
    }

    /// Sends `req` for `scope` with auth: anonymous until the registry challenges, then with what
    /// it asked for (one more round trip after a 401, e.g. for an expired token). 401/403 become
    /// [`RegistryError::Unauthorized`]; other statuses are the caller's to judge.
    pub(crate) async fn send(&self, registry: &str, scope: &Scope, req: &Req, budget: &mut Budget) -> Result<Response> {
        let mut challenged = false;
        loop {
            let auth = self.authorization(registry, scope, budget).await?;
            let had_auth = auth.is_some();
            let mut r = req.clone();
            if let Some(a) = &auth {
                r = r.header(AUTHORIZATION, a);
            }
            let resp = self.send_retrying(&r, budget).await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let ch = resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).and_then(parse_challenge);
                {
                    let mut st = self.inner.state.lock().unwrap();
                    st.tokens.remove(&(registry.to_string(), scope.strings()));
                    st.challenges.insert(registry.to_string(), ch.clone());
                }
                // Retry when there is something new to try: a (fresh) token, or credentials that
                // were not sent yet.
                let retry = match &ch {
                    Some(Challenge::Bearer { .. }) => true,
                    Some(Challenge::Basic) => !had_auth && self.credential(registry).await?.is_some(),
                    None => false,
                };
                if retry {
                    continue;
                }
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(RegistryError::Unauthorized {
                    registry: registry.to_string(),
                    repository: scope.repository.clone(),
                    action: if scope.push { "push" } else { "pull" },
                    status: status.as_u16(),
                    had_credentials: self.credential(registry).await?.is_some(),
                });
            }
            return Ok(resp);
        }
    }

    /// One request with bounded retries within `budget`: 5xx and 429 (honouring `Retry-After`),
    /// connection failures and stalled attempts are retried with exponential backoff while the
    /// policy's attempts and the deadline allow; the last answer or error is returned. A request
    /// that is not idempotent is retried only when it never left or the registry said it did not
    /// act (429). Past the deadline: [`RegistryError::Timeout`].
    pub(crate) async fn send_retrying(&self, req: &Req, budget: &mut Budget) -> Result<Response> {
        let policy = &self.inner.opts.retry;
        let dl = &self.inner.opts.deadlines;
        let what = || format!("{} `{}`", req.method, redact_url(&req.url));
        loop {
            if budget.left().is_zero() {
                return Err(budget.timeout(what()));
            }
            let mut b = self.inner.http.request(req.method.clone(), req.url.clone()).headers(req.headers.clone());
            let mut attempt_limit = dl.stall;
            if let Some(body) = &req.body {
                b = b.body(body.clone());
                attempt_limit = attempt_limit.saturating_add(dl.at_min_rate(body.len() as u64));
            }
            budget.attempts += 1;
            let until = budget.deadline().min(Instant::now() + attempt_limit);
            let sent = tokio::time::timeout_at(until.into(), b.send()).await;
            let failure = match sent {
                Ok(Ok(r)) => {
                    let s = r.status();
                    let retryable = s == StatusCode::TOO_MANY_REQUESTS || (s.is_server_error() && req.idempotent);
                    if !retryable {
                        return Ok(r);
                    }
                    let ra = r
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    if !budget.wait_retry(policy, ra).await {
                        return Ok(r);
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    let again = if req.idempotent {
                        e.is_connect() || e.is_timeout() || e.is_request()
                    } else {
                        e.is_connect()
                    };
                    let err = RegistryError::Http { url: redact_url(&req.url), source: e.without_url() };
                    if !again {
                        return Err(err);
                    }
                    err
                }
                // Nothing came back within this attempt's limit: the deadline, or a stall.
                Err(_) if budget.left().is_zero() => return Err(budget.timeout(what())),
                Err(_) if !req.idempotent => return Err(budget.timeout(what())),
                Err(_) => budget.timeout(what()),
            };
            if !budget.wait_retry(policy, None).await {
                return Err(if budget.left().is_zero() { budget.timeout(what()) } else { failure });
            }
        }
    }

    /// Reads a whole answer within `budget`, refusing more than `limit` bytes (manifests,
    /// configs, token answers). A body cut off is [`RegistryError::Http`]; one that stalls or
    /// runs past the deadline is [`RegistryError::Timeout`].
    pub(crate) async fn read_limited(
        &self,
        resp: Response,
        limit: usize,
        url: &str,
        budget: &Budget,
    ) -> Result<Vec<u8>> {
        read_limited_until(resp, limit, url, budget.deadline(), self.deadlines().stall).await.map_err(|e| match e {
            ReadError::Other(e) => e,
            ReadError::TimedOut => budget.timeout(format!("GET `{url}` (reading its answer)")),
        })
    }

    /// Registry-wide retry policy (for callers restarting whole transfers).
    pub(crate) fn retry(&self) -> &RetryPolicy {
        &self.inner.opts.retry
    }
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

/// A URL for messages: no query (upload locations carry opaque state, token URLs carry scopes).
pub(crate) fn redact_url(u: &Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

pub(crate) enum ReadError {
    TimedOut,
    Other(RegistryError),
}

/// Reads a whole answer by `deadline`, refusing more than `limit` bytes; a read waiting longer
/// than `stall` for the next bytes gives up too.
async fn read_limited_until(
    mut resp: Response,
    limit: usize,
    url: &str,
    deadline: Instant,
    stall: Duration,
) -> std::result::Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    loop {
        let until = deadline.min(Instant::now() + stall);
        let chunk = tokio::time::timeout_at(until.into(), resp.chunk()).await.map_err(|_| ReadError::TimedOut)?;
        match chunk {
            Ok(Some(c)) => {
                if out.len() + c.len() > limit {
                    return Err(ReadError::Other(RegistryError::BadResponse {
                        url: url.to_string(),
                        reason: format!("the answer is larger than {limit} bytes"),
                    }));
                }
                out.extend_from_slice(&c);
            }
            Ok(None) => return Ok(out),
            Err(source) => {
                return Err(ReadError::Other(RegistryError::Http {
                    url: url.to_string(),
                    source: source.without_url(),
                }))
            }
        }
    }
}

#[derive(Deserialize)]
struct ErrorsDoc {
    #[serde(default)]
    errors: Vec<ErrorItem>,
}
#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// A [`RegistryError::Status`] with the registry's `errors` (code and message only, never the raw
/// body).
pub(crate) async fn status_error(method: &Method, url: &str, resp: Response) -> RegistryError {
    let status = resp.status().as_u16();
    // An error body is small; waiting long for it would only delay the error.
    let until = Instant::now() + Duration::from_secs(10);
    let detail = match read_limited_until(resp, 64 << 10, url, until, Duration::from_secs(10)).await {
        Ok(b) => serde_json::from_slice::<ErrorsDoc>(&b)
            .ok()
            .filter(|d| !d.errors.is_empty())
            .map(|d| {
                let parts: Vec<String> = d
                    .errors
                    .iter()
                    .take(3)
                    .map(|e| format!("{} {}", e.code, e.message.chars().take(200).collect::<String>()))
                    .collect();
                format!(": {}", parts.join("; "))
            })
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    RegistryError::Status { method: method.to_string(), url: url.to_string(), status, detail }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn plain_http_only_for_loopback_and_listed() {
        let none: Vec<String> = vec![];
        for r in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "[::1]"] {
            assert!(uses_plain_http(r, &none), "{r}");
        }
        for r in ["docker.io", "10.0.0.1:5000", "localhost.example.com", "[::2]:5000", "128.0.0.1"] {
            assert!(!uses_plain_http(r, &none), "{r}");
        }
        let insecure = vec!["reg.lan:5000".to_string(), "http://other.lan/".to_string()];
        assert!(uses_plain_http("reg.lan:5000", &insecure));
        assert!(!uses_plain_http("reg.lan:5001", &insecure));
        assert!(uses_plain_http("other.lan", &insecure));
        assert!(uses_plain_http("other.lan:8080", &insecure));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p =
            RetryPolicy { max_attempts: 5, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        assert_eq!(p.delay(1, None), Duration::from_millis(100));
        assert_eq!(p.delay(2, None), Duration::from_millis(200));
        assert_eq!(p.delay(4, None), Duration::from_millis(800));
        assert_eq!(p.delay(5, None), Duration::from_secs(1));
        assert_eq!(p.delay(40, None), Duration::from_secs(1));
        assert_eq!(p.delay(1, Some(Duration::from_millis(300))), Duration::from_millis(300));
        assert_eq!(p.delay(1, Some(Duration::from_secs(3600))), Duration::from_secs(1));
    }

    #[test]
    fn scopes_and_urls() {
        let mut s = Scope::push("team/app");
        s.also_pull.push("base/run".into());
        assert_eq!(s.strings(), vec!["repository:team/app:pull,push", "repository:base/run:pull"]);
        let c = Client::new(ClientOptions { docker_config_dir: Some("/nonexistent".into()), ..Default::default() })
            .unwrap();
        assert_eq!(c.base_url("docker.io"), "https://registry-1.docker.io");
        assert_eq!(c.base_url("127.0.0.1:5000"), "http://127.0.0.1:5000");
        let u = Url::parse("http://u:pw@h/v2/x/blobs/uploads/abc?_state=s3cret&digest=x").unwrap();
        assert_eq!(redact_url(&u), "http://h/v2/x/blobs/uploads/abc");
    }

    /// A one-shot HTTP server on loopback answering each connection with the next canned answer.
    async fn serve(answers: Vec<&'static str>) -> (String, tokio::task::JoinHandle<usize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let mut n = 0;
            for a in answers {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                n += 1;
                if a.is_empty() {
                    continue; // drop the connection: a reset
                }
                s.write_all(a.as_bytes()).await.unwrap();
                let _ = s.shutdown().await;
            }
            n
        });
        (format!("http://{addr}/v2/"), h)
    }

    /// A loopback HTTP server answering each connection's request with `answer(request text)`.
    async fn serve_fn(
        n: usize,
        answer: impl Fn(&str, &str) -> String + Send + 'static,
    ) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let b = base.clone();
        let h = tokio::spawn(async move {
            let mut seen = vec![];
            for _ in 0..n {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 8192];
                let k = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..k]).to_string();
                s.write_all(answer(&req, &b).as_bytes()).await.unwrap();
                let _ = s.shutdown().await;
                seen.push(req);
            }
            seen
        });
        (base, h)
    }

    #[tokio::test]
    async fn bearer_flow_gets_a_scoped_token_with_basic_credentials_and_reuses_it() {
        let (base, h) = serve_fn(4, |req, base| {
            let line = req.lines().next().unwrap_or("").to_string();
            let auth = req
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                .map(|l| l.split_once(':').unwrap().1.trim().to_string());
            let reply = |status: &str, extra: &str, body: &str| {
                format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            };
            if line.starts_with("GET /token?") {
                assert!(line.contains("service=test-registry"), "{line}");
                assert!(line.contains("scope=repository%3Ateam%2Fapp%3Apull"), "{line}");
                assert_eq!(auth.as_deref(), Some("Basic dTpwdw=="), "basic creds to the token service");
                reply("200 OK", "", r#"{"token":"tok-123","expires_in":300}"#)
            } else if auth.as_deref() == Some("Bearer tok-123") {
                reply("200 OK", "", "{}")
            } else {
                let ch = format!(
                    "WWW-Authenticate: Bearer realm=\"{base}/token\",service=\"test-registry\",scope=\"repository:team/app:pull\"\r\n"
                );
                reply("401 Unauthorized", &ch, "")
            }
        })
        .await;
        let host = base.strip_prefix("http://").unwrap().to_string();
        let o = ClientOptions {
            credentials: vec![(
                host.clone(),
                Credential::Basic { username: "u".into(), password: crate::registry::auth::Secret::new("pw") },
            )],
            ..fast()
        };
        let c = Client::new(o).unwrap();
        let scope = Scope::pull("team/app");
        for _ in 0..2 {
            let url = c.url(&host, "team/app", "manifests/1").unwrap();
            let r = c.send(&host, &scope, &Req::new(Method::GET, url), &mut c.budget(&host)).await.unwrap();
            assert_eq!(r.status(), 200);
        }
        let seen = h.await.unwrap();
        let lines: Vec<&str> = seen.iter().map(|r| r.lines().next().unwrap()).collect();
        assert!(lines[0].starts_with("GET /v2/team/app/manifests/1"), "{lines:?}");
        assert!(lines[1].starts_with("GET /token?"), "{lines:?}");
        assert!(lines[2].starts_with("GET /v2/team/app/manifests/1"), "{lines:?}");
        assert!(lines[3].starts_with("GET /v2/team/app/manifests/1"), "token reused: {lines:?}");
    }

    #[tokio::test]
    async fn garbage_json_and_lying_digest_headers_are_named() {
        let wrong = crate::model::digest::Digest::of_bytes(b"other");
        // garbage once; the lying answer twice (a mismatch is fetched again once, then refused)
        let (base, h) = serve_fn(3, move |req, _| {
            let (body, extra) = if req.contains("/manifests/garbage") {
                ("not json{".to_string(), String::new())
            } else {
                ("{}".to_string(), format!("Docker-Content-Digest: {wrong}\r\n"))
            };
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n{extra}\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        })
        .await;
        let host = base.strip_prefix("http://").unwrap();
        let c = Client::new(fast()).unwrap();
        let r = crate::registry::Reference::parse(&format!("{host}/team/app:garbage")).unwrap();
        let e = c.fetch_manifest(&r).await.unwrap_err();
        assert!(matches!(e, RegistryError::Json { .. }), "{e:?}");
        assert!(e.to_string().contains(&format!("`{base}/v2/team/app/manifests/garbage`")), "{e}");
        let r = crate::registry::Reference::parse(&format!("{host}/team/app:lying")).unwrap();
        let e = c.fetch_manifest(&r).await.unwrap_err().to_string();
        assert!(e.contains("Docker-Content-Digest") && e.contains("refused"), "{e}");
        let seen = h.await.unwrap();
        assert_eq!(seen.iter().filter(|r| r.contains("/manifests/lying")).count(), 2, "{seen:?}");
    }

    fn fast() -> ClientOptions {
        ClientOptions {
            docker_config_dir: Some("/nonexistent".into()),
            retry: RetryPolicy {
                max_attempts: 4,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(50),
            },
            ..Default::default()
        }
    }

    fn budget(c: &Client) -> Budget {
        c.budget("test-registry")
    }

    #[tokio::test]
    async fn retries_5xx_429_and_resets_then_succeeds() {
        let (url, h) = serve(vec![
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            "",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        ])
        .await;
        let c = Client::new(fast()).unwrap();
        let r = c.send_retrying(&Req::new(Method::GET, Url::parse(&url).unwrap()), &mut budget(&c)).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(h.await.unwrap(), 4);
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let a = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let (url, h) = serve(vec![a, a, a, a]).await;
        let c = Client::new(fast()).unwrap();
        let r = c.send_retrying(&Req::new(Method::GET, Url::parse(&url).unwrap()), &mut budget(&c)).await.unwrap();
        assert_eq!(r.status(), 500);
        assert_eq!(h.await.unwrap(), 4, "exactly max_attempts requests");
    }

    /// A PATCH whose connection drops after it was sent may have been applied: it is not sent
    /// again (the upload asks the registry instead); a 5xx is the caller's to judge too.
    #[tokio::test]
    async fn a_request_that_is_not_idempotent_is_not_resent_after_it_left() {
        let (url, h) = serve(vec![""]).await;
        let c = Client::new(fast()).unwrap();
        let req = Req::new(Method::PATCH, Url::parse(&url).unwrap()).body(Bytes::from_static(b"chunk")).once();
        let e = c.send_retrying(&req, &mut budget(&c)).await.unwrap_err();
        assert!(matches!(e, RegistryError::Http { .. }), "{e:?}");
        assert_eq!(h.await.unwrap(), 1, "sent once");

        let (url, h) =
            serve(vec!["HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"]).await;
        let req = Req::new(Method::PATCH, Url::parse(&url).unwrap()).body(Bytes::from_static(b"chunk")).once();
        assert_eq!(c.send_retrying(&req, &mut budget(&c)).await.unwrap().status(), 503);
        assert_eq!(h.await.unwrap(), 1, "sent once");
    }

    /// A registry that accepts connections and never answers costs the deadline, not
    /// attempts × a long read timeout; the error names the registry and says what to check.
    #[tokio::test]
    async fn a_hung_registry_fails_at_the_deadline_naming_it() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v2/", l.local_addr().unwrap());
        let _hold = tokio::spawn(async move {
            let mut conns = vec![];
            while let Ok((s, _)) = l.accept().await {
                conns.push(s);
            }
        });
        let mut o = fast();
        o.retry.max_attempts = 50;
        o.deadlines =
            Deadlines { request: Duration::from_millis(600), stall: Duration::from_millis(200), ..Default::default() };
        let c = Client::new(o).unwrap();
        let t = Instant::now();
        let e = c.send_retrying(&Req::new(Method::GET, Url::parse(&url).unwrap()), &mut budget(&c)).await.unwrap_err();
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(550) && took < Duration::from_millis(900), "{took:?}");
        let RegistryError::Timeout { attempts, .. } = &e else { panic!("{e:?}") };
        assert!(*attempts >= 2, "stalled attempts are retried within the deadline: {attempts}");
        let msg = e.to_string();
        assert!(
            msg.contains("registry `test-registry`") && msg.contains("GET `http://") && msg.contains("hint:"),
            "{msg}"
        );
    }

    /// No wait (backoff or `Retry-After`) runs past the deadline: the answer is returned at once.
    #[tokio::test]
    async fn retry_after_beyond_the_deadline_is_not_waited_for() {
        let (url, h) = serve(vec![
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 30\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ])
        .await;
        let mut o = fast();
        o.retry.max_delay = Duration::from_secs(60);
        o.deadlines.request = Duration::from_secs(5);
        let c = Client::new(o).unwrap();
        let t = Instant::now();
        let r = c.send_retrying(&Req::new(Method::GET, Url::parse(&url).unwrap()), &mut budget(&c)).await.unwrap();
        assert_eq!(r.status(), 429);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert_eq!(h.await.unwrap(), 1);
    }
}
