//! Who is calling and whether they may: the check every `/v2` request passes before it
//! touches storage, and the `WWW-Authenticate` challenges that start docker's token flow.
//!
//! Callers present a bearer token from `/token` (what docker, podman and containerd do),
//! Basic credentials directly (curl, scripts), or nothing. Berth runs *open* (everyone may
//! do everything) only when configured to allow it and no account exists yet.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use base64::Engine;
use berth_oci::{ErrorCode, RepoName};
use berth_registry::access::{Account, Action, Actions, Principal};
use berth_registry::accounts::{Accounts, MAX_CREDENTIAL_LEN};
use berth_registry::events::{Event, EventBuffer, EventKind};

use crate::error::ApiError;
use crate::ratelimit::RateLimits;
use crate::token::{TokenClaims, TokenKeys};

/// Longest `User-Agent` kept in the tag history.
const MAX_USER_AGENT: usize = 256;

/// How long a Basic credential check is remembered, so curl loops do not pay argon2 each time.
const BASIC_CACHE_TTL: Duration = Duration::from_secs(60);
/// How long "this token's account is still active" is remembered: a revoked account's
/// tokens stop working within this time.
const ACTIVE_CACHE_TTL: Duration = Duration::from_secs(5);

/// Settings of authentication, from the configuration.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// The `service` of tokens (their audience) and challenges.
    pub service: String,
    /// The token endpoint URL clients are sent to; derived from the request's Host when unset.
    pub realm: Option<String>,
    /// Lifetime of access tokens.
    pub token_lifetime: Duration,
    /// Lifetime of refresh tokens (docker's stored login).
    pub refresh_lifetime: Duration,
    /// Whether berth may run open while no account exists (loopback and not `required`).
    pub allow_open: bool,
    /// Whether berth serves HTTPS: a realm derived from the Host header is then `https://…`.
    pub tls: bool,
}

/// What a request needs, decided from its endpoint and method alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Required {
    /// Any authenticated caller (`GET /v2/`).
    Authenticated,
    /// The repository listing; results are filtered per caller.
    Catalog,
    /// One action on one repository.
    Repo(RepoName, Action),
}

/// Whose view of the catalog a listing is filtered by.
pub enum Lister {
    /// Open mode: every repository is visible.
    Everything,
    /// Repositories this principal may pull.
    Principal(Principal),
}

/// The caller of one request, once identified.
#[derive(Clone, Debug)]
pub enum Caller {
    /// Open mode: no accounts exist and berth was allowed to run open.
    Open,
    /// A verified bearer token: exactly the access it carries (shared with the cache of
    /// verified tokens, so a request clones no claims).
    Token(Arc<TokenClaims>),
    /// Verified Basic credentials.
    Account(Account),
    /// No credentials.
    Anonymous,
}

impl Caller {
    /// Whether the caller presented valid credentials (or none are needed).
    fn authenticated(&self) -> bool {
        match self {
            Caller::Open | Caller::Account(_) => true,
            Caller::Token(c) => !c.sub.is_empty(),
            Caller::Anonymous => false,
        }
    }
}

/// One worker thread's most recently checked bearer token. A client sends the same token
/// on every request, so most requests skip hashing the token and both caches.
struct LastToken {
    auth: u64,
    generation: u64,
    token: String,
    claims: Arc<TokenClaims>,
    checked: std::time::Instant,
}

thread_local! {
    static LAST_TOKEN: std::cell::RefCell<Option<LastToken>> = const { std::cell::RefCell::new(None) };
}

/// Source of [`Auth`] instance ids.
static NEXT_AUTH_ID: AtomicU64 = AtomicU64::new(1);

/// Authentication state shared by every request.
pub struct Auth {
    /// Where failed logins are reported: the registry's event buffer, attached by
    /// [`crate::router`].
    events: std::sync::OnceLock<Arc<EventBuffer>>,
    accounts: Arc<Accounts>,
    keys: TokenKeys,
    settings: AuthSettings,
    open: AtomicBool,
    basic_cache: moka::sync::Cache<[u8; 32], Account>,
    /// Verified tokens by hash: an ES256 check costs far more than the rest of a manifest GET.
    token_cache: moka::sync::Cache<[u8; 32], Arc<TokenClaims>>,
    active_cache: moka::sync::Cache<String, bool>,
    /// Distinguishes this instance in the per-thread token memo.
    id: u64,
    /// Bumped by [`Auth::forget_credentials`]; older per-thread memos are ignored.
    generation: AtomicU64,
    limits: Arc<RateLimits>,
}

