//! Configuration: `berth.toml` < `BERTH_*` environment < command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_blobstore::FsBlobStore;
use berth_http::ratelimit::RateLimitSettings;
use berth_metastore::SqliteMetaStore;
use berth_registry::Registry;
use berth_registry::webhooks::Backoff;
use serde::{Deserialize, Serialize};

/// Default listen address: loopback only, so a fresh install exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA: &str = "berth-data";

/// Options shared by every command that opens the stores.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// Configuration file (TOML); `berth.toml` in the working directory is read if present.
    #[arg(long, env = "BERTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: blobs, uploads and the metadata database.
    #[arg(long, env = "BERTH_DATA")]
    pub data: Option<PathBuf>,
}

/// `berth.toml`: every key optional.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<String>,
    /// Data directory.
    pub data: Option<PathBuf>,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_grace_secs: Option<u64>,
    /// How long an upload session may go without receiving data before it is cancelled
    /// and its data removed (`30m`, `24h`); default 24h.
    pub upload_idle_timeout: Option<String>,
    /// TLS certificate chain (PEM); with `tls_key`, berth serves HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// `[auth]`: accounts and tokens.
    pub auth: Option<AuthFileConfig>,
    /// `[rate_limit]`: pull limits and the proxies whose `X-Forwarded-For` is believed.
    pub rate_limit: Option<RateLimitFileConfig>,
    /// `[events]`: how long the audit log keeps events.
    pub events: Option<EventsFileConfig>,
    /// `[webhooks]`: the retry policy of webhook deliveries.
    pub webhooks: Option<WebhooksFileConfig>,
    /// `[gc]`: scheduled garbage collection.
    pub gc: Option<GcFileConfig>,
}

/// `[gc]` in `berth.toml`.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct GcFileConfig {
    /// Time between two scheduled runs (`60m`); `0s` turns them off. Default 60m.
    pub interval: Option<String>,
    /// How long a blob or manifest is left alone after it was stored, linked or pushed.
    /// Default 60m.
    pub grace: Option<String>,
    /// Whether scheduled runs also remove untagged manifests nothing depends on. Default false.
    pub delete_untagged: Option<bool>,
}

/// Effective `[gc]` settings.
#[derive(Serialize, Debug, Clone)]
pub struct GcConfig {
    /// Seconds between scheduled runs (0: none).
    pub interval_secs: u64,
    /// Grace period in seconds.
    pub grace_secs: u64,
    /// Whether scheduled runs remove untagged manifests.
    pub delete_untagged: bool,
}

impl GcFileConfig {
    /// The effective settings (`BERTH_GC_INTERVAL` and `BERTH_GC_GRACE` override the
    /// file); every value has a default.
    pub fn settings(self) -> anyhow::Result<GcConfig> {
        let interval = env_var("BERTH_GC_INTERVAL").or(self.interval);
        let grace = env_var("BERTH_GC_GRACE").or(self.grace);
        Ok(GcConfig {
            interval_secs: duration_setting("[gc] interval", interval.as_deref(), 3600, true)?,
            grace_secs: duration_setting("[gc] grace", grace.as_deref(), 3600, true)?,
            delete_untagged: self.delete_untagged.unwrap_or(false),
        })
    }
}

/// `[auth]` in `berth.toml`.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct AuthFileConfig {
    /// Require credentials even on loopback with no accounts (ends open mode).
    pub required: Option<bool>,
    /// Allow open mode (anonymous push) on a non-loopback address. Dangerous; explicit only.
    pub open: Option<bool>,
    /// The token `service` (audience); default `berth`.
    pub service: Option<String>,
    /// The token endpoint URL put in challenges; default: this server as addressed.
    pub realm: Option<String>,
    /// Lifetime of access tokens in seconds; default 300.
    pub token_lifetime_secs: Option<u64>,
}

