//! Accounts and credentials: users with argon2 password hashes, robot accounts with a
//! generated secret (shown once, stored as a SHA-256 digest), and the facts that feed
//! [`access::allowed`](crate::access::allowed).

use std::sync::Arc;

use berth_oci::{Algorithm, Digest, RepoName};

use crate::access::{
    AccessFacts, Account, AccountKind, Actions, Principal, RobotGrant, Role, Visibility,
    namespace_of,
};
use crate::error::{RegistryError, Result};
use crate::ports::{AccountStore, StorageError};
use crate::service::unix_now;

/// Longest account name or secret berth reads (oversized credentials are refused early).
pub const MAX_CREDENTIAL_LEN: usize = 256;

/// Prefix of robot secrets, so leaked ones are recognisable (and scannable) in logs.
const ROBOT_SECRET_PREFIX: &str = "berth_";
/// Prefix of personal access tokens (`berth_pat_…`); tells them from passwords at login.
const ACCESS_TOKEN_PREFIX: &str = "berth_pat_";

/// An account as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRecord {
    /// Database id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// User or robot.
    pub kind: AccountKind,
    /// PHC string (argon2 or bcrypt) for users; `sha256:<hex>` of the secret for robots.
    pub secret_hash: String,
    /// May do everything everywhere.
    pub registry_admin: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which the account no longer authenticates.
    pub expires_at: Option<i64>,
    /// Unix seconds when it was revoked.
    pub revoked_at: Option<i64>,
    /// A robot's grants.
    pub grants: Vec<RobotGrant>,
}

impl AccountRecord {
    /// The account as a caller identity.
    pub fn account(&self) -> Account {
        Account {
            id: self.id,
            name: self.name.clone(),
            kind: self.kind,
            registry_admin: self.registry_admin,
        }
    }

    /// Whether the account may authenticate at `now` (not revoked, not expired).
    pub fn active_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// An account to create.
#[derive(Clone, Debug)]
pub struct NewAccount {
    /// Login name (checked by [`check_account_name`]).
    pub name: String,
    /// User or robot.
    pub kind: AccountKind,
    /// See [`AccountRecord::secret_hash`].
    pub secret_hash: String,
    /// Registry administrator.
    pub registry_admin: bool,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// A robot's grants.
    pub grants: Vec<RobotGrant>,
}

/// A namespace's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceRecord {
    /// The first path segment of its repositories.
    pub name: String,
    /// Anonymous pull or not.
    pub visibility: Visibility,
}

/// Checks an account name: 1–64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_account_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidArgument(format!(
            "invalid account name {name:?}: use 1-64 lowercase letters, digits, '.', '_' or '-', \
             starting with a letter or digit"
        )))
    }
}

/// Hashes a password with argon2id (default parameters), as a PHC string.
pub fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| RegistryError::Storage(StorageError::backend(format!("hashing: {e}"))))
}

/// Whether `secret` matches the stored hash (argon2 PHC string, bcrypt hash imported from
/// htpasswd, or `sha256:` digest of a robot secret).
pub fn secret_matches(secret: &str, stored: &str) -> bool {
    if let Some(expected) = stored.strip_prefix("sha256:") {
        let got = Digest::of(Algorithm::Sha256, secret.as_bytes());
        return constant_time_eq(got.hex().as_bytes(), expected.as_bytes());
    }
    if is_bcrypt(stored) {
        return bcrypt::verify(secret, stored).unwrap_or(false);
    }
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    match PasswordHash::new(stored) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Whether a stored hash is bcrypt (`$2a$`, `$2b$`, `$2y$`), as htpasswd files hold.
fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|p| stored.starts_with(p))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh robot secret (256 random bits) and the hash to store for it.
pub fn new_robot_secret() -> Result<(String, String)> {
    new_secret(ROBOT_SECRET_PREFIX)
}

/// A fresh secret with `prefix` (256 random bits) and its `sha256:` digest to store.
fn new_secret(prefix: &str) -> Result<(String, String)> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| RegistryError::Storage(StorageError::backend(format!("randomness: {e}"))))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secret = format!("{prefix}{hex}");
    let stored = Digest::of(Algorithm::Sha256, secret.as_bytes()).to_string();
    Ok((secret, stored))
}

/// A personal access token as stored (the secret itself is never stored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessTokenRecord {
    /// The name its owner gave it.
    pub name: String,
    /// `sha256:<hex>` of the secret.
    pub secret_hash: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which it no longer authenticates.
    pub expires_at: Option<i64>,
    /// Unix seconds when it was revoked.
    pub revoked_at: Option<i64>,
}

