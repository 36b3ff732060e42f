//! Rate limits: pulls (manifest GETs; HEAD is free) per anonymous client address and per
//! account, each a keyed GCRA limiter, and the lockout that slows down and then stops
//! password guessing per client address and per account name.
//!
//! A limit of `N/window` lets a client make N pulls at once and gives one back every
//! `window / N`, so N per window on average. Nothing here changes on a refused request.

use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use berth_oci::{ErrorCode, RepoName};
use berth_registry::access::{Role, namespace_of};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use serde::{Serialize, Serializer};

use crate::ClientAddr;
use crate::auth::{Auth, Caller};
use crate::error::ApiError;

/// `RateLimit-Limit: N;w=<window seconds>` on every counted response.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining: n;w=<window seconds>` on every counted response.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// The header a trusted reverse proxy appends the client address to.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Failed logins for one account name within [`LOGIN_WINDOW`] that lock it out.
pub const ACCOUNT_FAILURE_LIMIT: u32 = 5;
/// Failed logins from one client address within [`LOGIN_WINDOW`] that lock it out (higher
/// than per account: many people may share one NAT address).
pub const ADDRESS_FAILURE_LIMIT: u32 = 20;
/// The window failed logins are counted in.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// How long a lockout lasts.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Extra delay of a failed login's answer per failure before it (capped at one second).
const SLOWDOWN_STEP: Duration = Duration::from_millis(250);
/// Longest delay of a failed login's answer.
const SLOWDOWN_MAX: Duration = Duration::from_secs(1);
/// Most addresses and names whose failed logins are remembered.
const LOGIN_MEMORY: u64 = 100_000;
/// Stale limiter keys are dropped once every this many counted pulls.
const RETAIN_EVERY: u64 = 4096;
/// How long "this account holds an unlimited role in this namespace" is remembered.
const ROLE_CACHE_TTL: Duration = Duration::from_secs(5);

/// A limit of `count` per `window`, written `N/<duration>` (`100/6h`; units s, m, h, d).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// How many counted requests fit in one window (also the burst).
    pub count: NonZeroU32,
    /// The window.
    pub window: Duration,
}

impl Rate {
    /// Parses `N/<number><unit>`, e.g. `100/6h`, `2/30s`.
    pub fn parse(s: &str) -> Result<Rate, String> {
        let usage = "write it as N/<duration> with a unit of s, m, h or d, e.g. \"100/6h\"";
        let (n, window) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a rate: {usage}"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: {:?} is not a whole number; {usage}", n.trim()))?;
        let count = NonZeroU32::new(count).ok_or_else(|| {
            format!("{s:?}: the count must be at least 1 (leave the key out for no limit)")
        })?;
        let window = window.trim();
        let split = window.len().saturating_sub(1);
        let (amount, unit) = (window.get(..split).unwrap_or(""), window.get(split..));
        let unit_secs = match unit {
            Some("s") => 1,
            Some("m") => 60,
            Some("h") => 3600,
            Some("d") => 86_400,
            _ => {
                return Err(format!(
                    "{s:?}: the window {window:?} must end in a unit s, m, h or d, e.g. \"100/6h\""
                ));
            }
        };
        let amount: u64 = amount
            .parse()
            .map_err(|_| format!("{s:?}: {window:?} is not a duration; {usage}"))?;
        let secs = amount
            .checked_mul(unit_secs)
            .filter(|&secs| secs > 0 && secs <= 366 * 86_400)
            .ok_or_else(|| format!("{s:?}: the window must be between 1s and 366d"))?;
        let rate = Rate {
            count,
            window: Duration::from_secs(secs),
        };
        rate.quota()
            .map(|_| rate)
            .ok_or_else(|| format!("{s:?}: {count} per {window} is too many to count"))
    }

    /// The window in whole seconds (the `w=` of the headers).
    pub fn window_secs(&self) -> u64 {
        self.window.as_secs()
    }

    /// The GCRA quota: a burst of `count`, one back every `window / count`.
    fn quota(&self) -> Option<Quota> {
        Quota::with_period(self.window / self.count.get()).map(|q| q.allow_burst(self.count))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, Window(self.window))
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A duration written with the largest unit that divides it (`6h`, `90s`).
struct Window(Duration);

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let (amount, unit) = [(86_400, "d"), (3600, "h"), (60, "m")]
            .into_iter()
            .find(|(u, _)| secs >= *u && secs.is_multiple_of(*u))
            .map_or((secs, "s"), |(u, unit)| (secs / u, unit));
        write!(f, "{amount}{unit}")
    }
}