/// `[rate_limit]` in `berth.toml`: unset limits nothing.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFileConfig {
    /// Manifest GETs per anonymous client address, `N/<duration>` (e.g. `100/6h`).
    pub anonymous: Option<String>,
    /// Manifest GETs per account, `N/<duration>`.
    pub authenticated: Option<String>,
    /// Account names never limited.
    pub unlimited: Option<Vec<String>>,
    /// Roles (in the repository's namespace, or `registry_admin`) never limited.
    pub unlimited_roles: Option<Vec<String>>,
    /// Peers (CIDR) whose `X-Forwarded-For` header names the client.
    pub trusted_proxies: Option<Vec<String>>,
}

impl RateLimitFileConfig {
    /// Checks every value; an error names the key and says what is wrong.
    pub fn settings(self) -> anyhow::Result<RateLimitSettings> {
        use berth_http::ratelimit::{IpNet, Rate, UnlimitedRole};
        let one = |key, v: Option<String>| {
            checked(key, v.into_iter().collect(), Rate::parse).map(|mut rates| rates.pop())
        };
        Ok(RateLimitSettings {
            anonymous: one("anonymous", self.anonymous)?,
            authenticated: one("authenticated", self.authenticated)?,
            unlimited: self.unlimited.unwrap_or_default(),
            unlimited_roles: checked(
                "unlimited_roles",
                self.unlimited_roles.unwrap_or_default(),
                UnlimitedRole::parse,
            )?,
            trusted_proxies: checked(
                "trusted_proxies",
                self.trusted_proxies.unwrap_or_default(),
                IpNet::parse,
            )?,
        })
    }
}

/// `[events]` in `berth.toml`.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct EventsFileConfig {
    /// Days the audit log, pull records and delivery log are kept; default 90.
    pub keep_days: Option<u64>,
}

impl EventsFileConfig {
    /// Checks the values; an error names the key and says what is wrong.
    pub fn settings(self) -> anyhow::Result<EventsConfig> {
        let keep_days = self.keep_days.unwrap_or(DEFAULT_KEEP_DAYS);
        if keep_days == 0 {
            anyhow::bail!(
                "[events] keep_days = 0 would delete every event as soon as it is written; \
                 use at least 1 (default {DEFAULT_KEEP_DAYS})"
            );
        }
        Ok(EventsConfig { keep_days })
    }
}

/// `[webhooks]` in `berth.toml`.
#[derive(Deserialize, Serialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct WebhooksFileConfig {
    /// Milliseconds to wait after a delivery's first failure; doubles with each failure.
    pub first_backoff_ms: Option<u64>,
    /// Longest wait in milliseconds between two attempts at one delivery.
    pub max_backoff_ms: Option<u64>,
}

impl WebhooksFileConfig {
    /// Checks the values, with `BERTH_WEBHOOK_FIRST_BACKOFF_MS` and
    /// `BERTH_WEBHOOK_MAX_BACKOFF_MS` (`first_env`, `max_env`) taking precedence over the
    /// file. A first wait left at its default never exceeds a configured maximum.
    pub fn settings(
        self,
        first_env: Option<&str>,
        max_env: Option<&str>,
    ) -> anyhow::Result<WebhooksConfig> {
        const FIRST_KEY: &str = "[webhooks] first_backoff_ms";
        const MAX_KEY: &str = "[webhooks] max_backoff_ms";
        // Each value with where it came from, so an error points at the right place.
        let first = match first_env {
            Some(v) => Some((parse_ms(FIRST_BACKOFF_ENV, v)?, FIRST_BACKOFF_ENV)),
            None => self.first_backoff_ms.map(|ms| (ms, FIRST_KEY)),
        };
        let (max_backoff_ms, max_from) = match max_env {
            Some(v) => (parse_ms(MAX_BACKOFF_ENV, v)?, MAX_BACKOFF_ENV),
            None => (
                self.max_backoff_ms.unwrap_or(DEFAULT_MAX_BACKOFF_MS),
                MAX_KEY,
            ),
        };
        let (first_backoff_ms, first_from) =
            first.unwrap_or((DEFAULT_FIRST_BACKOFF_MS.min(max_backoff_ms), FIRST_KEY));
        if first_backoff_ms == 0 {
            anyhow::bail!("{first_from} must be at least 1 (milliseconds)");
        }
        if max_backoff_ms < first_backoff_ms {
            anyhow::bail!(
                "{max_from} ({max_backoff_ms}) is less than {first_from} ({first_backoff_ms}); \
                 the longest wait between attempts cannot be shorter than the first"
            );
        }
        Ok(WebhooksConfig {
            first_backoff_ms,
            max_backoff_ms,
        })
    }
}

