//! Configuration: `berth.toml` < `BERTH_*` environment < command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use berth_blobstore::FsBlobStore;
use berth_http::ratelimit::RateLimitSettings;
use berth_metastore::SqliteMetaStore;
use berth_registry::Registry;
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
    /// Hours after which an unfinished upload session is removed.
    pub upload_expiry_hours: Option<u64>,
    /// TLS certificate chain (PEM); with `tls_key`, berth serves HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// `[auth]`: accounts and tokens.
    pub auth: Option<AuthFileConfig>,
    /// `[rate_limit]`: pull limits and the proxies whose `X-Forwarded-For` is believed.
    pub rate_limit: Option<RateLimitFileConfig>,
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
    /// Hours after which an unfinished upload session is removed.
    pub upload_expiry_hours: u64,
    /// TLS certificate chain (PEM), when serving HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM), when serving HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Accounts and tokens.
    pub auth: AuthConfig,
    /// Pull rate limits and trusted proxies.
    pub rate_limit: RateLimitSettings,
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
            upload_expiry_hours: file.upload_expiry_hours.unwrap_or(24),
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
        })
    }
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