impl AccessTokenRecord {
    /// Whether the token may authenticate at `now`.
    pub fn active_at(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// A personal access token to record.
#[derive(Clone, Debug)]
pub struct NewAccessToken {
    /// Owner.
    pub account_id: i64,
    /// Name, unique per owner.
    pub name: String,
    /// `sha256:<hex>` of the secret.
    pub secret_hash: String,
    /// Unix seconds.
    pub expires_at: Option<i64>,
}

/// What an htpasswd import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HtpasswdImport {
    /// Users created.
    pub created: Vec<String>,
    /// Names that already had an account (left unchanged).
    pub existing: Vec<String>,
    /// Lines that could not be imported, with the reason.
    pub refused: Vec<String>,
}

/// Accounts, namespaces and memberships, and the checks built on them.
pub struct Accounts {
    store: Arc<dyn AccountStore>,
}

impl Accounts {
    /// Accounts over a store.
    pub fn new(store: Arc<dyn AccountStore>) -> Accounts {
        Accounts { store }
    }

    /// Whether any account exists (berth runs open on loopback until one does).
    pub async fn any(&self) -> Result<bool> {
        Ok(self.store.account_count().await? > 0)
    }

    /// Creates a user with a password.
    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        registry_admin: bool,
    ) -> Result<Account> {
        check_account_name(name)?;
        check_secret(password)?;
        let secret_hash = hash_on_blocking_thread(password.to_owned()).await?;
        self.create(NewAccount {
            name: name.to_owned(),
            kind: AccountKind::User,
            secret_hash,
            registry_admin,
            expires_at: None,
            grants: Vec::new(),
        })
        .await
    }

    /// Creates a robot account; returns it with its secret, which is shown only now.
    pub async fn add_robot(
        &self,
        name: &str,
        grants: Vec<RobotGrant>,
        expires_at: Option<i64>,
    ) -> Result<(Account, String)> {
        check_account_name(name)?;
        if grants.is_empty() {
            return Err(RegistryError::InvalidArgument(
                "a robot account needs at least one grant (repository pattern and actions)".into(),
            ));
        }
        let (secret, secret_hash) = new_robot_secret()?;
        let account = self
            .create(NewAccount {
                name: name.to_owned(),
                kind: AccountKind::Robot,
                secret_hash,
                registry_admin: false,
                expires_at,
                grants,
            })
            .await?;
        Ok((account, secret))
    }

    async fn create(&self, new: NewAccount) -> Result<Account> {
        match self.store.create_account(&new).await? {
            Some(id) => Ok(Account {
                id,
                name: new.name,
                kind: new.kind,
                registry_admin: new.registry_admin,
            }),
            None => Err(RegistryError::AlreadyExists(format!(
                "an account named {:?} already exists",
                new.name
            ))),
        }
    }

    /// Checks a name and secret; `None` for unknown names, wrong secrets, revoked or
    /// expired accounts (the caller cannot tell which, on purpose).
    pub async fn authenticate(&self, name: &str, secret: &str) -> Result<Option<Account>> {
        if name.len() > MAX_CREDENTIAL_LEN || secret.len() > MAX_CREDENTIAL_LEN {
            return Ok(None);
        }
        let Some(record) = self.store.account_by_name(name).await? else {
            return Ok(None);
        };
        let now = unix_now();
        if !record.active_at(now) {
            return Ok(None);
        }
        if secret.starts_with(ACCESS_TOKEN_PREFIX) {
            let tokens = self.store.access_tokens(record.id).await?;
            let ok = tokens
                .iter()
                .any(|t| t.active_at(now) && secret_matches(secret, &t.secret_hash));
            return Ok(ok.then(|| record.account()));
        }
        let (secret, stored) = (secret.to_owned(), record.secret_hash.clone());
        let ok = tokio::task::spawn_blocking(move || secret_matches(&secret, &stored))
            .await
            .unwrap_or(false);
        Ok(ok.then(|| record.account()))
    }

    /// Creates a personal access token for user `owner`; returns its secret, shown once.
    /// It authenticates as the user (as a password would) until it expires or is revoked.
    pub async fn add_access_token(
        &self,
        owner: &str,
        name: &str,
        expires_at: Option<i64>,
    ) -> Result<String> {
        let record = self.require(owner).await?;
        if record.kind != AccountKind::User {
            return Err(RegistryError::InvalidArgument(
                "access tokens are for users; robots already log in with a secret".into(),
            ));
        }
        check_account_name(name).map_err(|_| {
            RegistryError::InvalidArgument(format!(
                "invalid token name {name:?}: use 1-64 lowercase letters, digits, '.', '_' or '-'"
            ))
        })?;
        let (secret, secret_hash) = new_secret(ACCESS_TOKEN_PREFIX)?;
        let new = NewAccessToken {
            account_id: record.id,
            name: name.to_owned(),
            secret_hash,
            expires_at,
        };
        match self.store.create_access_token(&new).await? {
            Some(_) => Ok(secret),
            None => Err(RegistryError::AlreadyExists(format!(
                "{owner} already has an access token named {name:?}"
            ))),
        }
    }

