//! Lifecycle policies put to work: which policy governs a repository, what would expire
//! now (preview), and expiring it (apply), through the [`crate::LifecycleStore`] port.
//!
//! A repository is governed by the policy of the nearest scope that contains it: its own,
//! else its parent path's, up to its namespace's. Rules see a
//! repository's images: manifests other than index children and referrers of a present
//! subject, which go with their parent. Expiring an image re-checks in its transaction
//! that its tags are still the ones evaluated, so a tag pushed meanwhile saves it.

use berth_oci::{Digest, RepoName, Tag};

use crate::error::{RegistryError, Result};
use crate::immutability::protecting;
use crate::lifecycle::{self, Expiry, Image, LifecyclePolicy};
use crate::service::{Registry, unix_now_ms};
use crate::types::Actor;

/// One image a policy expires, in one repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedExpiry {
    /// The repository.
    pub repository: RepoName,
    /// The image and why.
    pub expiry: Expiry,
}

/// An image expired by [`Registry::lifecycle_apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpiredImage {
    /// What was planned.
    pub planned: PlannedExpiry,
    /// Every manifest deleted: the image first, then children and referrers only it kept.
    pub removed: Vec<Digest>,
}

/// `a/b/c`, `a/b`, `a`: the scopes whose policy may govern `repo`, nearest first.
fn enclosing_scopes(repo: &RepoName) -> impl Iterator<Item = &str> {
    let name = repo.as_str();
    std::iter::once(name).chain(name.rmatch_indices('/').map(move |(i, _)| &name[..i]))
}

impl Registry {
    /// Stores a lifecycle policy for a repository or namespace after validating it; the
    /// error names the offending rule.
    pub async fn put_lifecycle_policy(
        &self,
        scope: &RepoName,
        json: &str,
    ) -> Result<LifecyclePolicy> {
        let policy =
            lifecycle::parse(json).map_err(|e| RegistryError::InvalidArgument(e.to_string()))?;
        self.meta
            .put_lifecycle_policy(scope.as_str(), json, unix_now_ms())
            .await?;
        Ok(policy)
    }

