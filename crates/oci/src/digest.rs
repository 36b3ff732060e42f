//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the streaming hasher that makes them.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A digest algorithm berth can verify content with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// SHA-256, the default for every client.
    Sha256,
    /// SHA-512, selected with `digest-algorithm=sha512` or a `sha512:` digest.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears before the `:` of a digest.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the lowercase hex encoding of this algorithm's output.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Parses an algorithm name (`sha256`, `sha512`).
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha512" => Ok(Algorithm::Sha512),
            other => Err(DigestError::UnsupportedAlgorithm(truncate(other))),
        }
    }
}

/// Why a string is not a digest berth accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// The string has no `algorithm:encoded` shape.
    #[error("digest {0:?} is not of the form <algorithm>:<hex>")]
    Malformed(String),
    /// The algorithm is well formed but berth does not verify it.
    #[error("digest algorithm {0:?} is not supported; use sha256 or sha512")]
    UnsupportedAlgorithm(String),
    /// The encoded part is not lowercase hex of the right length.
    #[error("digest {0:?} must have {1} lowercase hex characters after the colon")]
    BadEncoding(String, usize),
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A validated content digest: an algorithm and its lowercase hex encoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    text: String,
    colon: usize,
}

impl Digest {
    /// The digest's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        // Validated at construction; the prefix is always one of the known names.
        if self.text.starts_with("sha512") {
            Algorithm::Sha512
        } else {
            Algorithm::Sha256
        }
    }

    /// The lowercase hex part after the colon.
    pub fn hex(&self) -> &str {
        &self.text[self.colon + 1..]
    }

    /// The full `algorithm:hex` string.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Digest of a byte slice (manifests are small and already in memory).
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = DigestHasher::new(algorithm);
        h.update(bytes);
        h.finalize()
    }

    fn from_parts(algorithm: Algorithm, hex: String) -> Digest {
        let name = algorithm.as_str();
        Digest {
            colon: name.len(),
            text: format!("{name}:{hex}"),
        }
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(truncate(s)))?;
        if alg.is_empty() || hex.is_empty() {
            return Err(DigestError::Malformed(truncate(s)));
        }
        let algorithm = Algorithm::parse(alg)?;
        let ok = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(DigestError::BadEncoding(truncate(s), algorithm.hex_len()));
        }
        Ok(Digest::from_parts(algorithm, hex.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// Incremental hasher for one algorithm; fed chunk by chunk while bytes stream to disk.
#[derive(Clone)]
pub enum DigestHasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl fmt::Debug for DigestHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DigestHasher({})", self.algorithm().as_str())
    }
}

impl DigestHasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => DigestHasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => DigestHasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            DigestHasher::Sha256(_) => Algorithm::Sha256,
            DigestHasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(bytes),
            DigestHasher::Sha512(h) => h.update(bytes),
        }
    }

    /// The digest of everything fed so far.
    pub fn finalize(self) -> Digest {
        let algorithm = self.algorithm();
        let hex = match self {
            DigestHasher::Sha256(h) => hex::encode(h.finalize()),
            DigestHasher::Sha512(h) => hex::encode(h.finalize()),
        };
        Digest::from_parts(algorithm, hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hashes_known_vectors() {
        assert_eq!(Digest::of(Algorithm::Sha256, b"").as_str(), EMPTY_SHA256);
        let d = Digest::of(Algorithm::Sha512, b"abc");
        assert!(d.hex().starts_with("ddaf35a193617aba"));
        assert_eq!(d.algorithm(), Algorithm::Sha512);
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut h = DigestHasher::new(Algorithm::Sha256);
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.finalize(), Digest::of(Algorithm::Sha256, b"hello world"));
    }

    #[test]
    fn parses_and_rejects() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.hex().len(), 64);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        for bad in [
            "",
            "sha256",
            "sha256:",
            ":abc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:../../../../etc/passwd",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} should be rejected");
        }
    }
}