    /// A user's access tokens.
    pub async fn access_tokens(&self, owner: &str) -> Result<Vec<AccessTokenRecord>> {
        let record = self.require(owner).await?;
        Ok(self.store.access_tokens(record.id).await?)
    }

    /// Revokes one of a user's access tokens.
    pub async fn revoke_access_token(&self, owner: &str, name: &str) -> Result<()> {
        let record = self.require(owner).await?;
        if self
            .store
            .revoke_access_token(record.id, name, unix_now())
            .await?
        {
            Ok(())
        } else {
            Err(RegistryError::NotFound(format!(
                "{owner} has no live access token named {name:?}"
            )))
        }
    }

    /// Every account.
    pub async fn list(&self) -> Result<Vec<AccountRecord>> {
        Ok(self.store.list_accounts().await?)
    }

    /// Revokes an account: its credentials and tokens stop working.
    pub async fn revoke(&self, name: &str) -> Result<()> {
        let record = self.require(name).await?;
        if record.revoked_at.is_none() {
            self.store.revoke_account(name, unix_now()).await?;
        }
        Ok(())
    }

    /// Sets a user's password.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<()> {
        let record = self.require(name).await?;
        if record.kind != AccountKind::User {
            return Err(RegistryError::InvalidArgument(format!(
                "{name} is a robot account; robots keep their generated secret (revoke it and add a new robot)"
            )));
        }
        check_secret(password)?;
        let hash = hash_on_blocking_thread(password.to_owned()).await?;
        self.store.set_secret(name, &hash).await?;
        Ok(())
    }

    /// Deletes an account, its grants and memberships.
    pub async fn remove(&self, name: &str) -> Result<()> {
        if self.store.delete_account(name).await? {
            Ok(())
        } else {
            Err(RegistryError::NotFound(format!(
                "no account named {name:?}"
            )))
        }
    }

    /// Every namespace that was set up, with its members.
    pub async fn namespaces(&self) -> Result<Vec<(NamespaceRecord, Vec<(String, Role)>)>> {
        let mut out = Vec::new();
        for ns in self.store.list_namespaces().await? {
            let members = self.store.members(&ns.name).await?;
            out.push((ns, members));
        }
        Ok(out)
    }

    /// Removes `account` from `namespace`.
    pub async fn remove_member(&self, namespace: &str, account: &str) -> Result<()> {
        let record = self.require(account).await?;
        if self.store.remove_member(namespace, record.id).await? {
            Ok(())
        } else {
            Err(RegistryError::NotFound(format!(
                "{account} is not a member of namespace {namespace}"
            )))
        }
    }

    /// Imports users from an htpasswd file (bcrypt entries, as Distribution's htpasswd
    /// auth uses), keeping their hashes so the same passwords keep working.
    pub async fn import_htpasswd(&self, text: &str) -> Result<HtpasswdImport> {
        let mut report = HtpasswdImport::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, hash)) = line.split_once(':') else {
                report
                    .refused
                    .push(format!("line {}: not name:hash", n + 1));
                continue;
            };
            if !is_bcrypt(hash) || check_account_name(name).is_err() {
                report.refused.push(format!(
                    "line {}: {name:?} needs a valid account name and a bcrypt hash (htpasswd -B)",
                    n + 1
                ));
                continue;
            }
            let created = self
                .store
                .create_account(&NewAccount {
                    name: name.to_owned(),
                    kind: AccountKind::User,
                    secret_hash: hash.to_owned(),
                    registry_admin: false,
                    expires_at: None,
                    grants: Vec::new(),
                })
                .await?;
            match created {
                Some(_) => report.created.push(name.to_owned()),
                None => report.existing.push(name.to_owned()),
            }
        }
        Ok(report)
    }

    /// An account by name, whatever its state.
    pub async fn get(&self, name: &str) -> Result<Option<AccountRecord>> {
        Ok(self.store.account_by_name(name).await?)
    }

    /// What `principal` may do in `repo`.
    pub async fn allowed(&self, principal: &Principal, repo: &RepoName) -> Result<Actions> {
        let facts = self.facts(principal, repo).await?;
        Ok(crate::access::allowed(principal, repo, &facts))
    }

    /// The stored facts about `principal` and `repo`.
    pub async fn facts(&self, principal: &Principal, repo: &RepoName) -> Result<AccessFacts> {
        let ns = namespace_of(repo);
        let visibility = self
            .store
            .namespace(ns)
            .await?
            .map_or(Visibility::Private, |n| n.visibility);
        let (role, robot_grants) = match principal {
            Principal::Anonymous => (None, Vec::new()),
            Principal::Account(a) if a.kind == AccountKind::Robot => {
                let grants = self
                    .store
                    .account_by_name(&a.name)
                    .await?
                    .map(|r| r.grants)
                    .unwrap_or_default();
                (None, grants)
            }
            Principal::Account(a) => (self.store.role_of(ns, a.id).await?, Vec::new()),
        };
        Ok(AccessFacts {
            visibility,
            role,
            robot_grants,
        })
    }

    /// An account's role in a namespace.
    pub async fn role_in(&self, namespace: &str, account_id: i64) -> Result<Option<Role>> {
        Ok(self.store.role_of(namespace, account_id).await?)
    }

    /// Creates a namespace or changes its visibility.
    pub async fn set_namespace(&self, name: &str, visibility: Visibility) -> Result<()> {
        RepoName::parse(name).map_err(RegistryError::from)?;
        if name.contains('/') {
            return Err(RegistryError::InvalidArgument(format!(
                "a namespace is one path segment; {name:?} has several"
            )));
        }
        Ok(self.store.put_namespace(name, visibility).await?)
    }

    /// Gives `account` `role` in `namespace` (replacing any role it had there).
    pub async fn set_member(&self, namespace: &str, account: &str, role: Role) -> Result<()> {
        let record = self.require(account).await?;
        if self.store.namespace(namespace).await?.is_none() {
            self.store
                .put_namespace(namespace, Visibility::Private)
                .await?;
        }
        Ok(self.store.set_member(namespace, record.id, role).await?)
    }

    async fn require(&self, name: &str) -> Result<AccountRecord> {
        self.store
            .account_by_name(name)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no account named {name:?}")))
    }
}