/// An address range in CIDR notation (`10.0.0.0/8`, `::1/128`; a bare address is one host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `ADDRESS[/PREFIX]`.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(IpNet {
            addr: masked(addr, prefix),
            prefix,
        })
    }

    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && masked(ip, self.prefix) == self.addr
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `ip` with all but the first `prefix` bits cleared.
fn masked(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// Who may pull without limit by what they hold in the repository's namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnlimitedRole {
    /// Members with this role or a stronger one in the repository's namespace.
    AtLeast(Role),
    /// Registry administrators (`registry_admin`).
    RegistryAdmin,
}

impl UnlimitedRole {
    /// Parses a role name (`reader`, `writer`, `maintainer`, `admin`) or `registry_admin`.
    pub fn parse(s: &str) -> Result<UnlimitedRole, String> {
        if s == "registry_admin" {
            return Ok(UnlimitedRole::RegistryAdmin);
        }
        Role::parse(s).map(UnlimitedRole::AtLeast).ok_or_else(|| {
            format!("{s:?} is not a role: use reader, writer, maintainer, admin or registry_admin")
        })
    }
}

impl fmt::Display for UnlimitedRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnlimitedRole::AtLeast(r) => f.write_str(r.as_str()),
            UnlimitedRole::RegistryAdmin => f.write_str("registry_admin"),
        }
    }
}