/// Environment override of `upload_idle_timeout`.
const UPLOAD_IDLE_ENV: &str = "BERTH_UPLOAD_IDLE_TIMEOUT";

/// Parses `upload_idle_timeout` (default 24 h); at least one second.
fn upload_idle_timeout(value: Option<&str>) -> anyhow::Result<u64> {
    duration_setting("upload_idle_timeout", value, 24 * 3600, false)
}

/// Seconds of a duration setting (`30m`, `24h`), `default` when unset; the error names
/// `key`. Zero is refused unless `zero_ok`.
fn duration_setting(
    key: &str,
    value: Option<&str>,
    default: u64,
    zero_ok: bool,
) -> anyhow::Result<u64> {
    let Some(text) = value else {
        return Ok(default);
    };
    let d = humantime::parse_duration(text).map_err(|e| {
        anyhow::anyhow!("{key} = {text:?} is not a duration ({e}), e.g. 30m or 24h")
    })?;
    if d.as_secs() == 0 && !zero_ok {
        anyhow::bail!("{key} = {text:?} is too short: use at least 1s");
    }
    Ok(d.as_secs())
}

/// Default of `[events] keep_days`.
const DEFAULT_KEEP_DAYS: u64 = 90;
/// Default of `[webhooks] first_backoff_ms`.
const DEFAULT_FIRST_BACKOFF_MS: u64 = 1000;
/// Default of `[webhooks] max_backoff_ms`.
const DEFAULT_MAX_BACKOFF_MS: u64 = 300_000;
/// Environment override of `[webhooks] first_backoff_ms`.
const FIRST_BACKOFF_ENV: &str = "BERTH_WEBHOOK_FIRST_BACKOFF_MS";
/// Environment override of `[webhooks] max_backoff_ms`.
const MAX_BACKOFF_ENV: &str = "BERTH_WEBHOOK_MAX_BACKOFF_MS";

/// Parses a millisecond count from the environment variable `name`.
fn parse_ms(name: &str, v: &str) -> anyhow::Result<u64> {
    v.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a whole number of milliseconds"))
}

/// Parses each value of `[rate_limit] key`; an error names the key.
fn checked<T>(
    key: &str,
    values: Vec<String>,
    parse: fn(&str) -> Result<T, String>,
) -> anyhow::Result<Vec<T>> {
    values
        .iter()
        .map(|v| parse(v).map_err(|e| anyhow::anyhow!("[rate_limit] {key}: {e}")))
        .collect()
}

/// The effective configuration, printed by `berth serve --print-config`.
#[derive(Serialize, Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data directory.
    pub data: PathBuf,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Seconds an upload session may stay idle before it is cancelled.
    pub upload_idle_timeout_secs: u64,
    /// TLS certificate chain (PEM), when serving HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM), when serving HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Accounts and tokens.
    pub auth: AuthConfig,
    /// Pull rate limits and trusted proxies.
    pub rate_limit: RateLimitSettings,
    /// Event retention.
    pub events: EventsConfig,
    /// Webhook retry policy.
    pub webhooks: WebhooksConfig,
    /// Scheduled garbage collection.
    pub gc: GcConfig,
}

/// Effective `[events]` settings.
#[derive(Serialize, Debug, Clone)]
pub struct EventsConfig {
    /// Days events are kept; older ones are pruned hourly.
    pub keep_days: u64,
}

