//! The registries under test: started from their binaries on temp dirs and loopback ports.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A registry the scenarios run against.
pub struct Target {
    /// Short name for the table.
    pub name: &'static str,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// HTTP client for push/pull scenarios (sends the admin's Basic credentials when the
    /// registry requires them).
    pub http: reqwest::Client,
    /// Admin credentials (`user`, `password`) when the registry requires authentication.
    pub credentials: Option<(String, String)>,
    child: Option<Child>,
    /// Distribution's binary and config file, for its offline garbage collector.
    distribution: Option<(std::path::PathBuf, std::path::PathBuf)>,
    _dir: Option<tempfile::TempDir>,
}

fn client() -> reqwest::Client {
    client_with(None)
}

fn client_with(credentials: Option<&(String, String)>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some((user, password)) = credentials {
        let value = basic(user, password);
        if let Ok(v) = reqwest::header::HeaderValue::from_str(&value) {
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
    }
    reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .timeout(Duration::from_secs(600))
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

/// `Basic base64(user:password)`.
fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl Target {
    /// A registry somebody else started.
    pub fn external(addr: &str) -> Target {
        Target {
            name: "registry",
            addr: addr.to_owned(),
            http: client(),
            credentials: None,
            child: None,
            distribution: None,
            _dir: None,
        }
    }

    /// A handle on the same registry for a concurrent worker (its own connection pool, the
    /// same credentials).
    pub fn worker(&self) -> Target {
        Target {
            name: self.name,
            addr: self.addr.clone(),
            http: client_with(self.credentials.as_ref()),
            credentials: self.credentials.clone(),
            child: None,
            distribution: None,
            _dir: None,
        }
    }

    /// Starts Distribution with filesystem storage in a temp dir.
    pub async fn distribution(bin: &Path) -> anyhow::Result<Target> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("running {}", bin.display()))?;
        let t = Target {
            name: "distribution",
            addr,
            http: client(),
            credentials: None,
            child: Some(child),
            distribution: Some((bin.to_owned(), config)),
            _dir: Some(dir),
        };
        t.wait_ready().await?;
        Ok(t)
    }

    /// Starts berth on a temp data dir and a random port (open, as on a fresh loopback).
    pub async fn berth(bin: &Path) -> anyhow::Result<Target> {
        Target::start_berth(bin, "berth", None).await
    }

    /// Starts berth with credentials required: pushes use the admin's Basic credentials
    /// and the request-rate scenarios a bearer token from its token service.
    pub async fn berth_with_auth(bin: &Path) -> anyhow::Result<Target> {
        let credentials = ("admin".to_owned(), "bench-admin-password".to_owned());
        Target::start_berth(bin, "berth+auth", Some(credentials)).await
    }

    /// Starts a berth binary named `name` in the table (open, or requiring `credentials`).
    pub async fn start_berth(
        bin: &Path,
        name: &'static str,
        credentials: Option<(String, String)>,
    ) -> anyhow::Result<Target> {
        let dir = tempfile::tempdir()?;
        let mut command = Command::new(bin);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .env_remove("BERTH_ADMIN_PASSWORD");
        if let Some((_, password)) = &credentials {
            command.env("BERTH_ADMIN_PASSWORD", password);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "running {} (build it with cargo build --release)",
                    bin.display()
                )
            })?;
        let stdout = child.stdout.take().context("berth stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).await?;
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            bail!("unexpected first line from berth: {line:?}");
        };
        let t = Target {
            name,
            addr: addr.to_owned(),
            http: client_with(credentials.as_ref()),
            credentials,
            child: Some(child),
            distribution: None,
            _dir: Some(dir),
        };
        t.wait_ready().await?;
        Ok(t)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        for _ in 0..100 {
            if let Ok(r) = self.http.get(self.url("/v2/")).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{} did not answer GET /v2/ at {}", self.name, self.addr)
    }

    /// The `Authorization` header for `scope` on the request-rate loop: a bearer token from
    /// the registry's token service, as docker would send; `None` when no auth is required.
    pub async fn bearer_for(&self, scope: &str) -> anyhow::Result<Option<String>> {
        if self.credentials.is_none() {
            return Ok(None);
        }
        let url = self.url(&format!("/token?service=berth&scope={scope}"));
        let res = self.http.get(url).send().await?;
        if !res.status().is_success() {
            bail!("token request for {scope}: {}", res.status());
        }
        let body: serde_json::Value = res.json().await?;
        let token = body["token"].as_str().context("no token in the answer")?;
        Ok(Some(format!("Bearer {token}")))
    }

    /// Absolute URL of a path (or of an absolute/relative Location).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("http://{}{}", self.addr, path)
        }
    }

    /// The server's pid, when this program started it.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Peak resident set size of the server so far, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// For Distribution: `registry garbage-collect CONFIG`, its offline collector.
    pub fn distribution_gc_command(&self) -> Option<Command> {
        let (bin, config) = self.distribution.as_ref()?;
        let mut command = Command::new(bin);
        command.arg("garbage-collect").arg(config);
        Some(command)
    }

    /// Stops the server process, keeping its data (for offline work on it).
    pub async fn stop_server(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Stops the server (SIGKILL by PID through kill_on_drop) and removes its temp dir.
    pub async fn stop(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }
}
