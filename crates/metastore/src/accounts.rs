//! [`AccountStore`] for [`SqliteMetaStore`]: accounts, robot grants, namespaces, members.

use async_trait::async_trait;
use berth_registry::AccountStore;
use berth_registry::StorageError;
use berth_registry::access::{AccountKind, Actions, RepoPattern, RobotGrant, Role, Visibility};
use berth_registry::accounts::{
    AccessTokenRecord, AccountRecord, NamespaceRecord, NewAccessToken, NewAccount,
};
use berth_registry::ports::StoreResult;
use berth_registry::service::unix_now;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::sqlite::{SqliteMetaStore, db_err, keep};
use crate::writer::Durability;

fn corrupt(what: &str, value: &str) -> StorageError {
    StorageError::Backend(format!("corrupt {what} {value:?} in database"))
}

fn account_from(row: &SqliteRow, grants: Vec<RobotGrant>) -> StoreResult<AccountRecord> {
    let kind: String = row.try_get("kind").map_err(db_err)?;
    Ok(AccountRecord {
        id: row.try_get("id").map_err(db_err)?,
        name: row.try_get("name").map_err(db_err)?,
        kind: AccountKind::parse(&kind).ok_or_else(|| corrupt("account kind", &kind))?,
        secret_hash: row.try_get("secret_hash").map_err(db_err)?,
        registry_admin: row.try_get("registry_admin").map_err(db_err)?,
        created_at: row.try_get("created_at").map_err(db_err)?,
        expires_at: row.try_get("expires_at").map_err(db_err)?,
        revoked_at: row.try_get("revoked_at").map_err(db_err)?,
        grants,
    })
}

fn namespace_from(r: &SqliteRow) -> StoreResult<NamespaceRecord> {
    let public: bool = r.try_get(1).map_err(db_err)?;
    Ok(NamespaceRecord {
        name: r.try_get(0).map_err(db_err)?,
        visibility: if public {
            Visibility::Public
        } else {
            Visibility::Private
        },
    })
}