impl Auth {
    /// Sets up authentication; open mode holds when allowed and no account exists yet.
    pub async fn new(
        accounts: Arc<Accounts>,
        keys: TokenKeys,
        settings: AuthSettings,
        limits: Arc<RateLimits>,
    ) -> Result<Auth, berth_registry::RegistryError> {
        let open = settings.allow_open && !accounts.any().await?;
        Ok(Auth {
            events: std::sync::OnceLock::new(),
            accounts,
            keys,
            open: AtomicBool::new(open),
            basic_cache: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(BASIC_CACHE_TTL)
                .build(),
            token_cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(settings.token_lifetime)
                .build(),
            active_cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ACTIVE_CACHE_TTL)
                .build(),
            id: NEXT_AUTH_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
            settings,
            limits,
        })
    }

    /// Whether berth currently runs open.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// Ends open mode (an account was just created).
    pub fn close(&self) {
        self.open.store(false, Ordering::Relaxed);
    }

    /// The account service behind this.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// The token keys.
    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    /// The settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Pull limits, failed-login lockouts and the client address of a request.
    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Identifies the caller from the `Authorization` header. Presented credentials that
    /// do not verify are an error (never a silent fall-back to anonymous).
    pub async fn caller(&self, parts: &Parts) -> Result<Caller, ApiError> {
        if self.is_open() {
            return Ok(Caller::Open);
        }
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        let value = value
            .to_str()
            .map_err(|_| self.unauthorized(parts, None, "the Authorization header is not ASCII"))?;
        if let Some(token) = strip_scheme(value, "bearer") {
            let token = token.trim();
            if let Some(claims) = self.recent_token(token) {
                return Ok(Caller::Token(claims));
            }
            let claims = self.verify_cached(token).map_err(|e| {
                self.unauthorized(
                    parts,
                    Some("invalid_token"),
                    &format!("bearer token refused: {e}"),
                )
            })?;
            if !claims.sub.is_empty() && !self.active(&claims.sub).await? {
                return Err(self.unauthorized(
                    parts,
                    Some("invalid_token"),
                    "the account of this token was revoked or has expired",
                ));
            }
            self.remember_token(token, &claims);
            return Ok(Caller::Token(claims));
        }
        if let Some(encoded) = strip_scheme(value, "basic") {
            let (user, password) = decode_basic(encoded.trim())
                .ok_or_else(|| self.unauthorized(parts, None, "malformed Basic credentials"))?;
            let client = self.limits.client_ip(parts);
            return match self.basic(&user, &password, client).await? {
                Some(account) => Ok(Caller::Account(account)),
                None => Err(self.unauthorized(parts, None, "invalid username or password")),
            };
        }
        Err(self.unauthorized(
            parts,
            None,
            "unsupported Authorization scheme; use Bearer (from the token endpoint) or Basic",
        ))
    }

    /// The claims of `token` if this worker thread verified it (and its account) moments
    /// ago and no credentials were forgotten since.
    fn recent_token(&self, token: &str) -> Option<Arc<TokenClaims>> {
        let now = berth_registry::service::unix_now().max(0) as u64;
        let generation = self.generation.load(Ordering::Relaxed);
        LAST_TOKEN.with_borrow(|last| match last {
            Some(l)
                if l.auth == self.id
                    && l.generation == generation
                    && l.claims.exp > now
                    && l.checked.elapsed() < ACTIVE_CACHE_TTL
                    && l.token == token =>
            {
                Some(l.claims.clone())
            }
            _ => None,
        })
    }

    /// Remembers a fully checked token as this worker thread's most recent one.
    fn remember_token(&self, token: &str, claims: &Arc<TokenClaims>) {
        let entry = LastToken {
            auth: self.id,
            generation: self.generation.load(Ordering::Relaxed),
            token: token.to_owned(),
            claims: claims.clone(),
            checked: std::time::Instant::now(),
        };
        LAST_TOKEN.with_borrow_mut(|last| *last = Some(entry));
    }

    /// Verifies a bearer token, remembering verified ones until they expire.
    fn verify_cached(&self, token: &str) -> Result<Arc<TokenClaims>, crate::token::TokenError> {
        let key = sha256(token.as_bytes());
        let now = berth_registry::service::unix_now().max(0) as u64;
        if let Some(claims) = self.token_cache.get(&key)
            && claims.exp > now
        {
            return Ok(claims);
        }
        let claims = self.keys.verify(token, &self.settings.service)?;
        let claims = Arc::new(claims);
        self.token_cache.insert(key, claims.clone());
        Ok(claims)
    }

    /// Whether the named account exists and is neither revoked nor expired (cached briefly).
    async fn active(&self, name: &str) -> Result<bool, ApiError> {
        if let Some(active) = self.active_cache.get(name) {
            return Ok(active);
        }
        let now = berth_registry::service::unix_now();
        let active = self
            .accounts
            .get(name)
            .await?
            .is_some_and(|r| r.active_at(now));
        self.active_cache.insert(name.to_owned(), active);
        Ok(active)
    }

    /// Forgets remembered credential checks (after a revocation or a password change).
    pub fn forget_credentials(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.basic_cache.invalidate_all();
        self.active_cache.invalidate_all();
    }

    /// Checks Basic credentials from `client`, remembering a success for a minute. While
    /// the client address or the account name is locked out after repeated failures, the
    /// attempt is refused (429) without checking the password; a failure's answer is
    /// held back a little longer with each failure before it.
    pub async fn basic(
        &self,
        user: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<Option<Account>, ApiError> {
        self.limits.login_allowed(client, user, Instant::now())?;
        if user.len() > MAX_CREDENTIAL_LEN || password.len() > MAX_CREDENTIAL_LEN {
            self.login_failed(user, client, "credentials longer than berth accepts");
            return Ok(None);
        }
        let key = credential_key(user, password);
        if let Some(account) = self.basic_cache.get(&key) {
            return Ok(Some(account));
        }
        let account = self.accounts.authenticate(user, password).await?;
        match &account {
            Some(a) => self.basic_cache.insert(key, a.clone()),
            None => {
                self.login_failed(
                    user,
                    client,
                    "unknown account, wrong secret, or revoked or expired",
                );
                let delay = self.limits.login_failed(client, user, Instant::now());
                tokio::time::sleep(delay).await;
            }
        }
        Ok(account)
    }

    /// [`Auth::authorize`] for the admin API, where a bearer token stands for its account:
    /// the CLI's tokens (from `berth login`) carry no repository scopes, so the account's
    /// own access decides, as it does for Basic credentials.
    pub async fn authorize_account(
        &self,
        caller: &Caller,
        need: &Required,
        parts: &Parts,
    ) -> Result<(), ApiError> {
        let (Caller::Token(claims), Required::Repo(repo, action)) = (caller, need) else {
            return self.authorize(caller, need, parts).await;
        };
        if claims.sub.is_empty() {
            return self.authorize(caller, need, parts).await;
        }
        let principal = self.principal_named(&claims.sub).await?;
        if self
            .accounts
            .allowed(&principal, repo)
            .await?
            .contains(Actions::of(*action))
        {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::Denied,
            format!(
                "{} may not do this: {} access to {repo} is required",
                claims.sub,
                action.as_str()
            ),
        ))
    }

    /// Hands failed logins to the registry's event stream from now on.
    pub fn report_to(&self, events: Arc<EventBuffer>) {
        let _ = self.events.set(events);
    }

    /// Reports a failed login (the name tried, cut to a sane length).
    fn login_failed(&self, user: &str, client: IpAddr, why: &str) {
        let Some(events) = self.events.get() else {
            return;
        };
        let actor = berth_registry::Actor {
            account: Some(user.chars().take(MAX_CREDENTIAL_LEN).collect()),
            client: Some(client.to_string()),
            user_agent: None,
        };
        let mut event = Event::new(EventKind::LoginFailed, &actor);
        event.detail = Some(why.to_owned());
        events.emit(event);
    }

    /// What the caller may do in `repo`.
    pub async fn allowed(&self, caller: &Caller, repo: &RepoName) -> Result<Actions, ApiError> {
        Ok(match caller {
            Caller::Open => Actions::ALL,
            Caller::Token(claims) => token_actions(claims, repo),
            Caller::Account(a) => {
                self.accounts
                    .allowed(&Principal::Account(a.clone()), repo)
                    .await?
            }
            Caller::Anonymous => self.accounts.allowed(&Principal::Anonymous, repo).await?,
        })
    }

    /// Whether the caller may see `repo` in the catalog (pull access).
    pub async fn can_list(&self, lister: &Lister, repo: &RepoName) -> Result<bool, ApiError> {
        let principal = match lister {
            Lister::Everything => return Ok(true),
            Lister::Principal(p) => p,
        };
        Ok(self
            .accounts
            .allowed(principal, repo)
            .await?
            .contains(Actions::PULL))
    }

    /// Who is listing, resolved once for a whole catalog page (a token's subject is looked
    /// up in the account store, which should not happen per repository).
    pub async fn lister(&self, caller: &Caller) -> Result<Lister, ApiError> {
        Ok(Lister::Principal(match caller {
            Caller::Open => return Ok(Lister::Everything),
            Caller::Account(a) => Principal::Account(a.clone()),
            Caller::Anonymous => Principal::Anonymous,
            Caller::Token(claims) => self.principal_named(&claims.sub).await?,
        }))
    }

    /// The principal a token subject names (anonymous when empty or no longer active).
    async fn principal_named(&self, name: &str) -> Result<Principal, ApiError> {
        if name.is_empty() {
            return Ok(Principal::Anonymous);
        }
        let now = berth_registry::service::unix_now();
        Ok(match self.accounts.get(name).await? {
            Some(r) if r.active_at(now) => Principal::Account(r.account()),
            _ => Principal::Anonymous,
        })
    }

    /// Who is making a change, for the tag history: account, client address, user agent.
    pub fn actor(&self, caller: &Caller, parts: &Parts) -> berth_registry::Actor {
        let account = match caller {
            Caller::Account(a) => Some(a.name.clone()),
            Caller::Token(c) if !c.sub.is_empty() => Some(c.sub.clone()),
            Caller::Open | Caller::Token(_) | Caller::Anonymous => None,
        };
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(MAX_USER_AGENT).collect());
        berth_registry::Actor {
            account,
            client: Some(self.limits.client_ip(parts).to_string()),
            user_agent,
        }
    }

    /// Refuses the request unless the caller holds what it needs.
    pub async fn authorize(
        &self,
        caller: &Caller,
        need: &Required,
        parts: &Parts,
    ) -> Result<(), ApiError> {
        let (scope, ok) = match need {
            Required::Authenticated => (None, caller.authenticated()),
            Required::Catalog => (
                Some("registry:catalog:*".to_owned()),
                caller.authenticated(),
            ),
            Required::Repo(repo, action) => {
                let have = self.allowed(caller, repo).await?;
                (
                    Some(repo_scope(repo, *action)),
                    have.contains(Actions::of(*action)),
                )
            }
        };
        if ok {
            return Ok(());
        }
        let what = match need {
            Required::Repo(repo, action) => format!("{} access to {repo}", action.as_str()),
            _ => "credentials (docker login, or a bearer token from the realm below)".to_owned(),
        };
        Err(match caller {
            // Denied with valid credentials: say so; a token holder is also challenged so
            // clients that collect scopes one at a time can ask for this one.
            Caller::Account(a) => ApiError::new(
                ErrorCode::Denied,
                format!("{} may not do this: {what} is required", a.name),
            ),
            Caller::Token(c) if !c.sub.is_empty() => ApiError::new(
                ErrorCode::Denied,
                format!("{} may not do this: {what} is required", c.sub),
            )
            .with_status(StatusCode::UNAUTHORIZED)
            .with_header(
                header::WWW_AUTHENTICATE,
                self.challenge(parts, scope.as_deref(), Some("insufficient_scope")),
            ),
            _ => ApiError::new(
                ErrorCode::Unauthorized,
                format!("authentication required: {what}"),
            )
            .with_header(
                header::WWW_AUTHENTICATE,
                self.challenge(parts, scope.as_deref(), None),
            ),
        })
    }

    /// A 401 with a challenge.
    fn unauthorized(&self, parts: &Parts, error: Option<&str>, message: &str) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
            .with_header(header::WWW_AUTHENTICATE, self.challenge(parts, None, error))
    }

    /// `Bearer realm="…",service="…"[,scope="…"][,error="…"]`.
    pub fn challenge(
        &self,
        parts: &Parts,
        scope: Option<&str>,
        error: Option<&str>,
    ) -> HeaderValue {
        let mut v = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm(parts),
            self.settings.service
        );
        if let Some(scope) = scope {
            v.push_str(&format!(",scope=\"{scope}\""));
        }
        if let Some(error) = error {
            v.push_str(&format!(",error=\"{error}\""));
        }
        crate::hv(v)
    }

    /// The token endpoint's URL: configured, or this server as the client addressed it
    /// (the Host header, or the `:authority` of an HTTP/2 request, which has no Host).
    fn realm(&self, parts: &Parts) -> String {
        if let Some(realm) = &self.settings.realm {
            return realm.clone();
        }
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .filter(|h| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
            })
            .unwrap_or("localhost");
        let scheme = if self.settings.tls { "https" } else { "http" };
        format!("{scheme}://{host}/token")
    }
}

