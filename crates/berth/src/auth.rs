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

/// Whether berth may run open (anonymous push) while no account exists: only on a
/// loopback address, or where `[auth] open = true` says so explicitly, and never when
/// `[auth] required` is set.
fn may_run_open(listen: std::net::SocketAddr, auth: &crate::config::AuthConfig) -> bool {
    (listen.ip().is_loopback() || auth.open) && !auth.required
}

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
    let may_be_open = may_run_open(config.listen, &config.auth);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;

    fn auth(required: bool, open: bool) -> AuthConfig {
        AuthConfig {
            required,
            open,
            service: "berth".into(),
            realm: None,
            token_lifetime_secs: 300,
        }
    }

    #[test]
    fn only_loopback_runs_open_by_default() {
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(may_run_open(addr("127.0.0.1:5000"), &auth(false, false)));
        assert!(may_run_open(addr("[::1]:5000"), &auth(false, false)));
        assert!(!may_run_open(addr("0.0.0.0:5000"), &auth(false, false)));
        assert!(!may_run_open(addr("192.0.2.10:5000"), &auth(false, false)));
        assert!(!may_run_open(addr("[::]:5000"), &auth(false, false)));
    }

    #[test]
    fn required_and_explicit_open_override_the_address() {
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(!may_run_open(addr("127.0.0.1:5000"), &auth(true, false)));
        assert!(may_run_open(addr("0.0.0.0:5000"), &auth(false, true)));
        assert!(!may_run_open(addr("0.0.0.0:5000"), &auth(true, true)));
    }
}