impl Serialize for UnlimitedRole {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[rate_limit]` settings; the default limits nothing (failed logins are always limited).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RateLimitSettings {
    /// Pulls per anonymous client address (IPv6 per /64).
    pub anonymous: Option<Rate>,
    /// Pulls per account.
    pub authenticated: Option<Rate>,
    /// Account names never limited.
    pub unlimited: Vec<String>,
    /// Accounts holding one of these in the repository's namespace are not limited.
    pub unlimited_roles: Vec<UnlimitedRole>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

type Limiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One class of pull limit: its rate and one GCRA state per key.
struct PullLimit<K: Hash + Eq + Clone> {
    rate: Rate,
    limiter: Limiter<K>,
}

impl<K: Hash + Eq + Clone> PullLimit<K> {
    fn new(rate: Option<Rate>) -> Option<PullLimit<K>> {
        let rate = rate?;
        let quota = rate.quota()?;
        Some(PullLimit {
            rate,
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        })
    }

    fn check(&self, key: &K, tidy: bool) -> Result<Budget, Duration> {
        if tidy {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        match self.limiter.check_key(key) {
            Ok(snapshot) => Ok(Budget {
                rate: self.rate,
                remaining: snapshot.remaining_burst_capacity(),
            }),
            Err(not_until) => Err(not_until.wait_time_from(self.limiter.clock().now())),
        }
    }
}

/// Who a counted pull is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Puller<'a> {
    /// An anonymous client, by address.
    Address(IpAddr),
    /// An account, by name.
    Account(&'a str),
}

/// What is left of a client's pull budget after a counted pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The limit that applies.
    pub rate: Rate,
    /// Pulls left right now.
    pub remaining: u32,
}

impl Budget {
    /// `RateLimit-Limit: N;w=<secs>` and `RateLimit-Remaining: n;w=<secs>`.
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 2] {
        let w = self.rate.window_secs();
        [
            (
                RATELIMIT_LIMIT,
                crate::hv(format!("{};w={w}", self.rate.count)),
            ),
            (
                RATELIMIT_REMAINING,
                crate::hv(format!("{};w={w}", self.remaining)),
            ),
        ]
    }

    /// Adds the budget's headers to a response's.
    pub fn stamp(&self, headers: &mut HeaderMap) {
        headers.extend(self.headers());
    }
}

/// A refused pull: which limit and when it gives pulls back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The limit that was reached.
    pub rate: Rate,
    /// Which limit: `per anonymous client address` or `per account`.
    pub per: &'static str,
    /// Who reached it (`client address 10.0.0.1`, `account ann`).
    pub who: String,
    /// Until the next pull is allowed.
    pub retry_after: Duration,
    /// Until the whole budget is back.
    pub full_reset: Duration,
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        let retry = whole_secs(r.retry_after);
        let reset = whole_secs(r.full_reset);
        let at = humantime::format_rfc3339_seconds(SystemTime::now() + r.full_reset);
        let message = format!(
            "pull rate limit reached for {}: {} manifest GETs {} (HEAD requests are free); \
             the next pull is allowed in {retry} s, the full limit is back in {reset} s ({at})",
            r.who, r.rate, r.per
        );
        let [(limit, l), (remaining, n)] = Budget {
            rate: r.rate,
            remaining: 0,
        }
        .headers();
        retry_after(
            ApiError::new(ErrorCode::TooManyRequests, message),
            r.retry_after,
        )
        .with_header(limit, l)
        .with_header(remaining, n)
    }
}

/// Adds `Retry-After` in whole seconds, rounded up.
fn retry_after(error: ApiError, wait: Duration) -> ApiError {
    error
        .with_status(StatusCode::TOO_MANY_REQUESTS)
        .with_header(header::RETRY_AFTER, crate::hv(whole_secs(wait).to_string()))
}

/// Seconds rounded up, at least 1.
fn whole_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The outcome of counting one pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullDecision {
    /// No limit applies to this client.
    Free,
    /// Counted and allowed.
    Counted(Budget),
    /// Over the limit; nothing was counted.
    Refused(Refusal),
}

/// Failed logins of one key (a client address or an account name).
#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    since: Instant,
    locked_until: Option<Instant>,
}

/// Failed-login memory per key, with the count that locks the key out.
struct LoginLimit<K: Hash + Eq + Send + Sync + 'static> {
    failures: moka::sync::Cache<K, Failures>,
    limit: u32,
}

impl<K: Hash + Eq + Send + Sync + 'static> LoginLimit<K> {
    fn new(limit: u32) -> LoginLimit<K> {
        LoginLimit {
            failures: moka::sync::Cache::builder()
                .max_capacity(LOGIN_MEMORY)
                .time_to_live(LOGIN_WINDOW + LOCKOUT)
                .build(),
            limit,
        }
    }

    /// How long the key stays locked out, if it is.
    fn locked<Q>(&self, key: &Q, now: Instant) -> Option<Duration>
    where
        Q: moka::Equivalent<K> + Hash + ?Sized,
    {
        let until = self.failures.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a failure; returns the count in the window and whether it just locked the key.
    fn fail<Q>(&self, key: &Q, now: Instant) -> (u32, bool)
    where
        Q: moka::Equivalent<K> + ToOwned<Owned = K> + Hash + ?Sized,
    {
        let limit = self.limit;
        let entry = self.failures.entry_by_ref(key).and_upsert_with(|old| {
            let live = |f: &Failures| match f.locked_until {
                Some(until) => until > now,
                None => now.duration_since(f.since) < LOGIN_WINDOW,
            };
            let mut f = old
                .map(|e| e.into_value())
                .filter(live)
                .unwrap_or(Failures {
                    count: 0,
                    since: now,
                    locked_until: None,
                });
            f.count = f.count.saturating_add(1);
            if f.count >= limit && f.locked_until.is_none() {
                f.locked_until = Some(now + LOCKOUT);
            }
            f
        });
        let f = entry.into_value();
        (f.count, f.count == limit)
    }
}

/// A refused login attempt: the key is locked out for `wait`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lockout {
    /// What is locked out (`account ann`, `client address 10.0.0.1`).
    pub who: String,
    /// Until attempts are accepted again.
    pub wait: Duration,
}

impl From<Lockout> for ApiError {
    fn from(l: Lockout) -> ApiError {
        let message = format!(
            "too many failed logins for {}: further attempts are refused for {} s; \
             check the credentials before retrying",
            l.who,
            whole_secs(l.wait)
        );
        retry_after(ApiError::new(ErrorCode::TooManyRequests, message), l.wait)
    }
}

/// The registry's rate limits: pull budgets and failed-login lockouts.
pub struct RateLimits {
    settings: RateLimitSettings,
    anonymous: Option<PullLimit<IpAddr>>,
    authenticated: Option<PullLimit<String>>,
    counted: AtomicU64,
    login_by_address: LoginLimit<IpAddr>,
    login_by_account: LoginLimit<String>,
    role_cache: moka::sync::Cache<(String, String), bool>,
}

impl RateLimits {
    /// Limiters for the given settings.
    pub fn new(settings: RateLimitSettings) -> RateLimits {
        RateLimits {
            anonymous: PullLimit::new(settings.anonymous),
            authenticated: PullLimit::new(settings.authenticated),
            settings,
            counted: AtomicU64::new(0),
            login_by_address: LoginLimit::new(ADDRESS_FAILURE_LIMIT),
            login_by_account: LoginLimit::new(ACCOUNT_FAILURE_LIMIT),
            role_cache: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ROLE_CACHE_TTL)
                .build(),
        }
    }

    /// The settings these limits were built from.
    pub fn settings(&self) -> &RateLimitSettings {
        &self.settings
    }

    /// The client address of a request: the connection's peer, or what a trusted proxy
    /// says in `X-Forwarded-For`.
    pub fn client_ip(&self, parts: &Parts) -> IpAddr {
        let peer = parts
            .extensions
            .get::<ClientAddr>()
            .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |a| a.0.ip());
        if !trusted(&self.settings.trusted_proxies, peer) {
            return peer.to_canonical();
        }
        let forwarded: Vec<&str> = parts
            .headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .collect();
        client_ip(peer, &forwarded, &self.settings.trusted_proxies)
    }

    /// Whether the account name is configured as never limited.
    pub fn unlimited(&self, account: &str) -> bool {
        self.settings.unlimited.iter().any(|n| n == account)
    }

    /// Counts one pull against the puller's budget, unless it is over it.
    pub fn check_pull(&self, puller: Puller<'_>) -> PullDecision {
        let tidy = self.counted.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1;
        let (rate, checked) = match puller {
            Puller::Address(ip) => match &self.anonymous {
                Some(limit) => (limit.rate, limit.check(&pull_key(ip), tidy)),
                None => return PullDecision::Free,
            },
            Puller::Account(name) => match &self.authenticated {
                Some(limit) if !self.unlimited(name) => {
                    (limit.rate, limit.check(&name.to_owned(), tidy))
                }
                _ => return PullDecision::Free,
            },
        };
        let retry_after = match checked {
            Ok(budget) => return PullDecision::Counted(budget),
            Err(wait) => wait,
        };
        ::metrics::counter!("berth_pulls_rate_limited_total").increment(1);
        let (per, who) = match puller {
            Puller::Address(ip) => (
                "per anonymous client address",
                format!("client address {}", pull_key(ip)),
            ),
            Puller::Account(name) => ("per account", format!("account {name}")),
        };
        let per_pull = rate.window / rate.count.get();
        PullDecision::Refused(Refusal {
            rate,
            per,
            who,
            retry_after,
            full_reset: retry_after + per_pull * (rate.count.get() - 1),
        })
    }

    /// Refuses a login attempt while its client address or account name is locked out.
    pub fn login_allowed(&self, ip: IpAddr, account: &str, now: Instant) -> Result<(), Lockout> {
        if let Some(wait) = self.login_by_account.locked(account, now) {
            return Err(Lockout {
                who: format!("account {account:?}"),
                wait,
            });
        }
        match self.login_by_address.locked(&ip, now) {
            Some(wait) => Err(Lockout {
                who: format!("client address {ip}"),
                wait,
            }),
            None => Ok(()),
        }
    }

    /// Records a failed login; returns how long to hold back its answer. Logs a warning
    /// when the failure locks the address or the account out.
    pub fn login_failed(&self, ip: IpAddr, account: &str, now: Instant) -> Duration {
        let (by_account, locked_account) = self.login_by_account.fail(account, now);
        let (by_address, locked_address) = self.login_by_address.fail(&ip, now);
        // Names are what the client sent: logged escaped.
        if locked_account {
            tracing::warn!(
                account = ?account,
                client = %ip,
                failures = by_account,
                lockout_secs = LOCKOUT.as_secs(),
                "too many failed logins: locking the account out"
            );
        }
        if locked_address {
            tracing::warn!(
                client = %ip,
                account = ?account,
                failures = by_address,
                lockout_secs = LOCKOUT.as_secs(),
                "too many failed logins: locking the client address out"
            );
        }
        let worst = by_account.max(by_address).saturating_sub(1);
        (SLOWDOWN_STEP * worst).min(SLOWDOWN_MAX)
    }
}

/// The key an anonymous client's pulls are counted under: its address, or its /64 for
/// IPv6 (one host usually holds a whole /64).
fn pull_key(ip: IpAddr) -> IpAddr {
    let ip = ip.to_canonical();
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(_) => masked(ip, 64),
    }
}

/// The client address behind `peer`: the peer itself unless it is a trusted proxy, else
/// the right-most `X-Forwarded-For` entry (`forwarded`, in header order) that is not a
/// trusted proxy. An unreadable entry stops the walk at the last address believed.
pub fn client_ip(peer: IpAddr, forwarded: &[&str], proxies: &[IpNet]) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted(proxies, client) {
        return client;
    }
    for entry in forwarded.iter().rev() {
        let Some(ip) = forwarded_addr(entry) else {
            break;
        };
        client = ip;
        if !trusted(proxies, ip) {
            break;
        }
    }
    client
}

/// Whether `ip` is one of the trusted `proxies`.
fn trusted(proxies: &[IpNet], ip: IpAddr) -> bool {
    proxies.iter().any(|n| n.contains(ip))
}

/// One `X-Forwarded-For` entry: an address, possibly with a port or in brackets.
fn forwarded_addr(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .or_else(|_| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .unwrap_or("")
                .parse::<IpAddr>()
        })
        .ok()?;
    Some(ip.to_canonical())
}

/// Counts a manifest GET against the caller's pull budget: the budget left to report, or
/// the 429 when it is spent. Open mode, anonymous callers and anonymous tokens are
/// counted per client address; accounts per name unless exempt.
pub(crate) async fn charge_pull(
    auth: &Auth,
    caller: &Caller,
    repo: &RepoName,
    parts: &Parts,
) -> Result<Option<Budget>, ApiError> {
    let limits = auth.limits();
    let account = match caller {
        Caller::Account(a) => Some(a.name.as_str()),
        Caller::Token(claims) if !claims.sub.is_empty() => Some(claims.sub.as_str()),
        Caller::Open | Caller::Token(_) | Caller::Anonymous => None,
    };
    let puller = match account {
        Some(name) => {
            if limits.authenticated.is_none()
                || limits.unlimited(name)
                || unlimited_by_role(auth, name, repo).await?
            {
                return Ok(None);
            }
            Puller::Account(name)
        }
        None if limits.anonymous.is_none() => return Ok(None),
        None => Puller::Address(limits.client_ip(parts)),
    };
    match limits.check_pull(puller) {
        PullDecision::Free => Ok(None),
        PullDecision::Counted(budget) => Ok(Some(budget)),
        PullDecision::Refused(refusal) => Err(refusal.into()),
    }
}

/// Whether the account holds one of the unlimited roles for `repo` (cached briefly).
async fn unlimited_by_role(auth: &Auth, name: &str, repo: &RepoName) -> Result<bool, ApiError> {
    let limits = auth.limits();
    let roles = &limits.settings.unlimited_roles;
    if roles.is_empty() {
        return Ok(false);
    }
    let ns = namespace_of(repo);
    let key = (name.to_owned(), ns.to_owned());
    if let Some(unlimited) = limits.role_cache.get(&key) {
        return Ok(unlimited);
    }
    let now = berth_registry::service::unix_now();
    let unlimited = match auth.accounts().get(name).await? {
        Some(r) if r.active_at(now) => {
            let by_role = roles.iter().any(|u| matches!(u, UnlimitedRole::AtLeast(_)));
            let role = if by_role {
                auth.accounts().role_in(ns, r.id).await?
            } else {
                None
            };
            roles.iter().any(|u| match u {
                UnlimitedRole::RegistryAdmin => r.registry_admin,
                UnlimitedRole::AtLeast(min) => role.is_some_and(|have| have >= *min),
            })
        }
        _ => false,
    };
    limits.role_cache.insert(key, unlimited);
    Ok(unlimited)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| IpNet::parse(s).unwrap()).collect()
    }

    #[test]
    fn rates_parse_with_units() {
        let r = Rate::parse("100/6h").unwrap();
        assert_eq!(r.count.get(), 100);
        assert_eq!(r.window, Duration::from_secs(21_600));
        assert_eq!(r.window_secs(), 21_600);
        assert_eq!(Rate::parse("2/2s").unwrap().window, Duration::from_secs(2));
        assert_eq!(Rate::parse("5/30m").unwrap().window_secs(), 1800);
        assert_eq!(Rate::parse(" 7 / 1d ").unwrap().window_secs(), 86_400);
        assert_eq!(Rate::parse("100/6h").unwrap().to_string(), "100/6h");
        assert_eq!(Rate::parse("3/90s").unwrap().to_string(), "3/90s");
        assert_eq!(Rate::parse("3/120m").unwrap().to_string(), "3/2h");
    }

    #[test]
    fn bad_rates_are_refused_with_the_reason() {
        for bad in [
            "100", "100/", "/6h", "x/6h", "-1/6h", "0/6h", "100/6", "100/6x", "100/h", "100/0h",
            "100/6hh", "100/400d", "1.5/1h", "100/1é",
        ] {
            let e = Rate::parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert!(Rate::parse("0/1h").unwrap_err().contains("at least 1"));
        assert!(
            Rate::parse("5/1w")
                .unwrap_err()
                .contains("unit s, m, h or d")
        );
    }

    #[test]
    fn networks_parse_and_match() {
        let n = IpNet::parse("10.1.0.0/16").unwrap();
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        assert!(
            n.contains(ip("::ffff:10.1.0.9")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(IpNet::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(!IpNet::parse("127.0.0.1").unwrap().contains(ip("127.0.0.2")));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(!IpNet::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
        assert!(IpNet::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert_eq!(
            IpNet::parse("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0/8", "10.0.0.0/x"] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let trusted = nets(&["127.0.0.1/32", "10.9.0.0/16"]);
        let cases: &[(&str, &[&str], &str, &str)] = &[
            (
                "203.0.113.7",
                &["10.0.0.1"],
                "203.0.113.7",
                "untrusted peer: its own address",
            ),
            (
                "127.0.0.1",
                &["10.0.0.1"],
                "10.0.0.1",
                "trusted peer: the forwarded client",
            ),
            (
                "127.0.0.1",
                &["6.6.6.6", " 198.51.100.4", "10.9.3.3 "],
                "198.51.100.4",
                "right-most untrusted entry: prepending cannot choose the address",
            ),
            ("127.0.0.1", &[], "127.0.0.1", "no header: the proxy itself"),
            (
                "127.0.0.1",
                &["10.9.0.1"],
                "10.9.0.1",
                "only proxies: the last one seen",
            ),
            (
                "127.0.0.1",
                &["1.2.3.4", "unknown"],
                "127.0.0.1",
                "garbage stops the walk",
            ),
            ("127.0.0.1", &["192.0.2.1:4711"], "192.0.2.1", "with a port"),
            (
                "127.0.0.1",
                &["[2001:db8::1]:80"],
                "2001:db8::1",
                "bracketed with a port",
            ),
            (
                "::ffff:127.0.0.1",
                &["[2001:db8::2]"],
                "2001:db8::2",
                "mapped peer, brackets",
            ),
        ];
        for (peer, forwarded, want, why) in cases {
            assert_eq!(client_ip(ip(peer), forwarded, &trusted), ip(want), "{why}");
        }
        assert_eq!(
            client_ip(ip("127.0.0.1"), &["10.0.0.1"], &[]),
            ip("127.0.0.1"),
            "nothing trusted: never read"
        );
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        assert_eq!(pull_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(pull_key(ip("::ffff:192.0.2.9")), ip("192.0.2.9"));
    }

    #[test]
    fn pulls_are_counted_per_key_and_refusals_say_when() {
        let limits = RateLimits::new(RateLimitSettings {
            anonymous: Some(Rate::parse("3/1h").unwrap()),
            authenticated: Some(Rate::parse("1/1h").unwrap()),
            unlimited: vec!["ci".into()],
            ..RateLimitSettings::default()
        });
        let a = Puller::Address(ip("192.0.2.1"));
        for left in [2, 1, 0] {
            match limits.check_pull(a) {
                PullDecision::Counted(b) => assert_eq!(b.remaining, left),
                other => panic!("{other:?}"),
            }
        }
        let PullDecision::Refused(r) = limits.check_pull(a) else {
            panic!("4th pull allowed");
        };
        assert!(
            r.retry_after > Duration::from_secs(1190) && r.retry_after <= Duration::from_secs(1200)
        );
        assert!(r.full_reset > Duration::from_secs(3590));
        let e = ApiError::from(r);
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(e.message.contains("3/1h"), "{}", e.message);
        assert!(
            e.message.contains("per anonymous client address"),
            "{}",
            e.message
        );
        assert!(matches!(
            limits.check_pull(Puller::Address(ip("192.0.2.2"))),
            PullDecision::Counted(_)
        ));
        assert!(matches!(
            limits.check_pull(Puller::Account("ann")),
            PullDecision::Counted(Budget { remaining: 0, .. })
        ));
        assert!(matches!(
            limits.check_pull(Puller::Account("ann")),
            PullDecision::Refused(_)
        ));
        assert_eq!(limits.check_pull(Puller::Account("ci")), PullDecision::Free);
        let unset = RateLimits::new(RateLimitSettings::default());
        assert_eq!(unset.check_pull(a), PullDecision::Free);
    }

    #[test]
    fn failed_logins_lock_out_the_account_and_then_the_address() {
        let limits = RateLimits::new(RateLimitSettings::default());
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for n in 1..ACCOUNT_FAILURE_LIMIT {
            assert!(limits.login_allowed(a, "ann", t0).is_ok());
            let delay = limits.login_failed(a, "ann", t0);
            assert_eq!(delay, (SLOWDOWN_STEP * (n - 1)).min(SLOWDOWN_MAX));
        }
        limits.login_failed(a, "ann", t0);
        let locked = limits.login_allowed(a, "ann", t0).unwrap_err();
        assert_eq!(locked.wait, LOCKOUT);
        assert!(locked.who.contains("ann"));
        // Other accounts from elsewhere are not affected; the lockout ends.
        assert!(limits.login_allowed(ip("192.0.2.2"), "bob", t0).is_ok());
        assert!(limits.login_allowed(a, "ann", t0 + LOCKOUT).is_ok());
        // Failures older than the window are forgotten.
        let t1 = t0 + LOCKOUT + Duration::from_secs(1);
        assert_eq!(limits.login_failed(a, "ann", t1), Duration::ZERO);
        // One address guessing many names is locked out on its own count.
        let b = ip("198.51.100.9");
        for n in 0..ADDRESS_FAILURE_LIMIT {
            limits.login_failed(b, &format!("user{n}"), t0);
        }
        let locked = limits.login_allowed(b, "someone-else", t0).unwrap_err();
        assert!(locked.who.contains("198.51.100.9"), "{}", locked.who);
    }

    #[test]
    fn settings_print_as_written() {
        let s = RateLimitSettings {
            anonymous: Some(Rate::parse("100/6h").unwrap()),
            unlimited_roles: vec![
                UnlimitedRole::parse("maintainer").unwrap(),
                UnlimitedRole::parse("registry_admin").unwrap(),
            ],
            trusted_proxies: nets(&["127.0.0.1"]),
            ..RateLimitSettings::default()
        };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["anonymous"], "100/6h");
        assert_eq!(json["unlimited_roles"][1], "registry_admin");
        assert_eq!(json["trusted_proxies"][0], "127.0.0.1/32");
        assert!(UnlimitedRole::parse("owner").is_err());
    }
}
