//! Bearer tokens for the docker token flow: ES256 JWTs signed with a key kept in the data directory.
//!
//! berth is both the token service and the registry, so it signs the tokens it later verifies.
//! Access tokens follow the distribution JWT spec (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`,
//! `jti`, `access`); refresh tokens (OAuth2 `refresh_token` grant) are JWTs of the same key
//! carrying a different `token_use` claim, so neither can stand in for the other.
//!
//! Verification only ever accepts ES256 with berth's own key: the `alg` and `kid` of the header
//! are checked before any cryptography, so `alg: none`, HMAC key confusion and foreign keys are
//! refused up front (and again by `jsonwebtoken`, which is told ES256 only).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 30;

/// Longest token accepted for verification; anything larger is refused before parsing.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// The only `alg` berth signs with and accepts.
const ALG: &str = "ES256";

/// The signing key and what verification needs, loaded once at start and shared by handlers.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    kid: String,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKeys")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What a token grants (the claims the token service decided on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// Account name; `""` for an anonymous client, as the spec asks.
    pub subject: String,
    /// The service the token is for (`aud`), the `service` of the token request.
    pub audience: String,
    /// The granted (intersected) access, possibly empty.
    pub access: Vec<AccessEntry>,
    /// How long the token stays valid.
    pub lifetime: Duration,
}

/// One `access` claim entry, exactly the JSON shape of the spec:
/// `{"type": "repository", "name": "samalba/my-app", "actions": ["pull","push"]}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AccessEntry {
    /// Resource type, e.g. `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Resource name, e.g. `samalba/my-app` or `catalog`.
    pub name: String,
    /// Actions allowed on the resource, e.g. `pull`, `push`, `delete`, `*`.
    pub actions: Vec<String>,
}

/// A signed token and the fields the token endpoint returns with it.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT, sent back as `token` / `access_token`.
    pub token: String,
    /// Seconds the token stays valid from `issued_at`.
    pub expires_in: u64,
    /// RFC 3339 UTC time the token was issued (second precision).
    pub issued_at: String,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token is a credential: keep it out of logs.
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("issued_at", &self.issued_at)
            .finish()
    }
}

/// The claims of an access token that passed verification, for authorizing a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// Account name, `""` for anonymous.
    pub sub: String,
    /// Granted access entries.
    pub access: Vec<AccessEntry>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Unique token id, for audit or replay tracking.
    pub jti: String,
    /// Issuer (always this registry's issuer once verified).
    pub iss: String,
    /// Audience (always the verified service).
    pub aud: String,
    /// Issue time, seconds since the Unix epoch.
    pub iat: u64,
    /// Not-before time, seconds since the Unix epoch.
    pub nbf: u64,
}

/// Why a token was refused or could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The signing key could not be read, parsed, generated or stored.
    Key(String),
    /// A token could not be signed (clock or crypto failure).
    Sign(String),
    /// Not a well-formed token: shape, base64, JSON, or a missing claim.
    Malformed(String),
    /// The header names an algorithm other than ES256 (`none`, HS256, RS256, ...).
    Algorithm(String),
    /// The header's `kid` is not berth's key.
    UnknownKey,
    /// The signature does not match (forged, tampered with, or another key's).
    Signature,
    /// `exp` has passed (beyond the leeway).
    Expired,
    /// `nbf` is still in the future (beyond the leeway).
    NotYetValid,
    /// `iss` is not this registry.
    Issuer,
    /// `aud` is not the service being accessed.
    Audience,
    /// A refresh token where an access token was expected, or the reverse.
    WrongUse,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Key(m) => write!(f, "token signing key: {m}"),
            TokenError::Sign(m) => write!(f, "signing token: {m}"),
            TokenError::Malformed(m) => write!(f, "malformed token: {m}"),
            TokenError::Algorithm(alg) => {
                write!(
                    f,
                    "token algorithm {alg:?} refused (only {ALG} is accepted)"
                )
            }
            TokenError::UnknownKey => f.write_str("token was not signed by this registry's key"),
            TokenError::Signature => f.write_str("token signature is invalid"),
            TokenError::Expired => f.write_str("token has expired"),
            TokenError::NotYetValid => f.write_str("token is not valid yet"),
            TokenError::Issuer => f.write_str("token issuer is not this registry"),
            TokenError::Audience => f.write_str("token audience is not this service"),
            TokenError::WrongUse => {
                f.write_str("token is of the wrong kind (access vs refresh token)")
            }
        }
    }
}