    /// The policy stored for exactly `scope`, verbatim.
    pub async fn lifecycle_policy(&self, scope: &RepoName) -> Result<String> {
        self.meta
            .lifecycle_policy(scope.as_str())
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("{scope} has no lifecycle policy")))
    }

    /// Removes the policy of `scope`.
    pub async fn remove_lifecycle_policy(&self, scope: &RepoName) -> Result<()> {
        if self.meta.remove_lifecycle_policy(scope.as_str()).await? {
            Ok(())
        } else {
            Err(RegistryError::NotFound(format!(
                "{scope} has no lifecycle policy"
            )))
        }
    }

    /// The policy governing `repo`: that of the nearest enclosing scope.
    async fn governing_policy(&self, repo: &RepoName) -> Result<Option<LifecyclePolicy>> {
        let mut json = None;
        for scope in enclosing_scopes(repo) {
            json = self.meta.lifecycle_policy(scope).await?;
            if json.is_some() {
                break;
            }
        }
        json.map(|j| {
            lifecycle::parse(&j).map_err(|e| {
                RegistryError::Storage(crate::StorageError::Backend(format!(
                    "stored lifecycle policy of {repo} no longer parses: {e}"
                )))
            })
        })
        .transpose()
    }

    /// What the governing policies would expire now (`now_ms`) in `scope` (a repository or
    /// a namespace), and why.
    pub async fn lifecycle_preview(
        &self,
        scope: &RepoName,
        now_ms: i64,
    ) -> Result<Vec<PlannedExpiry>> {
        let mut planned = Vec::new();
        let rules = self.meta.immutability_rules().await?;
        for repo in self.meta.repos_within(scope.as_str()).await? {
            let Some(policy) = self.governing_policy(&repo).await? else {
                continue;
            };
            let images: Vec<Image> = self
                .meta
                .lifecycle_images(&repo)
                .await?
                .into_iter()
                .map(|i| Image {
                    protected: i.tags.iter().any(|t| {
                        Tag::parse(t).is_ok_and(|t| protecting(&rules, &repo, &t).is_some())
                    }),
                    digest: i.digest.to_string(),
                    tags: i.tags,
                    pushed_ms: i.pushed_at.saturating_mul(1000),
                    last_pulled_ms: i.last_pulled_ms,
                })
                .collect();
            planned.extend(
                lifecycle::evaluate(&policy, &images, now_ms)
                    .into_iter()
                    .map(|expiry| PlannedExpiry {
                        repository: repo.clone(),
                        expiry,
                    }),
            );
        }
        Ok(planned)
    }

    /// Expires what [`Registry::lifecycle_preview`] lists for the same moment; returns what
    /// was deleted (an image whose tags changed since the evaluation is left alone).
    pub async fn lifecycle_apply(
        &self,
        scope: &RepoName,
        now_ms: i64,
        actor: &Actor,
    ) -> Result<Vec<ExpiredImage>> {
        let mut done = Vec::new();
        for planned in self.lifecycle_preview(scope, now_ms).await? {
            let digest: Digest = planned.expiry.digest.parse().map_err(|e| {
                RegistryError::Storage(crate::StorageError::Backend(format!("bad digest: {e}")))
            })?;
            let reason = format!("lifecycle policy, {}", planned.expiry.reason);
            let removed = self
                .meta
                .expire_image(
                    &planned.repository,
                    &digest,
                    &planned.expiry.tags,
                    &reason,
                    actor,
                )
                .await?;
            if removed.is_empty() {
                continue;
            }
            let tags: Vec<Tag> = planned
                .expiry
                .tags
                .iter()
                .filter_map(|t| Tag::parse(t).ok())
                .collect();
            self.cache.tags_changed(&planned.repository, &tags);
            for d in &removed {
                self.cache.manifest_deleted(&planned.repository, d);
            }
            done.push(ExpiredImage { planned, removed });
        }
        Ok(done)
    }

    /// Deletes a manifest together with what only it kept: its untagged referrers
    /// (signatures, SBOMs, attestations) and the untagged children no other index lists
    /// (`--cascade`). Returns every digest deleted, the manifest's first. Refused like a
    /// plain delete when an immutability rule protects one of its tags.
    pub async fn delete_cascade(
        &self,
        repo: &RepoName,
        digest: &Digest,
        actor: &Actor,
    ) -> Result<Vec<Digest>> {
        let rules = self.meta.immutability_rules().await?;
        let tags = self.meta.tags_of(repo, digest).await?;
        for tag in &tags {
            if let Some(rule) = protecting(&rules, repo, tag) {
                let message =
                    format!("tag {tag} of {repo} is immutable ({rule}) and cannot be deleted");
                self.deny(repo, Some(tag), Some(digest), &message, actor);
                return Err(RegistryError::Denied(message));
            }
        }
        let names: Vec<String> = tags.iter().map(|t| t.as_str().to_owned()).collect();
        let removed = self
            .meta
            .expire_image(
                repo,
                digest,
                &names,
                "deleted with its referrers (--cascade)",
                actor,
            )
            .await?;
        if removed.is_empty() {
            return Err(match self.meta.get_manifest(repo, digest).await? {
                None => RegistryError::ManifestUnknown(format!("{digest} is not in {repo}")),
                Some(_) => RegistryError::Unsupported(format!(
                    "{digest} is listed by an index in {repo} (delete the index first), or its tags changed meanwhile (try again)"
                )),
            });
        }
        self.cache.tags_changed(repo, &tags);
        for d in &removed {
            self.cache.manifest_deleted(repo, d);
        }
        Ok(removed)
    }

    /// Applies every stored policy once (the scheduled evaluation); returns the images
    /// expired.
    pub async fn apply_lifecycle_policies(&self, actor: &Actor) -> Result<usize> {
        let mut scopes: Vec<String> = self
            .meta
            .lifecycle_policies()
            .await?
            .into_iter()
            .map(|(scope, _)| scope)
            .collect();
        // A scope's run covers the policies of the scopes inside it (each repository is
        // evaluated under its nearest policy).
        scopes.sort();
        let mut covered: Vec<String> = Vec::new();
        let mut expired = 0;
        for scope in scopes {
            if covered.iter().any(|c| scope.starts_with(&format!("{c}/"))) {
                continue;
            }
            let Ok(name) = RepoName::parse(&scope) else {
                continue;
            };
            expired += self
                .lifecycle_apply(&name, unix_now_ms(), actor)
                .await?
                .len();
            covered.push(scope);
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_is_governed_by_its_nearest_scope() {
        let repo = RepoName::parse("payments/api/worker").unwrap();
        let scopes: Vec<&str> = enclosing_scopes(&repo).collect();
        assert_eq!(scopes, ["payments/api/worker", "payments/api", "payments"]);
        let single = RepoName::parse("app").unwrap();
        assert_eq!(enclosing_scopes(&single).collect::<Vec<_>>(), ["app"]);
    }
}