#[async_trait]
impl AccountStore for SqliteMetaStore {
    async fn account_count(&self) -> StoreResult<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM accounts")
            .fetch_one(&self.read)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(db_err)?;
        Ok(n as u64)
    }

    async fn create_account(&self, a: &NewAccount) -> StoreResult<Option<i64>> {
        let a = a.clone();
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let row = sqlx::query(
                        "INSERT INTO accounts (name, kind, secret_hash, registry_admin, created_at, expires_at)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING RETURNING id",
                    )
                    .bind(&a.name)
                    .bind(a.kind.as_str())
                    .bind(&a.secret_hash)
                    .bind(a.registry_admin)
                    .bind(unix_now())
                    .bind(a.expires_at)
                    .fetch_optional(&mut *conn)
                    .await?;
                    let Some(row) = row else { return Ok(None) };
                    let id: i64 = row.try_get(0)?;
                    for g in &a.grants {
                        sqlx::query(
                            "INSERT INTO robot_grants (account_id, pattern, actions) VALUES ($1, $2, $3)
                             ON CONFLICT (account_id, pattern) DO UPDATE SET actions = excluded.actions",
                        )
                        .bind(id)
                        .bind(g.pattern.as_str())
                        .bind(g.actions.to_string())
                        .execute(&mut *conn)
                        .await?;
                    }
                    Ok(Some(id))
                })
            })
            .await
    }

    async fn account_by_name(&self, name: &str) -> StoreResult<Option<AccountRecord>> {
        let Some(row) = sqlx::query(
            "SELECT id, name, kind, secret_hash, registry_admin, created_at, expires_at, revoked_at
             FROM accounts WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.read)
        .await
        .map_err(db_err)?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get("id").map_err(db_err)?;
        let grants = sqlx::query(
            "SELECT pattern, actions FROM robot_grants WHERE account_id = $1 ORDER BY pattern",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?
        .iter()
        .map(|g| {
            let pattern: String = g.try_get(0).map_err(db_err)?;
            let actions: String = g.try_get(1).map_err(db_err)?;
            Ok(RobotGrant {
                pattern: RepoPattern::parse(&pattern)
                    .map_err(|_| corrupt("grant pattern", &pattern))?,
                actions: Actions::parse_list(&actions),
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
        account_from(&row, grants).map(Some)
    }

    async fn list_accounts(&self) -> StoreResult<Vec<AccountRecord>> {
        let names: Vec<String> = sqlx::query("SELECT name FROM accounts ORDER BY name")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(db_err)?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(a) = self.account_by_name(&name).await? {
                out.push(a);
            }
        }
        Ok(out)
    }

    async fn revoke_account(&self, name: &str, at: i64) -> StoreResult<bool> {
        let name = name.to_owned();
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE accounts SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL",
                    )
                    .bind(at)
                    .bind(&name)
                    .execute(&mut *conn)
                    .await?;
                    Ok(done.rows_affected() > 0)
                })
            })
            .await
    }

    async fn set_secret(&self, name: &str, secret_hash: &str) -> StoreResult<bool> {
        let (name, hash) = (name.to_owned(), secret_hash.to_owned());
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let done = sqlx::query("UPDATE accounts SET secret_hash = $1 WHERE name = $2")
                        .bind(&hash)
                        .bind(&name)
                        .execute(&mut *conn)
                        .await?;
                    Ok(done.rows_affected() > 0)
                })
            })
            .await
    }

    async fn delete_account(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_owned();
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    // Explicit deletes: SQLite enforces ON DELETE CASCADE only with
                    // foreign keys on, and PostgreSQL will not need to be trusted on it.
                    for sql in [
                        "DELETE FROM robot_grants WHERE account_id IN (SELECT id FROM accounts WHERE name = $1)",
                        "DELETE FROM members WHERE account_id IN (SELECT id FROM accounts WHERE name = $1)",
                        "DELETE FROM access_tokens WHERE account_id IN (SELECT id FROM accounts WHERE name = $1)",
                    ] {
                        sqlx::query(sql).bind(&name).execute(&mut *conn).await?;
                    }
                    let done = sqlx::query("DELETE FROM accounts WHERE name = $1")
                        .bind(&name)
                        .execute(&mut *conn)
                        .await?;
                    Ok(done.rows_affected() > 0)
                })
            })
            .await
    }

    async fn list_namespaces(&self) -> StoreResult<Vec<NamespaceRecord>> {
        sqlx::query("SELECT name, public FROM namespaces ORDER BY name")
            .fetch_all(&self.read)
            .await
            .map_err(db_err)?
            .iter()
            .map(namespace_from)
            .collect()
    }

    async fn members(&self, namespace: &str) -> StoreResult<Vec<(String, Role)>> {
        sqlx::query(
            "SELECT a.name, m.role FROM members m JOIN accounts a ON a.id = m.account_id
             WHERE m.namespace = $1 ORDER BY a.name",
        )
        .bind(namespace)
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| {
            let name: String = r.try_get(0).map_err(db_err)?;
            let role: String = r.try_get(1).map_err(db_err)?;
            Ok((
                name,
                Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
            ))
        })
        .collect()
    }

    async fn remove_member(&self, namespace: &str, account_id: i64) -> StoreResult<bool> {
        let namespace = namespace.to_owned();
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let done =
                        sqlx::query("DELETE FROM members WHERE namespace = $1 AND account_id = $2")
                            .bind(&namespace)
                            .bind(account_id)
                            .execute(&mut *conn)
                            .await?;
                    Ok(done.rows_affected() > 0)
                })
            })
            .await
    }

    async fn create_access_token(&self, t: &NewAccessToken) -> StoreResult<Option<i64>> {
        let t = t.clone();
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let row = sqlx::query(
                        "INSERT INTO access_tokens (account_id, name, secret_hash, created_at, expires_at)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, name) DO NOTHING RETURNING id",
                    )
                    .bind(t.account_id)
                    .bind(&t.name)
                    .bind(&t.secret_hash)
                    .bind(unix_now())
                    .bind(t.expires_at)
                    .fetch_optional(&mut *conn)
                    .await?;
                    row.map(|r| r.try_get(0)).transpose()
                })
            })
            .await
    }

    async fn access_tokens(&self, account_id: i64) -> StoreResult<Vec<AccessTokenRecord>> {
        sqlx::query(
            "SELECT name, secret_hash, created_at, expires_at, revoked_at FROM access_tokens
             WHERE account_id = $1 ORDER BY name",
        )
        .bind(account_id)
        .fetch_all(&self.read)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| {
            Ok(AccessTokenRecord {
                name: r.try_get(0).map_err(db_err)?,
                secret_hash: r.try_get(1).map_err(db_err)?,
                created_at: r.try_get(2).map_err(db_err)?,
                expires_at: r.try_get(3).map_err(db_err)?,
                revoked_at: r.try_get(4).map_err(db_err)?,
            })
        })
        .collect()
    }

    async fn revoke_access_token(&self, account_id: i64, name: &str, at: i64) -> StoreResult<bool> {
        let name = name.to_owned();
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE access_tokens SET revoked_at = $1
                         WHERE account_id = $2 AND name = $3 AND revoked_at IS NULL",
                    )
                    .bind(at)
                    .bind(account_id)
                    .bind(&name)
                    .execute(&mut *conn)
                    .await?;
                    Ok(done.rows_affected() > 0)
                })
            })
            .await
    }

    async fn namespace(&self, name: &str) -> StoreResult<Option<NamespaceRecord>> {
        let row = sqlx::query("SELECT name, public FROM namespaces WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.as_ref().map(namespace_from).transpose()
    }

    async fn put_namespace(&self, name: &str, visibility: Visibility) -> StoreResult<()> {
        let name = name.to_owned();
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO namespaces (name, public, created_at) VALUES ($1, $2, $3)
                         ON CONFLICT (name) DO UPDATE SET public = excluded.public",
                    )
                    .bind(&name)
                    .bind(visibility == Visibility::Public)
                    .bind(unix_now())
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn set_member(&self, namespace: &str, account_id: i64, role: Role) -> StoreResult<()> {
        let namespace = namespace.to_owned();
        self.writer
            .write(Durability::Durable, keep, move |conn| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO members (namespace, account_id, role) VALUES ($1, $2, $3)
                         ON CONFLICT (namespace, account_id) DO UPDATE SET role = excluded.role",
                    )
                    .bind(&namespace)
                    .bind(account_id)
                    .bind(role.as_str())
                    .execute(&mut *conn)
                    .await?;
                    Ok(())
                })
            })
            .await
    }

    async fn role_of(&self, namespace: &str, account_id: i64) -> StoreResult<Option<Role>> {
        let row = sqlx::query("SELECT role FROM members WHERE namespace = $1 AND account_id = $2")
            .bind(namespace)
            .bind(account_id)
            .fetch_optional(&self.read)
            .await
            .map_err(db_err)?;
        row.map(|r| {
            let role: String = r.try_get(0).map_err(db_err)?;
            Role::parse(&role).ok_or_else(|| corrupt("role", &role))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use berth_oci::RepoName;
    use berth_registry::access::{Action, Principal};
    use berth_registry::accounts::Accounts;

    use super::*;

    async fn accounts() -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteMetaStore::open(&dir.path().join("meta.db"))
            .await
            .unwrap();
        (dir, Accounts::new(Arc::new(store)))
    }

    fn repo(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[tokio::test]
    async fn users_authenticate_with_their_password_only() {
        let (_dir, accounts) = accounts().await;
        assert!(!accounts.any().await.unwrap());
        accounts
            .add_user("ann", "s3cret-pass", false)
            .await
            .unwrap();
        assert!(accounts.any().await.unwrap());
        let ann = accounts.authenticate("ann", "s3cret-pass").await.unwrap();
        assert_eq!(ann.map(|a| a.name), Some("ann".to_owned()));
        assert!(
            accounts
                .authenticate("ann", "wrong-pass")
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            accounts
                .authenticate("bob", "s3cret-pass")
                .await
                .unwrap()
                .is_none()
        );
        let dup = accounts.add_user("ann", "another-pass", false).await;
        assert!(matches!(
            dup,
            Err(berth_registry::RegistryError::AlreadyExists(_))
        ));
    }

    #[tokio::test]
    async fn roles_and_visibility_decide_access() {
        let (_dir, accounts) = accounts().await;
        let ann = accounts
            .add_user("ann", "s3cret-pass", false)
            .await
            .unwrap();
        let ann = Principal::Account(ann);
        let app = repo("payments/api");
        assert_eq!(accounts.allowed(&ann, &app).await.unwrap(), Actions::NONE);
        accounts
            .set_member("payments", "ann", Role::Writer)
            .await
            .unwrap();
        assert_eq!(
            accounts.allowed(&ann, &app).await.unwrap(),
            Actions::PULL_PUSH
        );
        accounts
            .set_member("payments", "ann", Role::Reader)
            .await
            .unwrap();
        assert_eq!(accounts.allowed(&ann, &app).await.unwrap(), Actions::PULL);
        assert_eq!(
            accounts.allowed(&Principal::Anonymous, &app).await.unwrap(),
            Actions::NONE
        );
        accounts
            .set_namespace("payments", Visibility::Public)
            .await
            .unwrap();
        assert_eq!(
            accounts.allowed(&Principal::Anonymous, &app).await.unwrap(),
            Actions::PULL
        );
        assert_eq!(
            accounts.allowed(&ann, &repo("other/app")).await.unwrap(),
            Actions::NONE
        );
    }

    #[tokio::test]
    async fn robots_use_their_secret_and_grants() {
        let (_dir, accounts) = accounts().await;
        let grants = vec![RobotGrant {
            pattern: RepoPattern::parse("ci/*").unwrap(),
            actions: Actions::of(Action::Push).union(Actions::PULL),
        }];
        let (robot, secret) = accounts.add_robot("ci", grants, None).await.unwrap();
        let stored = accounts.get("ci").await.unwrap().unwrap();
        assert_ne!(
            stored.secret_hash, secret,
            "the secret itself is never stored"
        );
        let who = accounts.authenticate("ci", &secret).await.unwrap().unwrap();
        assert_eq!(who, robot);
        let p = Principal::Account(who);
        assert_eq!(
            accounts.allowed(&p, &repo("ci/app")).await.unwrap(),
            Actions::PULL_PUSH
        );
        assert_eq!(
            accounts.allowed(&p, &repo("prod/app")).await.unwrap(),
            Actions::NONE
        );
        assert!(
            accounts
                .authenticate("ci", "berth_wrong")
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn expired_robots_cannot_authenticate() {
        let (_dir, accounts) = accounts().await;
        let grants = vec![RobotGrant {
            pattern: RepoPattern::parse("**").unwrap(),
            actions: Actions::PULL,
        }];
        let (_, secret) = accounts
            .add_robot("old", grants, Some(unix_now() - 1))
            .await
            .unwrap();
        assert!(
            accounts
                .authenticate("old", &secret)
                .await
                .unwrap()
                .is_none()
        );
    }
}