impl std::error::Error for TokenError {}

impl TokenError {
    /// Maps a `jsonwebtoken` verification failure to the reason a client or log should see.
    fn from_jwt(e: jsonwebtoken::errors::Error) -> TokenError {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidSignature => TokenError::Signature,
            K::ExpiredSignature => TokenError::Expired,
            K::ImmatureSignature => TokenError::NotYetValid,
            K::InvalidIssuer => TokenError::Issuer,
            K::InvalidAudience => TokenError::Audience,
            _ => TokenError::Malformed(e.to_string()),
        }
    }
}

/// Which half of the OAuth2 pair a token is; stored in the `token_use` claim.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum TokenUse {
    Access,
    Refresh,
}

/// The claim set of both token kinds.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    /// Present (possibly empty) on access tokens, absent on refresh tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access: Option<Vec<AccessEntry>>,
    token_use: TokenUse,
}

/// The header fields checked before any cryptography.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

impl TokenKeys {
    /// Loads the ES256 signing key (PKCS#8 DER) from `path`, generating it on first start;
    /// `issuer` is what tokens carry in `iss` and what verification demands.
    ///
    /// A new key file is written with mode 0600 under a temporary name in the same directory,
    /// fsynced, then renamed into place. An existing file that is not a P-256 PKCS#8 key is an
    /// error, never silently replaced (that would invalidate every outstanding token).
    pub fn load_or_create(path: &Path, issuer: &str) -> Result<TokenKeys, TokenError> {
        let pkcs8 = match fs::read(path) {
            Ok(bytes) => {
                warn_if_readable_by_others(path);
                bytes
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_key_file(path)?,
            Err(e) => {
                return Err(TokenError::Key(format!("reading {}: {e}", path.display())));
            }
        };
        TokenKeys::from_pkcs8(&pkcs8, issuer)
            .map_err(|e| TokenError::Key(format!("{}: {e}", path.display())))
    }

    /// Builds the keys from PKCS#8 DER bytes of a P-256 key.
    fn from_pkcs8(pkcs8: &[u8], issuer: &str) -> Result<TokenKeys, String> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
            .map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))?;
        let public = pair.public_key().as_ref();
        let kid = key_id(public)?;
        Ok(TokenKeys {
            encoding: EncodingKey::from_ec_der(pkcs8),
            decoding: DecodingKey::from_ec_der(public),
            issuer: issuer.to_owned(),
            kid,
        })
    }

    /// Signs an access token for `grant`.
    pub fn issue(&self, grant: &TokenGrant) -> Result<IssuedToken, TokenError> {
        self.issue_at(grant, unix_now()?)
    }

    /// Signs an access token as if issued at `now` (seconds since the epoch).
    fn issue_at(&self, grant: &TokenGrant, now: u64) -> Result<IssuedToken, TokenError> {
        let lifetime = grant.lifetime.as_secs();
        let issued_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(now))
            .ok_or_else(|| TokenError::Sign("issue time out of range".to_owned()))?;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: grant.subject.clone(),
            aud: grant.audience.clone(),
            exp: now.saturating_add(lifetime),
            nbf: now,
            iat: now,
            jti: new_jti()?,
            access: Some(grant.access.clone()),
            token_use: TokenUse::Access,
        };
        Ok(IssuedToken {
            token: self.sign(&claims)?,
            expires_in: lifetime,
            issued_at: humantime::format_rfc3339_seconds(issued_at).to_string(),
        })
    }

    /// Checks an access token for `service` and returns its claims.
    ///
    /// Refused unless: the header is `alg: ES256` with berth's `kid`, the signature verifies,
    /// `iss` is this issuer, `aud` is `service`, `exp`/`nbf` hold (30 s leeway), and the token
    /// is an access token rather than a refresh token.
    pub fn verify(&self, token: &str, service: &str) -> Result<TokenClaims, TokenError> {
        let claims = self.decode(token, service)?;
        if claims.token_use != TokenUse::Access {
            return Err(TokenError::WrongUse);
        }
        Ok(TokenClaims {
            sub: claims.sub,
            access: claims.access.unwrap_or_default(),
            exp: claims.exp,
            jti: claims.jti,
            iss: claims.iss,
            aud: claims.aud,
            iat: claims.iat,
            nbf: claims.nbf,
        })
    }

    /// A long-lived refresh token for `subject` at `service` (OAuth2 `refresh_token` grant,
    /// as docker and containerd use); it carries no access and is refused by [`Self::verify`].
    pub fn issue_refresh(
        &self,
        subject: &str,
        service: &str,
        lifetime: Duration,
    ) -> Result<String, TokenError> {
        let now = unix_now()?;
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: service.to_owned(),
            exp: now.saturating_add(lifetime.as_secs()),
            nbf: now,
            iat: now,
            jti: new_jti()?,
            access: None,
            token_use: TokenUse::Refresh,
        };
        self.sign(&claims)
    }

    /// Verifies a refresh token for `service` and returns its subject.
    ///
    /// Refresh tokens are stateless: the caller must still check that the account exists
    /// and may have the access it then asks for.
    pub fn verify_refresh(&self, token: &str, service: &str) -> Result<String, TokenError> {
        let claims = self.decode(token, service)?;
        if claims.token_use != TokenUse::Refresh {
            return Err(TokenError::WrongUse);
        }
        Ok(claims.sub)
    }

    /// Signs `claims` with the ES256 key, header `{"typ":"JWT","alg":"ES256","kid":...}`.
    fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    /// Checks header, signature and registered claims of either token kind.
    fn decode(&self, token: &str, service: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed(format!(
                "longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        self.check_header(token)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&[service]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(TokenError::from_jwt)
    }

    /// Refuses, before any cryptography, a token whose header is not ES256 with berth's `kid`
    /// or that lists `crit` extensions berth does not implement.
    fn check_header(&self, token: &str) -> Result<(), TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "not three dot-separated parts".to_owned(),
            ));
        };
        let raw = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|e| TokenError::Malformed(format!("header is not base64url: {e}")))?;
        let header: RawHeader = serde_json::from_slice(&raw)
            .map_err(|e| TokenError::Malformed(format!("header is not a JOSE header: {e}")))?;
        if header.alg != ALG {
            return Err(TokenError::Algorithm(header.alg));
        }
        if header.crit.is_some() {
            return Err(TokenError::Malformed(
                "critical header extensions are not supported".to_owned(),
            ));
        }
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(TokenError::UnknownKey);
        }
        Ok(())
    }
}

