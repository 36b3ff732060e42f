//! HTTPS for `berth serve`: a rustls server configuration whose certificate chain and key
//! are read from PEM files and read again whenever those files change, so certificates
//! rotate without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::InconsistentKeys;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the certificate and key files are checked for changes.
const RELOAD_POLL: Duration = Duration::from_secs(2);

/// The certificate chain and private key files (PEM) HTTPS is served with.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Both files, none (plain HTTP), or an error when only one of the two is given.
    pub fn pair(cert: Option<&Path>, key: Option<&Path>) -> anyhow::Result<Option<TlsFiles>> {
        let given = match (cert, key) {
            (Some(cert), Some(key)) => {
                return Ok(Some(TlsFiles {
                    cert: cert.to_owned(),
                    key: key.to_owned(),
                }));
            }
            (None, None) => return Ok(None),
            (Some(_), None) => "a TLS certificate was given but no key",
            (None, Some(_)) => "a TLS key was given but no certificate",
        };
        anyhow::bail!(
            "{given}: HTTPS needs both --tls-cert and --tls-key \
             (BERTH_TLS_CERT/BERTH_TLS_KEY, or tls_cert/tls_key in berth.toml)"
        )
    }

    /// Reads and checks both files: a non-empty chain and a key that fits its leaf.
    fn load(&self, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
        let chain = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading TLS certificate {}", self.cert.display()))?;
        anyhow::ensure!(
            !chain.is_empty(),
            "no PEM certificate in {}",
            self.cert.display()
        );
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("reading TLS private key {}", self.key.display()))?;
        let key = provider
            .key_provider
            .load_private_key(key)
            .with_context(|| {
                format!(
                    "TLS private key {} is not a key rustls can sign with",
                    self.key.display()
                )
            })?;
        let certified = CertifiedKey::new(chain, key);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(e @ rustls::Error::InconsistentKeys(_)) => {
                Err(anyhow::anyhow!(e).context(format!(
                    "TLS private key {} does not fit certificate {}",
                    self.key.display(),
                    self.cert.display()
                )))
            }
            Err(e) => Err(anyhow::anyhow!(e).context(format!(
                "TLS certificate {} cannot be used",
                self.cert.display()
            ))),
        }
    }

    /// What identifies the files' current contents without reading them.
    fn stamp(&self) -> Stamp {
        [file_stamp(&self.cert), file_stamp(&self.key)]
    }
}

/// Modification time, size and inode of both files (`None` where a file cannot be read).
type Stamp = [Option<(SystemTime, u64, u64)>; 2];

/// The stamp of one file, or `None` if it cannot be read.
fn file_stamp(path: &Path) -> Option<(SystemTime, u64, u64)> {
    // Follows symlinks, so a Kubernetes secret's `..data` swap is seen as a change.
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some((meta.modified().ok()?, meta.len(), inode))
}

/// Hands every handshake the most recently loaded certificate.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, key: CertifiedKey) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Loads the files (failing with a clear error if they do not make a usable certificate),
/// starts the thread that reloads them when they change, and returns the acceptor
/// (TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`).
pub fn start(files: TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut reloader = Reloader::new(files, provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("configuring TLS")?
        .with_no_client_auth()
        .with_cert_resolver(reloader.resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    std::thread::Builder::new()
        .name("berth-tls-reload".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(RELOAD_POLL);
                reloader.poll();
            }
        })
        .context("starting the TLS certificate reload thread")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Watches the files and swaps the served certificate when they change.
struct Reloader {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    resolver: Arc<ReloadingCert>,
    /// The stamp of the files as last tried, loaded or not.
    seen: Stamp,
}

impl Reloader {
    fn new(files: TlsFiles, provider: Arc<CryptoProvider>) -> anyhow::Result<Reloader> {
        let seen = files.stamp();
        let key = files.load(&provider)?;
        Ok(Reloader {
            resolver: Arc::new(ReloadingCert {
                current: RwLock::new(Arc::new(key)),
            }),
            files,
            provider,
            seen,
        })
    }

    /// Reloads if the files changed since the last try; a failed reload keeps the
    /// certificate being served and is logged once per change.
    fn poll(&mut self) {
        let stamp = self.files.stamp();
        if stamp == self.seen {
            return;
        }
        self.seen = stamp;
        match self.files.load(&self.provider) {
            Ok(key) => {
                self.resolver.replace(key);
                tracing::info!(cert = %self.files.cert.display(), "reloaded the TLS certificate");
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "TLS certificate or key changed but cannot be used; still serving the previous certificate"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &Path, name: &str) -> (TlsFiles, Vec<u8>) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let files = TlsFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
        (files, cert.cert.der().to_vec())
    }

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    #[test]
    fn only_one_of_cert_and_key_is_an_error() {
        let p = Path::new("x.pem");
        assert!(TlsFiles::pair(None, None).unwrap().is_none());
        assert!(TlsFiles::pair(Some(p), Some(p)).unwrap().is_some());
        let e = TlsFiles::pair(Some(p), None).unwrap_err().to_string();
        assert!(e.contains("no key"), "{e}");
        let e = TlsFiles::pair(None, Some(p)).unwrap_err().to_string();
        assert!(e.contains("no certificate"), "{e}");
    }

    #[test]
    fn a_key_that_does_not_fit_the_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = write_cert(dir.path(), "a.test");
        let (b, _) = write_cert(dir.path(), "b.test");
        let mixed = TlsFiles {
            cert: a.cert,
            key: b.key,
        };
        let e = format!("{:#}", mixed.load(&provider()).unwrap_err());
        assert!(e.contains("does not fit certificate"), "{e}");
    }

    #[test]
    fn reloads_on_change_and_keeps_the_old_certificate_on_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let (files, first) = write_cert(dir.path(), "a.test");
        let mut reloader = Reloader::new(files.clone(), provider()).unwrap();
        let served = |r: &Reloader| r.resolver.current().cert[0].to_vec();
        assert_eq!(served(&reloader), first);

        std::fs::write(&files.key, "not a key").unwrap();
        reloader.poll();
        assert_eq!(
            served(&reloader),
            first,
            "a bad key keeps the old certificate"
        );

        let (next, second) = write_cert(dir.path(), "b.test");
        std::fs::rename(&next.cert, &files.cert).unwrap();
        std::fs::rename(&next.key, &files.key).unwrap();
        reloader.poll();
        assert_eq!(served(&reloader), second);
    }
}