/// Effective `[webhooks]` settings.
#[derive(Serialize, Debug, Clone)]
pub struct WebhooksConfig {
    /// Milliseconds to wait after a delivery's first failure.
    pub first_backoff_ms: u64,
    /// Longest wait in milliseconds between two attempts.
    pub max_backoff_ms: u64,
}

impl WebhooksConfig {
    /// The retry policy handed to each delivery round.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            first: Duration::from_millis(self.first_backoff_ms),
            max: Duration::from_millis(self.max_backoff_ms),
        }
    }
}

/// Effective `[auth]` settings.
#[derive(Serialize, Debug, Clone)]
pub struct AuthConfig {
    /// Credentials required even on loopback with no accounts.
    pub required: bool,
    /// Open mode allowed on a non-loopback address.
    pub open: bool,
    /// The token `service` (audience).
    pub service: String,
    /// The token endpoint URL for challenges, when fixed.
    pub realm: Option<String>,
    /// Lifetime of access tokens in seconds.
    pub token_lifetime_secs: u64,
}

impl StoreArgs {
    /// Reads the configuration file named by `--config`, or `./berth.toml` when present.
    pub fn file_config(&self) -> anyhow::Result<FileConfig> {
        let path = match &self.config {
            Some(p) => p.clone(),
            None if Path::new("berth.toml").exists() => PathBuf::from("berth.toml"),
            None => return Ok(FileConfig::default()),
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Resolves the effective configuration, with `listen` from flags or environment.
    pub fn resolve(&self, listen: Option<&str>) -> anyhow::Result<Config> {
        let file = self.file_config()?;
        let auth = file.auth.clone().unwrap_or_default();
        let required = match std::env::var("BERTH_AUTH_REQUIRED") {
            Ok(v) => parse_bool("BERTH_AUTH_REQUIRED", &v)?,
            Err(_) => auth.required.unwrap_or(false),
        };
        let listen = listen
            .map(str::to_owned)
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        Ok(Config {
            listen: listen
                .parse()
                .with_context(|| format!("listen address {listen:?} is not IP:PORT"))?,
            data: self
                .data
                .clone()
                .or(file.data)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA)),
            shutdown_grace_secs: file.shutdown_grace_secs.unwrap_or(30),
            upload_idle_timeout_secs: upload_idle_timeout(
                env_var(UPLOAD_IDLE_ENV)
                    .or(file.upload_idle_timeout)
                    .as_deref(),
            )?,
            tls_cert: file.tls_cert,
            tls_key: file.tls_key,
            auth: AuthConfig {
                required,
                open: auth.open.unwrap_or(false),
                service: auth.service.unwrap_or_else(|| "berth".to_owned()),
                realm: auth.realm,
                token_lifetime_secs: auth.token_lifetime_secs.unwrap_or(300),
            },
            rate_limit: file.rate_limit.unwrap_or_default().settings()?,
            events: file.events.unwrap_or_default().settings()?,
            gc: file.gc.unwrap_or_default().settings()?,
            webhooks: file.webhooks.unwrap_or_default().settings(
                env_var(FIRST_BACKOFF_ENV).as_deref(),
                env_var(MAX_BACKOFF_ENV).as_deref(),
            )?,
        })
    }
}

/// The environment variable `name`, when set and not empty.
fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_bool(name: &str, v: &str) -> anyhow::Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => anyhow::bail!("{name}={v:?} is not a boolean (true or false)"),
    }
}

/// Opens the embedded stores under `data` and builds the registry service.
pub async fn open_registry(data: &Path) -> anyhow::Result<Arc<Registry>> {
    Ok(open_stores(data).await?.0)
}