/// The `kid` of a P-256 public key (uncompressed point): its RFC 7638 JWK thumbprint,
/// base64url SHA-256 of `{"crv":"P-256","kty":"EC","x":...,"y":...}`.
fn key_id(public: &[u8]) -> Result<String, String> {
    let [0x04, coords @ ..] = public else {
        return Err("public key is not an uncompressed P-256 point".to_owned());
    };
    if coords.len() != 64 {
        return Err("public key is not an uncompressed P-256 point".to_owned());
    }
    let (x, y) = coords.split_at(32);
    let jwk = format!(
        r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(x),
        URL_SAFE_NO_PAD.encode(y)
    );
    Ok(URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, jwk.as_bytes())))
}

/// A fresh `jti`: 16 random bytes, base64url.
fn new_jti() -> Result<String, TokenError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| TokenError::Sign("random generator failed".to_owned()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Seconds since the Unix epoch.
fn unix_now() -> Result<u64, TokenError> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| TokenError::Sign("system clock is before 1970".to_owned()))
}

/// Generates a P-256 key and stores it at `path` (mode 0600, temp file + fsync + rename).
fn create_key_file(path: &Path) -> Result<Vec<u8>, TokenError> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|_| TokenError::Key("generating a P-256 key failed".to_owned()))?;
    let pkcs8 = doc.as_ref().to_vec();
    let io_err = |what: &str, p: &Path, e: io::Error| {
        TokenError::Key(format!("{what} {}: {e}", p.display()))
    };

    let Some(name) = path.file_name() else {
        return Err(TokenError::Key(format!(
            "{} is not a file path",
            path.display()
        )));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| io_err("creating", &dir, e))?;

    let mut suffix = [0u8; 8];
    aws_lc_rs::rand::fill(&mut suffix)
        .map_err(|_| TokenError::Key("random generator failed".to_owned()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        URL_SAFE_NO_PAD.encode(suffix)
    ));

    let written = write_synced(&tmp, &pkcs8).and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        // Best effort: the temp file is useless once anything above failed.
        let _ = fs::remove_file(&tmp);
        return Err(io_err("writing", path, e));
    }
    // Make the rename itself durable.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing", &dir, e))?;
    tracing::info!(path = %path.display(), "generated token signing key");
    Ok(pkcs8)
}

