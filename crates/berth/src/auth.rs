//! Start-up of access control: the token signing key, the first admin account, and
//! whether berth may run open.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_http::auth::{Auth, AuthSettings};
use berth_http::ratelimit::RateLimits;
use berth_http::token::TokenKeys;
use berth_metastore::SqliteMetaStore;
use berth_registry::accounts::{Accounts, new_robot_secret};

use crate::config::Config;

/// File in the data directory holding the token signing key (mode 0600).
const SIGNING_KEY_FILE: &str = "token-signing-key.der";
/// Name of the account created on first start when credentials are required.
const FIRST_ADMIN: &str = "admin";
/// How long docker's stored login (a refresh token) stays valid.
const REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Loads the signing key, creates the first admin when needed, and decides open mode.
///
/// Open mode (anonymous pull and push) needs a loopback address (or `[auth] open = true`),
/// `[auth] required` unset and no account at all. Otherwise, with no account yet, an
/// `admin` account is created with `BERTH_ADMIN_PASSWORD` or a random password that is
/// printed once.
pub async fn start(config: &Config, meta: Arc<SqliteMetaStore>) -> anyhow::Result<Arc<Auth>> {
    let keys = TokenKeys::load_or_create(&config.data.join(SIGNING_KEY_FILE), "berth")
        .map_err(|e| anyhow::anyhow!("token signing key: {e}"))?;
    let accounts = Arc::new(Accounts::new(meta));
    let may_be_open =
        (config.listen.ip().is_loopback() || config.auth.open) && !config.auth.required;
    let given = std::env::var("BERTH_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    if !accounts.any().await? && (!may_be_open || given.is_some()) {
        let (password, generated) = match given {
            Some(p) => (p, false),
            None => (new_robot_secret()?.0, true),
        };
        accounts
            .add_user(FIRST_ADMIN, &password, true)
            .await
            .context("creating the first admin account")?;
        if generated {
            // Shown once, on the terminal of whoever started berth; never logged again.
            eprintln!(
                "berth: created registry admin account {FIRST_ADMIN:?} with password {password}\n\
                 berth: store it now; it is not shown again (set BERTH_ADMIN_PASSWORD to choose it)"
            );
        }
        tracing::info!(
            account = FIRST_ADMIN,
            "created the first registry admin account"
        );
    }
    let settings = AuthSettings {
        service: config.auth.service.clone(),
        realm: config.auth.realm.clone(),
        token_lifetime: Duration::from_secs(config.auth.token_lifetime_secs),
        refresh_lifetime: REFRESH_LIFETIME,
        allow_open: may_be_open,
        tls: config.tls_cert.is_some(),
    };
    let limits = Arc::new(RateLimits::new(config.rate_limit.clone()));
    let auth = Auth::new(accounts, keys, settings, limits)
        .await
        .context("starting access control")?;
    if auth.is_open() {
        tracing::warn!(
            listen = %config.listen,
            "berth runs OPEN: no accounts exist, so anyone who reaches this address may pull \
             and push. Create an account or set [auth] required = true (BERTH_AUTH_REQUIRED=true) to end it"
        );
    } else {
        tracing::info!(service = %config.auth.service, "access control is on: token endpoint at /token");
    }
    Ok(Arc::new(auth))
}