/// Opens the embedded stores under `data`: the registry service and the account store.
pub async fn open_stores(data: &Path) -> anyhow::Result<(Arc<Registry>, Arc<SqliteMetaStore>)> {
    std::fs::create_dir_all(data)
        .with_context(|| format!("creating data directory {}", data.display()))?;
    let blobs = FsBlobStore::open(data)
        .await
        .with_context(|| format!("opening blob store in {}", data.display()))?;
    let meta = SqliteMetaStore::open(&data.join("meta.db"))
        .await
        .with_context(|| format!("opening metadata database in {}", data.display()))?;
    let meta = Arc::new(meta);
    Ok((Arc::new(Registry::new(Arc::new(blobs), meta.clone())), meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_idle_timeout_defaults_to_a_day_and_refuses_zero() {
        assert_eq!(upload_idle_timeout(None).unwrap(), 86_400);
        assert_eq!(upload_idle_timeout(Some("30m")).unwrap(), 1800);
        let zero = upload_idle_timeout(Some("0s")).unwrap_err().to_string();
        assert!(zero.contains("at least 1s"), "{zero}");
        let junk = upload_idle_timeout(Some("soon")).unwrap_err().to_string();
        assert!(junk.contains("not a duration"), "{junk}");
    }

    #[test]
    fn events_default_to_ninety_days_and_refuse_zero() {
        let d = EventsFileConfig::default().settings().unwrap();
        assert_eq!(d.keep_days, 90);
        let err = EventsFileConfig { keep_days: Some(0) }
            .settings()
            .unwrap_err();
        assert!(err.to_string().contains("keep_days"), "{err}");
    }

    #[test]
    fn webhook_backoff_defaults_and_environment() {
        let d = WebhooksFileConfig::default().settings(None, None).unwrap();
        assert_eq!((d.first_backoff_ms, d.max_backoff_ms), (1000, 300_000));
        assert_eq!(
            d.backoff(),
            Backoff {
                first: Duration::from_secs(1),
                max: Duration::from_secs(300)
            }
        );
        let file = WebhooksFileConfig {
            first_backoff_ms: Some(2000),
            max_backoff_ms: Some(60_000),
        };
        let w = file.clone().settings(Some("100"), Some("500")).unwrap();
        assert_eq!((w.first_backoff_ms, w.max_backoff_ms), (100, 500));
        let w = file.settings(None, None).unwrap();
        assert_eq!((w.first_backoff_ms, w.max_backoff_ms), (2000, 60_000));
    }

    #[test]
    fn a_small_max_lowers_the_default_first_wait() {
        let w = WebhooksFileConfig::default()
            .settings(None, Some("500"))
            .unwrap();
        assert_eq!((w.first_backoff_ms, w.max_backoff_ms), (500, 500));
    }

    #[test]
    fn webhook_backoff_refuses_max_below_first_and_junk() {
        let file = WebhooksFileConfig {
            first_backoff_ms: Some(2000),
            max_backoff_ms: Some(1000),
        };
        let err = file.settings(None, None).unwrap_err().to_string();
        assert!(err.contains("[webhooks] max_backoff_ms (1000)"), "{err}");
        assert!(err.contains("[webhooks] first_backoff_ms (2000)"), "{err}");
        let err = WebhooksFileConfig::default()
            .settings(Some("1000"), Some("500"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("BERTH_WEBHOOK_MAX_BACKOFF_MS (500) is less than"),
            "{err}"
        );
        let err = WebhooksFileConfig::default()
            .settings(None, Some("5s"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("BERTH_WEBHOOK_MAX_BACKOFF_MS"), "{err}");
        let err = WebhooksFileConfig::default()
            .settings(Some("0"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("BERTH_WEBHOOK_FIRST_BACKOFF_MS must be"),
            "{err}"
        );
    }

    #[test]
    fn file_sections_parse_and_reject_unknown_keys() {
        let f: FileConfig = toml::from_str(
            "[events]\nkeep_days = 30\n[webhooks]\nfirst_backoff_ms = 10\nmax_backoff_ms = 20\n",
        )
        .unwrap();
        assert_eq!(f.events.unwrap().keep_days, Some(30));
        assert_eq!(f.webhooks.unwrap().max_backoff_ms, Some(20));
        assert!(toml::from_str::<FileConfig>("[webhooks]\nmax_backoff = 20\n").is_err());
    }
}
