//! Tag immutability rules: which tags may never move to another digest (nor be deleted).
//!
//! One rule covers repositories matching a pattern and either all tags, all tags except
//! some (ECR's IMMUTABLE_WITH_EXCLUSION), or only tags matching patterns (Harbor's rules:
//! `v*` immutable, `latest` mutable). Pushing the same digest again is always allowed, so
//! CI re-runs do not fail.

use std::fmt;

use berth_oci::{RepoName, Tag};

use crate::access::{RepoPattern, glob_segment};

/// A tag glob: `*` matches any run of characters (`v*`, `release-*-final`, `*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagPattern(String);

impl TagPattern {
    /// Checks the pattern: tag characters (`A-Za-z0-9_.-`) and `*`, 1–128 long.
    pub fn parse(s: &str) -> Result<TagPattern, String> {
        let ok = (1..=128).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-*".contains(c));
        if ok {
            Ok(TagPattern(s.to_owned()))
        } else {
            Err(format!(
                "invalid tag pattern {s:?}: use tag characters (A-Z a-z 0-9 _ . -) and `*`"
            ))
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `tag` matches.
    pub fn matches(&self, tag: &str) -> bool {
        glob_segment(self.0.as_bytes(), tag.as_bytes())
    }
}

/// One immutability rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImmutabilityRule {
    /// Database id (what `berth immutable remove` takes).
    pub id: i64,
    /// Which repositories.
    pub repositories: RepoPattern,
    /// Which tags are immutable; empty means all.
    pub tags: Vec<TagPattern>,
    /// Tags left mutable even when `tags` matches them.
    pub except: Vec<TagPattern>,
}

impl ImmutabilityRule {
    /// Whether this rule makes `tag` in `repo` immutable.
    pub fn protects(&self, repo: &RepoName, tag: &Tag) -> bool {
        let t = tag.as_str();
        self.repositories.matches(repo)
            && (self.tags.is_empty() || self.tags.iter().any(|p| p.matches(t)))
            && !self.except.iter().any(|p| p.matches(t))
    }
}

impl fmt::Display for ImmutabilityRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |v: &[TagPattern]| {
            v.iter()
                .map(TagPattern::as_str)
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            "rule #{}: repositories {}",
            self.id,
            self.repositories.as_str()
        )?;
        if self.tags.is_empty() {
            f.write_str(", all tags")?;
        } else {
            write!(f, ", tags {}", join(&self.tags))?;
        }
        if !self.except.is_empty() {
            write!(f, ", except {}", join(&self.except))?;
        }
        Ok(())
    }
}

/// The first rule that makes `tag` in `repo` immutable.
pub fn protecting<'r>(
    rules: &'r [ImmutabilityRule],
    repo: &RepoName,
    tag: &Tag,
) -> Option<&'r ImmutabilityRule> {
    rules.iter().find(|r| r.protects(repo, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(repos: &str, tags: &[&str], except: &[&str]) -> ImmutabilityRule {
        ImmutabilityRule {
            id: 1,
            repositories: RepoPattern::parse(repos).unwrap(),
            tags: tags.iter().map(|t| TagPattern::parse(t).unwrap()).collect(),
            except: except
                .iter()
                .map(|t| TagPattern::parse(t).unwrap())
                .collect(),
        }
    }

    fn protects(r: &ImmutabilityRule, repo: &str, tag: &str) -> bool {
        r.protects(&RepoName::parse(repo).unwrap(), &Tag::parse(tag).unwrap())
    }

    #[test]
    fn all_tags_immutable() {
        let r = rule("team/*", &[], &[]);
        assert!(protects(&r, "team/app", "latest"));
        assert!(protects(&r, "team/app", "v1"));
        assert!(!protects(&r, "other/app", "v1"));
    }

    #[test]
    fn all_tags_except_some_like_ecr() {
        let r = rule("**", &[], &["latest", "dev-*"]);
        assert!(protects(&r, "a/b", "v1.2.3"));
        assert!(!protects(&r, "a/b", "latest"));
        assert!(!protects(&r, "a/b", "dev-42"));
    }

    #[test]
    fn only_matching_tags_like_harbor() {
        let r = rule("payments/**", &["v*"], &[]);
        assert!(protects(&r, "payments/api", "v1"));
        assert!(protects(&r, "payments/api/worker", "v2.0"));
        assert!(!protects(&r, "payments/api", "latest"));
    }

    #[test]
    fn tag_globs_match_whole_tags() {
        let p = TagPattern::parse("release-*-final").unwrap();
        assert!(p.matches("release-1.2-final"));
        assert!(!p.matches("release-1.2-final2"));
        assert!(TagPattern::parse("*").unwrap().matches("anything"));
        assert!(TagPattern::parse("bad/tag").is_err());
        assert!(TagPattern::parse("").is_err());
    }

    #[test]
    fn rules_describe_themselves_for_error_messages() {
        let r = rule("team/*", &["v*"], &["v0*"]);
        assert_eq!(
            r.to_string(),
            "rule #1: repositories team/*, tags v*, except v0*"
        );
    }
}
