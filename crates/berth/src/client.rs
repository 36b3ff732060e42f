//! The admin CLI's HTTP client: which server, which credentials, and turning the
//! server's JSON errors into messages.
//!
//! Credentials, first found wins: `BERTH_USERNAME` + `BERTH_PASSWORD` (sent as Basic),
//! then the refresh token `berth login` stored for this server (exchanged for a bearer
//! token), then none (enough while the server runs open).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Default server of the admin commands.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:5000";

/// Logins kept by `berth login`: server URL → account and refresh token.
#[derive(Serialize, Deserialize, Default)]
pub struct LoginFile {
    /// One entry per server.
    pub servers: BTreeMap<String, StoredLogin>,
}

/// One stored login: never a password, only a refresh token.
#[derive(Serialize, Deserialize, Clone)]
pub struct StoredLogin {
    /// Account name.
    pub username: String,
    /// OAuth2 refresh token from the server's `/token`.
    pub refresh_token: String,
}

impl LoginFile {
    /// `$BERTH_LOGIN_FILE`, else `$XDG_CONFIG_HOME/berth/login.json`, else
    /// `~/.config/berth/login.json`.
    pub fn path() -> anyhow::Result<PathBuf> {
        if let Some(p) = std::env::var_os("BERTH_LOGIN_FILE") {
            return Ok(PathBuf::from(p));
        }
        let base = match std::env::var_os("XDG_CONFIG_HOME") {
            Some(x) => PathBuf::from(x),
            None => PathBuf::from(
                std::env::var_os("HOME").context("neither XDG_CONFIG_HOME nor HOME is set")?,
            )
            .join(".config"),
        };
        Ok(base.join("berth").join("login.json"))
    }

    /// Reads the file; missing means no logins.
    pub fn load() -> anyhow::Result<LoginFile> {
        let path = LoginFile::path()?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LoginFile::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the file with mode 0600 (it holds refresh tokens).
    pub fn save(&self) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        let path = LoginFile::path()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(self)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

/// A client of one server's admin API.
pub struct AdminClient {
    http: reqwest::Client,
    server: String,
    authorization: Option<String>,
}

impl AdminClient {
    /// A client for `server` with the credentials found as the module doc says.
    pub async fn connect(server: Option<&str>) -> anyhow::Result<AdminClient> {
        let mut client = AdminClient::connect_anonymous(server)?;
        client.authorization = client.find_credentials().await?;
        Ok(client)
    }

    /// A client for `server` without credentials (for `berth login` itself).
    pub fn connect_anonymous(server: Option<&str>) -> anyhow::Result<AdminClient> {
        // Named in tag history and the audit log like any other client.
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(AdminClient {
            http,
            server: AdminClient::normalize(server),
            authorization: None,
        })
    }

    /// The server URL as logins are keyed: default filled in, no trailing slash.
    pub fn normalize(server: Option<&str>) -> String {
        server
            .unwrap_or(DEFAULT_SERVER)
            .trim_end_matches('/')
            .to_owned()
    }

    async fn find_credentials(&self) -> anyhow::Result<Option<String>> {
        if let (Ok(user), Ok(password)) = (
            std::env::var("BERTH_USERNAME"),
            std::env::var("BERTH_PASSWORD"),
        ) {
            return Ok(Some(basic(&user, &password)));
        }
        let Some(login) = LoginFile::load()?.servers.get(&self.server).cloned() else {
            return Ok(None);
        };
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", login.refresh_token.as_str()),
            ("client_id", "berth-cli"),
        ];
        let token = self.token_request(&form).await.with_context(|| {
            format!(
                "the stored login for {} ({}) no longer works; run `berth login` again",
                self.server, login.username
            )
        })?;
        Ok(Some(format!("Bearer {}", token.access_token)))
    }

    /// `POST /token` with an OAuth2 form.
    pub async fn token_request(&self, form: &[(&str, &str)]) -> anyhow::Result<TokenAnswer> {
        let res = self
            .http
            .post(format!("{}/token", self.server))
            .form(form)
            .send()
            .await
            .with_context(|| format!("connecting to {}", self.server))?;
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{}", server_message(status, &body));
        }
        serde_json::from_str(&body).context("reading the token answer")
    }

    /// The server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Calls the admin API; returns the JSON answer (`Value::Null` for 204).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<RequestBody>,
    ) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.server));
        if let Some(a) = &self.authorization {
            req = req.header("authorization", a);
        }
        req = match body {
            Some(RequestBody::Json(v)) => req
                .header("content-type", "application/json")
                .body(v.to_string()),
            Some(RequestBody::Text(t)) => req.header("content-type", "text/plain").body(t),
            None => req,
        };
        let res = req
            .send()
            .await
            .with_context(|| format!("connecting to {}", self.server))?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{}", server_message(status, &text));
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).context("reading the server's answer")
    }
}

/// A request body for [`AdminClient::call`].
pub enum RequestBody {
    /// JSON.
    Json(Value),
    /// Plain text (an htpasswd file).
    Text(String),
}

/// The fields of a `/token` answer the CLI uses.
#[derive(Deserialize)]
pub struct TokenAnswer {
    /// Bearer token.
    pub access_token: String,
    /// Present when asked for with `access_type=offline`.
    pub refresh_token: Option<String>,
}

/// The server's error message (OCI error body), or the status when there is none.
fn server_message(status: StatusCode, body: &str) -> String {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned));
    match (status, message) {
        (StatusCode::UNAUTHORIZED, Some(m)) => {
            format!("{m} (log in with `berth login`, or set BERTH_USERNAME and BERTH_PASSWORD)")
        }
        (_, Some(m)) => m,
        (s, None) => format!("the server answered {s}"),
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
