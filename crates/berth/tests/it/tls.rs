//! HTTPS: `--tls-cert`/`--tls-key` with certificates from a test CA, the `https://` token
//! realm, plain HTTP refused, and certificates swapped on disk served without a restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::harness::{BERTH, Server, header};

/// A PEM private key block whose contents are no key.
const GARBAGE_KEY: &str = "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n";

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    /// A server certificate for 127.0.0.1: (certificate PEM, key PEM, certificate DER).
    fn leaf(&self, name: &str) -> (String, String, Vec<u8>) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// A client that trusts only this CA, on a new connection pool.
    fn client(&self) -> reqwest::ClientBuilder {
        let root = reqwest::Certificate::from_pem(self.issuer.pem().as_bytes()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([root])
            .tls_info(true)
            .timeout(Duration::from_secs(10))
    }

    /// The certificate `server` presents to a new connection, if it is one this CA issued.
    async fn served(&self, server: &Server) -> Result<Vec<u8>, reqwest::Error> {
        let res = self
            .client()
            .build()?
            .get(server.url("/v2/"))
            .send()
            .await?;
        assert_eq!(res.status(), 200);
        let info = res.extensions().get::<reqwest::tls::TlsInfo>();
        Ok(info
            .and_then(|i| i.peer_certificate())
            .expect("peer certificate")
            .to_vec())
    }
}

/// The certificate and key files of a test server.
struct Files {
    cert: PathBuf,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Files {
    fn new((cert, key, _): &(String, String, Vec<u8>)) -> Files {
        let dir = tempfile::tempdir().unwrap();
        let files = Files {
            cert: dir.path().join("server.crt"),
            key: dir.path().join("server.key"),
            _dir: dir,
        };
        files.replace(cert, key);
        files
    }

    /// Replaces both files the way certificate tools do: write aside, then rename over.
    fn replace(&self, cert: &str, key: &str) {
        for (path, text) in [(&self.cert, cert), (&self.key, key)] {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }

    /// `berth serve` on HTTPS with these files.
    fn serve(&self, env: &[(&str, &str)]) -> Server {
        let (cert, key) = (path_str(&self.cert), path_str(&self.key));
        let mut server = Server::start_args(&["--tls-cert", cert, "--tls-key", key], env);
        server.base = format!("https://{}", server.addr);
        server
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[tokio::test]
async fn https_with_a_test_ca_over_h2_and_http1_and_the_realm_is_https() {
    let ca = Ca::new("berth test CA");
    let leaf = ca.leaf("berth test server");
    let files = Files::new(&leaf);
    let server = files.serve(&[
        ("BERTH_AUTH_REQUIRED", "true"),
        ("BERTH_ADMIN_PASSWORD", "tls-admin-pw"),
    ]);
    let realm = format!("Bearer realm=\"https://{}/token\"", server.addr);
    // A client that connects and never starts its handshake holds up no one else.
    let _idle = std::net::TcpStream::connect(&server.addr).unwrap();

    // ALPN offers h2 first; HTTP/2 has no Host header, the realm comes from :authority.
    let h2 = ca.client().build().unwrap();
    let res = h2.get(server.url("/v2/")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 401);
    let challenge = header(&res, "www-authenticate").unwrap();
    assert!(challenge.starts_with(&realm), "{challenge}");
    let peer = res.extensions().get::<reqwest::tls::TlsInfo>();
    assert_eq!(peer.and_then(|i| i.peer_certificate()), Some(&leaf.2[..]));

    let http1 = ca.client().http1_only().build().unwrap();
    let res = http1.get(server.url("/v2/")).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
    let challenge = header(&res, "www-authenticate").unwrap();
    assert!(challenge.starts_with(&realm), "{challenge}");
    let res = http1
        .get(server.url("/v2/"))
        .basic_auth("admin", Some("tls-admin-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let res = plain
        .get(format!("http://{}/v2/", server.addr))
        .send()
        .await;
    assert!(res.is_err(), "plain HTTP got an answer: {res:?}");

    // A client that does not trust the test CA refuses the server.
    let other = Ca::new("another CA");
    assert!(other.served(&server).await.is_err());
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_is_served_without_a_restart() {
    let (ca1, ca2) = (Ca::new("first CA"), Ca::new("second CA"));
    let first = ca1.leaf("first server");
    let second = ca2.leaf("second server");
    let files = Files::new(&first);
    let server = files.serve(&[]);
    assert_eq!(ca1.served(&server).await.unwrap(), first.2);
    assert!(ca2.served(&server).await.is_err());

    // A bad swap (a key file that is no key) keeps the old certificate serving.
    files.replace(&second.0, GARBAGE_KEY);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(ca1.served(&server).await.unwrap(), first.2);
    assert!(ca2.served(&server).await.is_err());

    // A good swap is served to new connections within a few seconds.
    files.replace(&second.0, &second.1);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match ca2.served(&server).await {
            Ok(der) => {
                assert_eq!(der, second.2);
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the new certificate was not served within 15 s: {e}"),
        }
    }
    assert!(
        ca1.served(&server).await.is_err(),
        "old certificate still served"
    );
}

/// Runs `berth serve` with these arguments, expecting it to fail at start-up; its stderr.
fn start_fails(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BERTH)
        .current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("BERTH_CONFIG")
        .env_remove("BERTH_TLS_CERT")
        .env_remove("BERTH_TLS_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success(), "berth started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn start_up_fails_clearly_without_a_usable_certificate_and_key() {
    let ca = Ca::new("berth test CA");
    let files = Files::new(&ca.leaf("a"));
    let other = Files::new(&ca.leaf("b"));
    let (cert, key) = (path_str(&files.cert), path_str(&files.key));

    let err = start_fails(&["--tls-cert", cert]);
    assert!(err.contains("no key"), "{err}");
    let err = start_fails(&["--tls-key", key]);
    assert!(err.contains("no certificate"), "{err}");
    let err = start_fails(&["--tls-cert", cert, "--tls-key", path_str(&other.key)]);
    assert!(err.contains("does not fit certificate"), "{err}");
    let err = start_fails(&["--tls-cert", "/nonexistent/c.pem", "--tls-key", key]);
    assert!(
        err.contains("reading TLS certificate /nonexistent/c.pem"),
        "{err}"
    );
    std::fs::write(&files.key, "no key here").unwrap();
    let err = start_fails(&["--tls-cert", cert, "--tls-key", key]);
    assert!(err.contains("reading TLS private key"), "{err}");
    std::fs::write(&files.key, GARBAGE_KEY).unwrap();
    let err = start_fails(&["--tls-cert", cert, "--tls-key", key]);
    assert!(err.contains("is not a key rustls can sign with"), "{err}");
}

#[test]
fn tls_files_come_from_the_file_the_environment_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("berth.toml"),
        "tls_cert = \"/etc/berth/file.crt\"\ntls_key = \"/etc/berth/file.key\"\n",
    )
    .unwrap();
    let out = Command::new(BERTH)
        .current_dir(dir.path())
        .args(["serve", "--print-config", "--tls-key", "/flag.key"])
        .env_remove("BERTH_CONFIG")
        .env("BERTH_TLS_CERT", "/env.crt")
        .env_remove("BERTH_TLS_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains(r#"tls_cert = "/env.crt""#), "{printed}");
    assert!(printed.contains(r#"tls_key = "/flag.key""#), "{printed}");
}