fn check_secret(secret: &str) -> Result<()> {
    if secret.len() < 8 || secret.len() > MAX_CREDENTIAL_LEN {
        return Err(RegistryError::InvalidArgument(format!(
            "a password must be 8 to {MAX_CREDENTIAL_LEN} bytes long"
        )));
    }
    Ok(())
}

async fn hash_on_blocking_thread(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| RegistryError::Storage(StorageError::backend(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let stored = hash_password("correct horse").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(secret_matches("correct horse", &stored));
        assert!(!secret_matches("correct horsf", &stored));
        assert!(!secret_matches("", &stored));
    }

    #[test]
    fn robot_secrets_are_random_and_stored_as_digests() {
        let (a, stored_a) = new_robot_secret().unwrap();
        let (b, _) = new_robot_secret().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(ROBOT_SECRET_PREFIX) && a.len() == ROBOT_SECRET_PREFIX.len() + 64);
        assert!(stored_a.starts_with("sha256:"));
        assert!(!stored_a.contains(&a));
        assert!(secret_matches(&a, &stored_a));
        assert!(!secret_matches(&b, &stored_a));
    }

    #[test]
    fn htpasswd_bcrypt_hashes_verify() {
        let stored = bcrypt::hash("htpass-123", 4).unwrap();
        assert!(stored.starts_with("$2"));
        assert!(secret_matches("htpass-123", &stored));
        assert!(!secret_matches("htpass-124", &stored));
        let y = stored.replacen("$2b$", "$2y$", 1);
        assert!(secret_matches("htpass-123", &y), "apache's $2y$ prefix");
    }

    #[test]
    fn garbage_hashes_never_match() {
        assert!(!secret_matches("x", "not a hash"));
        assert!(!secret_matches("x", "sha256:"));
        assert!(!secret_matches("", ""));
    }

    #[test]
    fn account_names_follow_the_rules() {
        for ok in ["ann", "ci-bot", "a.b_c", "0x"] {
            assert!(check_account_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Ann", "-ann", "a b", "a/b", "robot$ci", &"a".repeat(65)] {
            assert!(check_account_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expired_and_revoked_accounts_are_inactive() {
        let mut r = AccountRecord {
            id: 1,
            name: "ci".into(),
            kind: AccountKind::Robot,
            secret_hash: String::new(),
            registry_admin: false,
            created_at: 0,
            expires_at: Some(100),
            revoked_at: None,
            grants: Vec::new(),
        };
        assert!(r.active_at(99));
        assert!(!r.active_at(100));
        r.expires_at = None;
        assert!(r.active_at(i64::MAX));
        r.revoked_at = Some(5);
        assert!(!r.active_at(6));
    }
}
