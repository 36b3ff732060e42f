//! Repository names, tags and the `<tag-or-digest>` reference, checked against the spec grammars.

use std::fmt;

use crate::digest::{Digest, DigestError};

/// Longest repository name berth accepts (clients cap `host/name` at 255 characters).
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag the spec allows.
pub const MAX_TAG_LEN: usize = 128;

/// Why a name, tag or reference was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The repository name breaks the spec's `<name>` grammar.
    #[error(
        "repository name {0:?} is invalid: use lowercase path components of [a-z0-9] joined by '.', '_', '__' or '-', separated by '/', at most 255 characters"
    )]
    InvalidName(String),
    /// The tag breaks `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    #[error("tag {0:?} is invalid: it must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    InvalidTag(String),
    /// The reference contained a `:` but was not a valid digest.
    #[error(transparent)]
    InvalidDigest(#[from] DigestError),
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A validated repository name such as `team/payments-api`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Validates `s` against `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(NameError::InvalidName(shorten(s)));
        }
        Ok(RepoName(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or one or more `-`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or '-'+ ; it must be followed by alnum.
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

/// A validated tag such as `v1.2.3` or `latest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// Validates `s` against `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_TAG_LEN
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-');
        if ok {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::InvalidTag(shorten(s)))
        }
    }

    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `<tag-or-digest>` part of a manifest URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A mutable tag.
    Tag(Tag),
    /// An immutable content digest.
    Digest(Digest),
}

impl Reference {
    /// A reference containing `:` is a digest; anything else must be a tag.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(Tag::parse(s)?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for ok in [
            "a",
            "library/ubuntu",
            "team/payments-api",
            "a__b",
            "a---b",
            "a.b_c/d-e/f",
            "0/1/2/3/4/5/6/7/8/9",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok} should be accepted");
        }
    }

    #[test]
    fn rejects_bad_names() {
        let long = "a".repeat(256);
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "a___b",
            "a..b",
            "a._b",
            "-a",
            "a-",
            "..",
            "a/../b",
            "a b",
            long.as_str(),
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn tags() {
        assert!(Tag::parse("latest").is_ok());
        assert!(Tag::parse("_x.Y-1").is_ok());
        assert!(Tag::parse(&"a".repeat(128)).is_ok());
        assert!(Tag::parse(&"a".repeat(129)).is_err());
        assert!(Tag::parse(".x").is_err());
        assert!(Tag::parse("-x").is_err());
        assert!(Tag::parse("a/b").is_err());
        assert!(Tag::parse("").is_err());
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("v1"), Ok(Reference::Tag(_))));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(Reference::parse(d), Ok(Reference::Digest(_))));
        assert!(Reference::parse("sha256:zz").is_err());
    }
}