/// `repository:<name>:<action>`.
pub fn repo_scope(repo: &RepoName, action: Action) -> String {
    let actions = match action {
        Action::Pull => "pull",
        Action::Push => "pull,push",
        Action::Delete => "delete",
    };
    format!("repository:{repo}:{actions}")
}

/// The actions a token grants on `repo`.
pub fn token_actions(claims: &TokenClaims, repo: &RepoName) -> Actions {
    claims
        .access
        .iter()
        .filter(|e| e.kind == "repository" && e.name == repo.as_str())
        .flat_map(|e| e.actions.iter())
        .filter_map(|a| Action::parse(a))
        .collect()
}

/// The credentials after an `Authorization` scheme (`Basic`, `Bearer`; any case).
pub(crate) fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// Decodes `base64(user:password)`; `None` when malformed or oversized.
pub fn decode_basic(encoded: &str) -> Option<(String, String)> {
    if encoded.len() > 4 * MAX_CREDENTIAL_LEN {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn credential_key(user: &str, password: &str) -> [u8; 32] {
    sha256(format!("{user}\0{password}").as_bytes())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode_and_refuse_garbage() {
        let enc = base64::engine::general_purpose::STANDARD.encode("ann:pa:ss");
        assert_eq!(
            decode_basic(&enc),
            Some(("ann".to_owned(), "pa:ss".to_owned()))
        );
        assert_eq!(decode_basic("!!!"), None);
        let no_colon = base64::engine::general_purpose::STANDARD.encode("ann");
        assert_eq!(decode_basic(&no_colon), None);
        let huge = base64::engine::general_purpose::STANDARD.encode("a".repeat(4096));
        assert_eq!(decode_basic(&huge), None);
    }

    #[test]
    fn schemes_match_case_insensitively() {
        assert_eq!(strip_scheme("Bearer abc", "bearer"), Some("abc"));
        assert_eq!(strip_scheme("BASIC x", "basic"), Some("x"));
        assert_eq!(strip_scheme("Digest x", "basic"), None);
        assert_eq!(strip_scheme("Bearer", "bearer"), None);
    }

    #[test]
    fn scopes_name_what_the_client_must_ask_for() {
        let repo = RepoName::parse("team/app").unwrap();
        assert_eq!(
            repo_scope(&repo, Action::Push),
            "repository:team/app:pull,push"
        );
        assert_eq!(repo_scope(&repo, Action::Pull), "repository:team/app:pull");
    }
}
