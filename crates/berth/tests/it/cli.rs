//! The admin CLI (`berth login`, `user`, `robot`, `namespace`, `member`, `htpasswd`) against
//! a real server, as an operator would type it.

use std::io::Write;
use std::process::{Command, Stdio};

use reqwest::Method;
use serde_json::Value;

use crate::harness::*;

const ADMIN_PASSWORD: &str = "admin-pass-123";

/// Runs `berth ARGS` against `s` with `stdin` piped in; returns (success, stdout+stderr).
fn berth(s: &Server, login_file: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(BERTH)
        .args(args)
        .env("BERTH_SERVER", &s.base)
        .env("BERTH_LOGIN_FILE", login_file)
        .env_remove("BERTH_USERNAME")
        .env_remove("BERTH_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("berth output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Whether `user:password` gets a token from the server.
async fn can_log_in(s: &Server, user: &str, password: &str) -> bool {
    let res = s
        .http
        .get(format!("{}/token?service=berth", s.base))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    res.status() == 200
}

#[tokio::test]
async fn an_operator_session_with_the_admin_cli() {
    let mut s = Server::start_with(&[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    s.authorization = Some(crate::auth::admin());
    let dir = tempfile::tempdir().unwrap();
    let login = dir.path().join("login.json");
    let run = |args: &[&str], stdin: &str| berth(&s, &login, args, stdin);

    let (ok, out) = run(&["user", "list"], "");
    assert!(!ok && out.contains("berth login"), "{out}");

    let (ok, out) = run(
        &["login", "--username", "admin", "--password-stdin"],
        &format!("{ADMIN_PASSWORD}\n"),
    );
    assert!(ok, "{out}");
    let stored = std::fs::read_to_string(&login).unwrap();
    assert!(
        !stored.contains(ADMIN_PASSWORD),
        "the password is never stored"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&login).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let (ok, out) = run(&["user", "add", "ann"], "ann-pass-123\n");
    assert!(ok && out.contains("created user ann"), "{out}");
    let (ok, out) = run(&["user", "list", "--json"], "");
    assert!(ok, "{out}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(account_names(&listed), ["admin", "ann"]);

    assert!(run(&["namespace", "add", "team"], "").0);
    let (ok, out) = run(&["member", "add", "team", "ann", "writer"], "");
    assert!(ok, "{out}");
    let (_, out) = run(&["namespace", "list"], "");
    assert!(
        out.contains("team") && out.contains("private") && out.contains("ann:writer"),
        "{out}"
    );
    assert!(run(&["namespace", "set", "team", "--public"], "").0);
    let (_, out) = run(&["namespace", "list"], "");
    assert!(out.contains("public"), "{out}");
    let (ok, out) = run(&["member", "add", "team", "ann", "owner"], "");
    assert!(
        !ok && out.contains("reader, writer, maintainer or admin"),
        "{out}"
    );

    let (ok, out) = run(&["robot", "add", "ci", "--grant", "ci/*=pull,push"], "");
    assert!(ok, "{out}");
    let secret = out.lines().last().unwrap().trim().to_owned();
    assert!(secret.starts_with("berth_"), "{out}");
    let res = s
        .http
        .request(Method::POST, s.url("/v2/ci/app/blobs/uploads/"))
        .basic_auth("ci", Some(&secret))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202, "the robot pushes with its secret");
    let (_, out) = run(&["robot", "list"], "");
    assert!(
        out.contains("ci") && out.contains("active") && out.contains("ci/*=pull,push"),
        "{out}"
    );
    assert!(!out.contains("ann"), "robot list shows robots only: {out}");
    assert!(run(&["robot", "revoke", "ci"], "").0);
    let (_, out) = run(&["robot", "list"], "");
    assert!(out.contains("revoked"), "{out}");
    assert!(!can_log_in(&s, "ci", &secret).await);

    assert!(can_log_in(&s, "ann", "ann-pass-123").await);
    let (ok, out) = run(&["user", "passwd", "ann"], "ann-pass-456\n");
    assert!(ok, "{out}");
    assert!(!can_log_in(&s, "ann", "ann-pass-123").await);
    assert!(can_log_in(&s, "ann", "ann-pass-456").await);
    // Repository-level admin commands work with the stored login too (its tokens carry no
    // repository scopes: the account's own access decides).
    let (first, _) = s.push_image("team/app", "v1", b"layer").await;
    s.push_image("team/app", "v1", b"layer two").await;
    let (ok, out) = run(&["tag", "pulls", "team/app", "v1", "--json"], "");
    assert!(ok, "{out}");
    let (ok, out) = run(&["tag", "restore", "team/app", "v1", "--previous"], "");
    assert!(ok && out.contains(&first), "{out}");
    let (ok, out) = run(&["tag", "history", "team/app", "v1", "--json"], "");
    assert!(ok, "{out}");
    let history: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(history["events"].as_array().unwrap().len(), 3, "{out}");
    assert_eq!(history["events"][0]["new"], first.as_str());
    assert_eq!(history["events"][0]["account"], "admin");
    assert_eq!(history["events"][0]["user_agent"], "berth-cli/0.1.0");

    assert!(run(&["member", "remove", "team", "ann"], "").0);
    assert!(run(&["user", "remove", "ann"], "").0);
    assert!(!can_log_in(&s, "ann", "ann-pass-456").await);

    let (ok, out) = run(&["logout"], "");
    assert!(ok, "{out}");
    let (ok, _) = run(&["user", "list"], "");
    assert!(!ok, "logged out");
}

#[tokio::test]
async fn htpasswd_import_keeps_passwords_working() {
    let s = Server::start_with(&[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let dir = tempfile::tempdir().unwrap();
    let login = dir.path().join("login.json");
    let file = dir.path().join("htpasswd");
    let hash = bcrypt::hash("hta-pass-123", 4)
        .unwrap()
        .replacen("$2b$", "$2y$", 1);
    std::fs::write(&file, format!("hta:{hash}\nmd5user:$apr1$abc$def\n\n")).unwrap();
    let (ok, out) = berth(
        &s,
        &login,
        &["login", "--username", "admin", "--password-stdin"],
        &format!("{ADMIN_PASSWORD}\n"),
    );
    assert!(ok, "{out}");
    let (ok, out) = berth(
        &s,
        &login,
        &["htpasswd", "import", file.to_str().unwrap()],
        "",
    );
    assert!(!ok, "a refused line makes the command fail: {out}");
    assert!(out.contains("created: hta"), "{out}");
    assert!(out.contains("refused: line 2"), "{out}");
    assert!(can_log_in(&s, "hta", "hta-pass-123").await);
    assert!(!can_log_in(&s, "hta", "wrong-pass").await);
    let (_, out) = berth(
        &s,
        &login,
        &["htpasswd", "import", file.to_str().unwrap()],
        "",
    );
    assert!(out.contains("already existed: hta"), "{out}");
}

#[tokio::test]
async fn personal_access_tokens_log_in_until_revoked() {
    let s = Server::start_with(&[("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD)]);
    let dir = tempfile::tempdir().unwrap();
    let admin_login = dir.path().join("admin.json");
    let ann_login = dir.path().join("ann.json");
    let (ok, out) = berth(
        &s,
        &admin_login,
        &["login", "--username", "admin", "--password-stdin"],
        &format!("{ADMIN_PASSWORD}\n"),
    );
    assert!(ok, "{out}");
    assert!(berth(&s, &admin_login, &["user", "add", "ann"], "ann-pass-123\n").0);
    let (ok, out) = berth(
        &s,
        &ann_login,
        &["login", "--username", "ann", "--password-stdin"],
        "ann-pass-123\n",
    );
    assert!(ok, "{out}");

    let (ok, out) = berth(&s, &ann_login, &["token", "add", "laptop"], "");
    assert!(ok, "{out}");
    let secret = out.lines().last().unwrap().trim().to_owned();
    assert!(secret.starts_with("berth_pat_"), "{out}");
    assert!(
        can_log_in(&s, "ann", &secret).await,
        "the token works as a password"
    );
    assert!(
        !can_log_in(&s, "admin", &secret).await,
        "only for its owner"
    );
    let (ok, out) = berth(&s, &ann_login, &["token", "add", "laptop"], "");
    assert!(!ok && out.contains("already has an access token"), "{out}");
    let (ok, out) = berth(&s, &ann_login, &["token", "list", "--user", "admin"], "");
    assert!(!ok && out.contains("not a registry admin"), "{out}");

    let (ok, out) = berth(&s, &admin_login, &["token", "list", "--user", "ann"], "");
    assert!(
        ok && out.contains("laptop") && out.contains("active"),
        "{out}"
    );
    let (ok, out) = berth(&s, &ann_login, &["token", "revoke", "laptop"], "");
    assert!(ok, "{out}");
    assert!(
        !can_log_in(&s, "ann", &secret).await,
        "a revoked token stops working"
    );
    assert!(
        can_log_in(&s, "ann", "ann-pass-123").await,
        "the password still works"
    );
    let (_, out) = berth(&s, &ann_login, &["token", "list"], "");
    assert!(out.contains("revoked"), "{out}");
}