/// Creates `path` (which must not exist) with mode 0600, writes `bytes` and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Warns when the key file can be read by group or others: anyone who can read it can mint tokens.
fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "token signing key is accessible to other users; chmod 600 it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory removed on drop (the crate has no `tempfile` dev-dependency).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let mut b = [0u8; 8];
            aws_lc_rs::rand::fill(&mut b).unwrap();
            let p = std::env::temp_dir()
                .join(format!("berth-token-test-{}", URL_SAFE_NO_PAD.encode(b)));
            fs::create_dir(&p).unwrap();
            TempDir(p)
        }

        fn key(&self) -> PathBuf {
            self.0.join("token.key")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const SERVICE: &str = "registry.example.com";
    const ISSUER: &str = "berth-token";

    fn keys(dir: &TempDir) -> TokenKeys {
        TokenKeys::load_or_create(&dir.key(), ISSUER).unwrap()
    }

    fn grant() -> TokenGrant {
        TokenGrant {
            subject: "jlhawn".to_owned(),
            audience: SERVICE.to_owned(),
            access: vec![AccessEntry {
                kind: "repository".to_owned(),
                name: "samalba/my-app".to_owned(),
                actions: vec!["pull".to_owned(), "push".to_owned()],
            }],
            lifetime: Duration::from_secs(300),
        }
    }

    fn now() -> u64 {
        unix_now().unwrap()
    }

    fn b64json(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn parts(token: &str) -> Vec<String> {
        token.split('.').map(str::to_owned).collect()
    }

    /// An access token for [`grant`] with `lifetime`, as if issued at `issued_at`.
    fn token_issued_at(k: &TokenKeys, lifetime: Duration, issued_at: u64) -> String {
        let g = TokenGrant {
            lifetime,
            ..grant()
        };
        k.issue_at(&g, issued_at).unwrap().token
    }

    /// Access-token claims for this issuer and `SERVICE`, valid from now for 300 s, built by
    /// hand rather than by [`TokenKeys::issue`] so tests can sign them with a forged header/key.
    fn forged_claims(sub: &str, jti: &str, access: Vec<AccessEntry>) -> Claims {
        let t = now();
        Claims {
            iss: ISSUER.to_owned(),
            sub: sub.to_owned(),
            aud: SERVICE.to_owned(),
            exp: t + 300,
            nbf: t,
            iat: t,
            jti: jti.to_owned(),
            access: Some(access),
            token_use: TokenUse::Access,
        }
    }

    /// A JWT header with `alg` and `kid`, as [`TokenKeys::sign`] would write for ES256.
    fn header_with(alg: Algorithm, kid: &str) -> Header {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        header
    }

    /// Signs `claims` under `header` with an arbitrary `key`.
    fn sign_with(header: &Header, claims: &Claims, key: &EncodingKey) -> String {
        jsonwebtoken::encode(header, claims, key).unwrap()
    }

    /// An unsigned `header.payload.` token from raw JSON header text and a claims value.
    fn unsigned(header: &str, payload: &serde_json::Value) -> String {
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        )
    }

    #[test]
    fn round_trip_keeps_subject_and_access() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let g = grant();
        let issued = k.issue(&g).unwrap();
        let claims = k.verify(&issued.token, SERVICE).unwrap();
        assert_eq!(claims.sub, "jlhawn");
        assert_eq!(claims.access, g.access);
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, SERVICE);
        assert_eq!(claims.exp, claims.iat + 300);
        assert_eq!(issued.expires_in, 300);
        let issued_at = humantime::parse_rfc3339(&issued.issued_at).unwrap();
        assert_eq!(
            issued_at.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            claims.iat
        );
    }

    #[test]
    fn anonymous_token_with_no_access_round_trips() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let g = TokenGrant {
            subject: String::new(),
            access: Vec::new(),
            ..grant()
        };
        let claims = k.verify(&k.issue(&g).unwrap().token, SERVICE).unwrap();
        assert_eq!(claims.sub, "");
        assert!(claims.access.is_empty());
    }

    #[test]
    fn token_has_the_spec_header_and_claim_set() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let token = k.issue(&grant()).unwrap().token;
        let p = parts(&token);
        assert_eq!(p.len(), 3);
        let header = b64json(&p[0]);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], k.kid.as_str());
        let claims = b64json(&p[1]);
        for name in ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"] {
            assert!(claims.get(name).is_some(), "claim {name} missing");
        }
        assert_eq!(
            claims["access"],
            serde_json::json!([{"type": "repository", "name": "samalba/my-app", "actions": ["pull", "push"]}])
        );
        // ES256 signatures are the fixed 64-byte r||s form.
        assert_eq!(URL_SAFE_NO_PAD.decode(&p[2]).unwrap().len(), 64);
    }

    #[test]
    fn jti_is_random_per_token() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let a = k
            .verify(&k.issue(&grant()).unwrap().token, SERVICE)
            .unwrap();
        let b = k
            .verify(&k.issue(&grant()).unwrap().token, SERVICE)
            .unwrap();
        assert_ne!(a.jti, b.jti);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a.jti).unwrap().len(), 16);
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        let dir = TempDir::new();
        let k = keys(&dir);
        // Cross-check against jsonwebtoken's own RFC 7638 implementation.
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&k.encoding, Algorithm::ES256).unwrap();
        let expected = jwk
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap();
        assert_eq!(k.kid, expected);
        let public = k.decoding.try_get_as_bytes().unwrap();
        assert!(key_id(&public[..64]).is_err());
        assert!(key_id(&[]).is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let header = format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, k.kid);
        let t = now();
        let payload = serde_json::json!({
            "iss": ISSUER, "sub": "jlhawn", "aud": SERVICE,
            "exp": t + 300, "nbf": t, "iat": t, "jti": "x", "token_use": "access",
            "access": [{"type": "repository", "name": "samalba/my-app", "actions": ["push", "pull"]}],
        });
        let token = unsigned(&header, &payload);
        assert_eq!(
            k.verify(&token, SERVICE),
            Err(TokenError::Algorithm("none".to_owned()))
        );
        // Same with the spelling variants some libraries accepted.
        let header = format!(r#"{{"alg":"None","typ":"JWT","kid":"{}"}}"#, k.kid);
        let token = unsigned(&header, &payload);
        assert!(matches!(
            k.verify(&token, SERVICE),
            Err(TokenError::Algorithm(_))
        ));
    }

    #[test]
    fn hs256_with_public_key_as_secret_is_refused() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let public = k.decoding.try_get_as_bytes().unwrap().to_vec();
        assert_eq!(public.len(), 65);
        let forged = sign_with(
            &header_with(Algorithm::HS256, &k.kid),
            &forged_claims("mallory", "forged", grant().access),
            &EncodingKey::from_secret(&public),
        );
        assert_eq!(
            k.verify(&forged, SERVICE),
            Err(TokenError::Algorithm("HS256".to_owned()))
        );
        assert!(k.verify_refresh(&forged, SERVICE).is_err());
    }

    #[test]
    fn token_of_another_key_is_refused() {
        let dir = TempDir::new();
        let other_dir = TempDir::new();
        let k = keys(&dir);
        let other = keys(&other_dir);
        assert_ne!(k.kid, other.kid);
        let token = other.issue(&grant()).unwrap().token;
        assert!(other.verify(&token, SERVICE).is_ok());
        assert_eq!(k.verify(&token, SERVICE), Err(TokenError::UnknownKey));
    }

    #[test]
    fn another_key_claiming_our_kid_fails_the_signature() {
        let dir = TempDir::new();
        let other_dir = TempDir::new();
        let k = keys(&dir);
        let other = keys(&other_dir);
        let forged = sign_with(
            &header_with(Algorithm::ES256, &k.kid),
            &forged_claims("mallory", "forged", grant().access),
            &other.encoding,
        );
        assert_eq!(k.verify(&forged, SERVICE), Err(TokenError::Signature));
    }

    #[test]
    fn tampered_access_claim_is_refused() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let token = k.issue(&grant()).unwrap().token;
        let p = parts(&token);
        let mut claims = b64json(&p[1]);
        claims["access"][0]["actions"] = serde_json::json!(["pull", "push", "delete"]);
        claims["access"][0]["name"] = serde_json::json!("library/ubuntu");
        let tampered = format!(
            "{}.{}.{}",
            p[0],
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            p[2]
        );
        assert_eq!(k.verify(&tampered, SERVICE), Err(TokenError::Signature));
    }

    #[test]
    fn tampered_signature_is_refused() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let token = k.issue(&grant()).unwrap().token;
        let p = parts(&token);
        let mut sig = URL_SAFE_NO_PAD.decode(&p[2]).unwrap();
        sig[10] ^= 1;
        let tampered = format!("{}.{}.{}", p[0], p[1], URL_SAFE_NO_PAD.encode(sig));
        assert_eq!(k.verify(&tampered, SERVICE), Err(TokenError::Signature));
    }

    #[test]
    fn expired_token_is_refused() {
        let dir = TempDir::new();
        let k = keys(&dir);
        // exp = now - 3540: far beyond the 30 s leeway.
        let token = token_issued_at(&k, Duration::from_secs(60), now() - 3600);
        assert_eq!(k.verify(&token, SERVICE), Err(TokenError::Expired));
        // A zero-lifetime token issued long ago is expired too.
        let token = token_issued_at(&k, Duration::ZERO, now() - 120);
        assert_eq!(k.verify(&token, SERVICE), Err(TokenError::Expired));
    }

    #[test]
    fn expiry_within_leeway_is_accepted() {
        let dir = TempDir::new();
        let k = keys(&dir);
        // exp = now - 10: past, but inside the 30 s clock-skew leeway.
        let token = token_issued_at(&k, Duration::from_secs(60), now() - 70);
        assert!(k.verify(&token, SERVICE).is_ok());
    }

    #[test]
    fn token_from_the_future_is_refused() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let token = k.issue_at(&grant(), now() + 3600).unwrap().token;
        assert_eq!(k.verify(&token, SERVICE), Err(TokenError::NotYetValid));
    }

    #[test]
    fn wrong_audience_is_refused() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let token = k.issue(&grant()).unwrap().token;
        assert_eq!(
            k.verify(&token, "other.example.com"),
            Err(TokenError::Audience)
        );
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let token = k.issue(&grant()).unwrap().token;
        // Same key, configured with another issuer name.
        let renamed = TokenKeys::load_or_create(&dir.key(), "someone-else").unwrap();
        assert_eq!(renamed.verify(&token, SERVICE), Err(TokenError::Issuer));
    }

    #[test]
    fn refresh_token_round_trips_for_its_service() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let refresh = k
            .issue_refresh("jlhawn", SERVICE, Duration::from_secs(86400))
            .unwrap();
        assert_eq!(k.verify_refresh(&refresh, SERVICE).unwrap(), "jlhawn");
        assert_eq!(
            k.verify_refresh(&refresh, "other.example.com"),
            Err(TokenError::Audience)
        );
        assert!(b64json(&parts(&refresh)[1]).get("access").is_none());
    }

    #[test]
    fn refresh_token_is_not_an_access_token() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let refresh = k
            .issue_refresh("jlhawn", SERVICE, Duration::from_secs(86400))
            .unwrap();
        assert_eq!(k.verify(&refresh, SERVICE), Err(TokenError::WrongUse));
    }

    #[test]
    fn access_token_is_not_a_refresh_token() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let access = k.issue(&grant()).unwrap().token;
        assert_eq!(
            k.verify_refresh(&access, SERVICE),
            Err(TokenError::WrongUse)
        );
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let dir = TempDir::new();
        let k = keys(&dir);
        for bad in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!!.e30.",
            "e30.e30.",
            "bm90IGpzb24.e30.",
        ] {
            assert!(
                matches!(k.verify(bad, SERVICE), Err(TokenError::Malformed(_))),
                "{bad:?} not refused as malformed"
            );
        }
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(
            k.verify(&huge, SERVICE),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn crit_header_is_refused() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let mut header = header_with(Algorithm::ES256, &k.kid);
        header.crit = Some(vec!["b64".to_owned()]);
        let token = sign_with(
            &header,
            &forged_claims("jlhawn", "j", Vec::new()),
            &k.encoding,
        );
        assert!(matches!(
            k.verify(&token, SERVICE),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn key_file_is_created_0600_and_reloaded() {
        let dir = TempDir::new();
        let path = dir.key();
        let first = TokenKeys::load_or_create(&path, ISSUER).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Only the key file is left behind, no temp file.
        let entries: Vec<_> = fs::read_dir(&dir.0).unwrap().collect();
        assert_eq!(entries.len(), 1);
        // The file is a P-256 PKCS#8 key.
        let der = fs::read(&path).unwrap();
        assert!(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).is_ok());

        let token = first.issue(&grant()).unwrap().token;
        let second = TokenKeys::load_or_create(&path, ISSUER).unwrap();
        assert_eq!(second.kid, first.kid);
        assert_eq!(second.verify(&token, SERVICE).unwrap().sub, "jlhawn");
        assert_eq!(
            fs::read(&path).unwrap(),
            der,
            "reload must not rewrite the key"
        );
    }

    #[test]
    fn key_file_in_missing_directory_is_created() {
        let dir = TempDir::new();
        let path = dir.0.join("nested").join("token.key");
        let k = TokenKeys::load_or_create(&path, ISSUER).unwrap();
        assert!(path.is_file());
        assert!(k.verify(&k.issue(&grant()).unwrap().token, SERVICE).is_ok());
    }

    #[test]
    fn corrupt_key_file_is_an_error_not_replaced() {
        let dir = TempDir::new();
        let path = dir.key();
        fs::write(&path, b"not a key").unwrap();
        assert!(matches!(
            TokenKeys::load_or_create(&path, ISSUER),
            Err(TokenError::Key(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), b"not a key");
    }

    #[test]
    fn issued_token_debug_hides_the_token() {
        let dir = TempDir::new();
        let k = keys(&dir);
        let issued = k.issue(&grant()).unwrap();
        let shown = format!("{issued:?}");
        assert!(!shown.contains(&issued.token));
        assert!(shown.contains("redacted"));
    }
}
