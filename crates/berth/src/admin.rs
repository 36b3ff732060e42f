//! The admin commands (`berth login`, `berth user …`, `berth robot …`, `berth namespace …`,
//! `berth member …`, `berth htpasswd import`, `berth tag …`, `berth audit`,
//! `berth webhook …`): clients of the server's `/api/v1`.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context, bail};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{AdminClient, LoginFile, RequestBody, StoredLogin};

/// Options every admin command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Remote {
    /// The berth server (default http://127.0.0.1:5000).
    #[arg(long, env = "BERTH_SERVER", global = true)]
    pub server: Option<String>,
    /// Print the server's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `berth login`.
#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Account name.
    #[arg(long, short)]
    username: String,
    /// Read the password from standard input (one line); otherwise from BERTH_PASSWORD.
    #[arg(long)]
    password_stdin: bool,
}

/// `berth user …`.
#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input (one line).
    Add {
        /// Account name.
        name: String,
        /// Make the user a registry admin.
        #[arg(long)]
        admin: bool,
    },
    /// List users and robots.
    List,
    /// Set a user's password, read from standard input (one line).
    Passwd {
        /// Account name.
        name: String,
    },
    /// Delete an account with its memberships.
    Remove {
        /// Account name.
        name: String,
    },
}

/// `berth robot …`.
#[derive(clap::Subcommand, Debug)]
pub enum RobotCommand {
    /// Create a robot account for CI; prints its secret once.
    Add {
        /// Account name.
        name: String,
        /// `PATTERN=ACTIONS`, e.g. `ci/*=pull,push` (`*` one level, `**` any depth).
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
        /// Days until the robot stops authenticating.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List robot accounts.
    List,
    /// Revoke a robot (or any account): its secret and tokens stop working.
    Revoke {
        /// Account name.
        name: String,
    },
}

/// `berth namespace …`.
#[derive(clap::Subcommand, Debug)]
pub enum NamespaceCommand {
    /// Set up a namespace (private unless `--public`).
    Add {
        /// Namespace (first path segment of its repositories).
        name: String,
        /// Allow anonymous pulls.
        #[arg(long)]
        public: bool,
    },
    /// List namespaces with their visibility and members.
    List,
    /// Change a namespace's visibility.
    Set {
        /// Namespace.
        name: String,
        /// Allow anonymous pulls.
        #[arg(long, conflicts_with = "private", required_unless_present = "private")]
        public: bool,
        /// Members only.
        #[arg(long)]
        private: bool,
    },
}

/// `berth member …`.
#[derive(clap::Subcommand, Debug)]
pub enum MemberCommand {
    /// Give an account a role in a namespace: reader, writer, maintainer or admin.
    Add {
        /// Namespace.
        namespace: String,
        /// Account name.
        account: String,
        /// reader, writer, maintainer or admin.
        role: String,
    },
    /// Remove an account from a namespace.
    Remove {
        /// Namespace.
        namespace: String,
        /// Account name.
        account: String,
    },
}

/// `berth token …`: personal access tokens, used like a password (docker login, Basic).
#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an access token; prints its secret once.
    Add {
        /// A name for the token (e.g. `laptop`, `jenkins`).
        name: String,
        /// Days until it stops working.
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// Whose token (registry admins only; default: the logged-in user).
        #[arg(long)]
        user: Option<String>,
    },
    /// List access tokens.
    List {
        /// Whose tokens (registry admins only; default: the logged-in user).
        #[arg(long)]
        user: Option<String>,
    },
    /// Revoke an access token.
    Revoke {
        /// The token's name.
        name: String,
        /// Whose token (registry admins only; default: the logged-in user).
        #[arg(long)]
        user: Option<String>,
    },
}

/// `berth immutable …`: tags that may never move to another digest nor be deleted.
#[derive(clap::Subcommand, Debug)]
pub enum ImmutableCommand {
    /// Add a rule: the matching tags of matching repositories become immutable.
    Add {
        /// Repository pattern (`team/*` one level, `team/**` any depth, `**` everything).
        repositories: String,
        /// Only tags matching these globs (default: all tags), e.g. `--tags 'v*'`.
        #[arg(long = "tags")]
        tags: Vec<String>,
        /// Tags left mutable, e.g. `--except latest --except 'dev-*'`.
        #[arg(long = "except")]
        except: Vec<String>,
    },
    /// List the rules.
    List,
    /// Remove a rule by id.
    Remove {
        /// The rule's id (from `berth immutable list`).
        id: i64,
    },
}

/// `berth tag …`.
#[derive(clap::Subcommand, Debug)]
pub enum TagCommand {
    /// When the tag moved, who moved it, from which digest to which (newest first).
    History {
        /// Repository, e.g. `payments/api`.
        repository: String,
        /// Tag, e.g. `latest`.
        tag: String,
        /// Instead: which digest the tag pointed to at this RFC 3339 time.
        #[arg(long)]
        at: Option<String>,
    },
    /// Move a tag back: to a digest, or to the one before its latest change.
    Restore {
        /// Repository.
        repository: String,
        /// Tag.
        tag: String,
        /// The digest to move the tag to.
        #[arg(
            long,
            conflicts_with = "previous",
            required_unless_present = "previous"
        )]
        to: Option<String>,
        /// The digest the tag pointed to before its latest change.
        #[arg(long)]
        previous: bool,
    },
    /// Which digests of the tag were pulled, by which clients (newest pull first).
    Pulls {
        /// Repository, e.g. `payments/api`.
        repository: String,
        /// Tag, e.g. `latest`.
        tag: String,
        /// How far back: a duration (`30m`, `2h`, `7d`) or an RFC 3339 time.
        #[arg(long, default_value = "24h")]
        since: String,
    },
}

/// `berth audit`: the event log (pushes, pulls, deletes, tag changes, denials, failed
/// logins), newest first.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Only events at or after this: a duration back (`30m`, `2h`, `7d`) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only events at or before this: an RFC 3339 time or a duration back (`1h`).
    #[arg(long)]
    until: Option<String>,
    /// Only events in this namespace.
    #[arg(long)]
    namespace: Option<String>,
    /// Only events of this repository.
    #[arg(long)]
    repository: Option<String>,
    /// Only events by this account.
    #[arg(long)]
    account: Option<String>,
    /// Only these kinds (repeatable): push, pull, delete, tag.created, tag.overwritten,
    /// tag.deleted, policy.denied, login.failed.
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<String>,
    /// At most this many events (the server caps it).
    #[arg(long)]
    limit: Option<u32>,
    /// Only events older than this event id (the next page).
    #[arg(long)]
    before: Option<i64>,
}

/// `berth webhook …`: HTTP notifications of events, signed, retried until delivered.
#[derive(clap::Subcommand, Debug)]
pub enum WebhookCommand {
    /// Add a webhook; prints its signing secret once.
    Add {
        /// Receiver URL (http or https).
        url: String,
        /// Only events in this namespace (default: all namespaces).
        #[arg(long)]
        namespace: Option<String>,
        /// Only these kinds (repeatable; default: all): push, pull, delete, tag.created,
        /// tag.overwritten, tag.deleted, policy.denied, login.failed.
        #[arg(long = "event", value_name = "KIND")]
        events: Vec<String>,
        /// Payload format: berth's own, or CNCF Distribution's notification envelope.
        #[arg(long, default_value = "berth", value_parser = ["berth", "distribution"])]
        format: String,
        /// The signing secret, at least 16 bytes (default: the server generates one).
        #[arg(long)]
        secret: Option<String>,
    },
    /// List webhooks with their delivery state.
    List,
    /// Remove a webhook by id.
    Remove {
        /// The webhook's id (from `berth webhook list`).
        id: i64,
    },
    /// The latest delivery attempts of a webhook (newest first).
    Deliveries {
        /// The webhook's id (from `berth webhook list`).
        id: i64,
        /// At most this many attempts (the server caps it).
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// `berth htpasswd …`.
#[derive(clap::Subcommand, Debug)]
pub enum HtpasswdCommand {
    /// Create users from an htpasswd file (bcrypt entries, `htpasswd -B`); passwords keep working.
    Import {
        /// The htpasswd file.
        file: std::path::PathBuf,
    },
}

fn read_secret_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("reading the {what} from standard input"))?;
    let secret = line.trim_end_matches(['\r', '\n']).to_owned();
    if secret.is_empty() {
        bail!("no {what} on standard input (pipe it in: `echo … | berth …`)");
    }
    Ok(secret)
}

pub(crate) fn print(remote: &Remote, answer: &Value, human: impl FnOnce(&Value)) {
    if remote.json {
        println!(
            "{}",
            serde_json::to_string_pretty(answer).unwrap_or_default()
        );
    } else {
        human(answer);
    }
}

/// `berth login`: exchanges the password for a refresh token and stores that.
pub async fn login(remote: &Remote, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let password = if args.password_stdin {
        read_secret_line("password")?
    } else {
        std::env::var("BERTH_PASSWORD")
            .context("give the password with --password-stdin or BERTH_PASSWORD")?
    };
    let client = AdminClient::connect_anonymous(remote.server.as_deref())?;
    let answer = client
        .token_request(&[
            ("grant_type", "password"),
            ("username", args.username.as_str()),
            ("password", password.as_str()),
            ("access_type", "offline"),
            ("client_id", "berth-cli"),
        ])
        .await?;
    let refresh_token = answer
        .refresh_token
        .context("the server issued no refresh token")?;
    let mut file = LoginFile::load()?;
    file.servers.insert(
        client.server().to_owned(),
        StoredLogin {
            username: args.username.clone(),
            refresh_token,
        },
    );
    let path = file.save()?;
    println!(
        "logged in to {} as {} (stored in {})",
        client.server(),
        args.username,
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `berth logout`: forgets the stored login for the server.
pub fn logout(remote: &Remote) -> anyhow::Result<ExitCode> {
    let mut file = LoginFile::load()?;
    let server = AdminClient::normalize(remote.server.as_deref());
    if file.servers.remove(&server).is_some() {
        file.save()?;
        println!("logged out of {server}");
    } else {
        println!("not logged in to {server}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth user …`.
pub async fn user(remote: &Remote, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    match cmd {
        UserCommand::Add { name, admin } => {
            let password = read_secret_line("password")?;
            let body = json!({"name": name, "password": password, "registry_admin": admin});
            let a = c
                .call(Method::POST, "/api/v1/users", Some(RequestBody::Json(body)))
                .await?;
            print(remote, &a, |_| println!("created user {name}"));
        }
        UserCommand::List => {
            let a = c.call(Method::GET, "/api/v1/accounts", None).await?;
            print(remote, &a, |a| print_accounts(a, None));
        }
        UserCommand::Passwd { name } => {
            let password = read_secret_line("password")?;
            let path = format!("/api/v1/users/{name}/password");
            let body = RequestBody::Json(json!({ "password": password }));
            c.call(Method::PUT, &path, Some(body)).await?;
            println!("password of {name} changed");
        }
        UserCommand::Remove { name } => {
            c.call(Method::DELETE, &format!("/api/v1/accounts/{name}"), None)
                .await?;
            println!("removed account {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth robot …`.
pub async fn robot(remote: &Remote, cmd: RobotCommand) -> anyhow::Result<ExitCode> {
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    match cmd {
        RobotCommand::Add {
            name,
            grants,
            expires_in_days,
        } => {
            let grants = grants
                .iter()
                .map(|g| parse_grant(g))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let expires_at = expires_in_days.map(|d| unix_now() + i64::from(d) * 86_400);
            let body = json!({"name": name, "grants": grants, "expires_at": expires_at});
            let a = c
                .call(
                    Method::POST,
                    "/api/v1/robots",
                    Some(RequestBody::Json(body)),
                )
                .await?;
            print(remote, &a, |a| {
                println!("created robot {name}; its secret (shown only now):");
                println!("{}", a["secret"].as_str().unwrap_or_default());
            });
        }
        RobotCommand::List => {
            let a = c.call(Method::GET, "/api/v1/accounts", None).await?;
            print(remote, &a, |a| print_accounts(a, Some("robot")));
        }
        RobotCommand::Revoke { name } => {
            let path = format!("/api/v1/accounts/{name}/revoke");
            c.call(Method::POST, &path, None).await?;
            println!("revoked {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth namespace …`.
pub async fn namespace(remote: &Remote, cmd: NamespaceCommand) -> anyhow::Result<ExitCode> {
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    let (name, public) = match cmd {
        NamespaceCommand::List => {
            let a = c.call(Method::GET, "/api/v1/namespaces", None).await?;
            print(remote, &a, print_namespaces);
            return Ok(ExitCode::SUCCESS);
        }
        NamespaceCommand::Add { name, public } | NamespaceCommand::Set { name, public, .. } => {
            (name, public)
        }
    };
    let visibility = if public { "public" } else { "private" };
    let body = RequestBody::Json(json!({ "visibility": visibility }));
    c.call(
        Method::PUT,
        &format!("/api/v1/namespaces/{name}"),
        Some(body),
    )
    .await?;
    println!("namespace {name} is {visibility}");
    Ok(ExitCode::SUCCESS)
}

/// `berth member …`.
pub async fn member(remote: &Remote, cmd: MemberCommand) -> anyhow::Result<ExitCode> {
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    match cmd {
        MemberCommand::Add {
            namespace,
            account,
            role,
        } => {
            let path = format!("/api/v1/namespaces/{namespace}/members/{account}");
            let body = RequestBody::Json(json!({ "role": role }));
            c.call(Method::PUT, &path, Some(body)).await?;
            println!("{account} is {role} in {namespace}");
        }
        MemberCommand::Remove { namespace, account } => {
            let path = format!("/api/v1/namespaces/{namespace}/members/{account}");
            c.call(Method::DELETE, &path, None).await?;
            println!("{account} is no longer a member of {namespace}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth htpasswd import FILE`.
pub async fn htpasswd(remote: &Remote, cmd: HtpasswdCommand) -> anyhow::Result<ExitCode> {
    let HtpasswdCommand::Import { file } = cmd;
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    let a = c
        .call(
            Method::POST,
            "/api/v1/htpasswd",
            Some(RequestBody::Text(text)),
        )
        .await?;
    let refused = a["refused"].as_array().map_or(0, Vec::len);
    print(remote, &a, |a| {
        for (key, label) in [("created", "created"), ("existing", "already existed")] {
            for name in a[key].as_array().into_iter().flatten() {
                println!("{label}: {}", name.as_str().unwrap_or_default());
            }
        }
        for line in a["refused"].as_array().into_iter().flatten() {
            println!("refused: {}", line.as_str().unwrap_or_default());
        }
    });
    Ok(if refused == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `berth token …`.
pub async fn token(remote: &Remote, cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    let who = |user: Option<String>| async {
        match user {
            Some(u) => Ok::<_, anyhow::Error>(u),
            None => {
                let me = c.call(Method::GET, "/api/v1/whoami", None).await?;
                match me["name"].as_str() {
                    Some(n) if !n.is_empty() => Ok(n.to_owned()),
                    _ => bail!("not logged in: run `berth login` or give --user"),
                }
            }
        }
    };
    match cmd {
        TokenCommand::Add {
            name,
            expires_in_days,
            user,
        } => {
            let user = who(user).await?;
            let expires_at = expires_in_days.map(|d| unix_now() + i64::from(d) * 86_400);
            let body = RequestBody::Json(json!({ "name": name, "expires_at": expires_at }));
            let path = format!("/api/v1/users/{user}/tokens");
            let a = c.call(Method::POST, &path, Some(body)).await?;
            print(remote, &a, |a| {
                println!("created access token {name} for {user}; its secret (shown only now):");
                println!("{}", a["secret"].as_str().unwrap_or_default());
            });
        }
        TokenCommand::List { user } => {
            let user = who(user).await?;
            let path = format!("/api/v1/users/{user}/tokens");
            let a = c.call(Method::GET, &path, None).await?;
            print(remote, &a, |a| {
                println!("{:<24} STATE", "TOKEN");
                for t in a["tokens"].as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {}",
                        t["name"].as_str().unwrap_or_default(),
                        state_of(t)
                    );
                }
            });
        }
        TokenCommand::Revoke { name, user } => {
            let user = who(user).await?;
            let path = format!("/api/v1/users/{user}/tokens/{name}/revoke");
            c.call(Method::POST, &path, None).await?;
            println!("revoked access token {name} of {user}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth tag …`.
pub async fn tag(remote: &Remote, cmd: TagCommand) -> anyhow::Result<ExitCode> {
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    let (repository, tag, at) = match cmd {
        TagCommand::History {
            repository,
            tag,
            at,
        } => (repository, tag, at),
        TagCommand::Restore {
            repository,
            tag,
            to,
            previous,
        } => {
            let body =
                json!({"repository": repository, "tag": tag, "to": to, "previous": previous});
            let path = "/api/v1/tag-restore";
            let a = c
                .call(Method::POST, path, Some(RequestBody::Json(body)))
                .await?;
            print(remote, &a, |a| {
                println!(
                    "{repository}:{tag} now points to {}",
                    a["digest"].as_str().unwrap_or_default()
                );
            });
            return Ok(ExitCode::SUCCESS);
        }
        TagCommand::Pulls {
            repository,
            tag,
            since,
        } => {
            let query = [
                ("repository", repository.as_str()),
                ("tag", tag.as_str()),
                ("since", since.as_str()),
            ];
            let a = c
                .call(Method::GET, &with_query("/api/v1/tag-pulls", &query), None)
                .await?;
            print(remote, &a, print_tag_pulls);
            return Ok(ExitCode::SUCCESS);
        }
    };
    let mut query: Vec<(&str, &str)> = vec![("repository", &repository), ("tag", &tag)];
    if let Some(at) = &at {
        query.push(("at", at));
    }
    let path = with_query("/api/v1/tag-history", &query);
    let a = c.call(Method::GET, &path, None).await?;
    print(remote, &a, |a| {
        if at.is_some() {
            match a["digest"].as_str() {
                Some(d) => println!(
                    "{repository}:{tag} pointed to {d} at {}",
                    a["at"].as_str().unwrap_or_default()
                ),
                None => println!(
                    "{repository}:{tag} did not exist at {}",
                    a["at"].as_str().unwrap_or_default()
                ),
            }
            return;
        }
        println!(
            "{:<24} {:<8} {:<19} {:<19} {:<12} {:<15} USER AGENT",
            "TIME", "CHANGE", "FROM", "TO", "ACCOUNT", "CLIENT"
        );
        for e in a["events"].as_array().into_iter().flatten() {
            let change = match (e["previous"].is_null(), e["new"].is_null()) {
                (true, _) => "created",
                (_, true) => "deleted",
                _ => "moved",
            };
            println!(
                "{:<24} {:<8} {:<19} {:<19} {:<12} {:<15} {}",
                e["at"].as_str().unwrap_or_default(),
                change,
                short_digest(&e["previous"]),
                short_digest(&e["new"]),
                e["account"].as_str().unwrap_or("-"),
                e["client"].as_str().unwrap_or("-"),
                e["user_agent"].as_str().unwrap_or("-"),
            );
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// `berth immutable …`.
pub async fn immutable(remote: &Remote, cmd: ImmutableCommand) -> anyhow::Result<ExitCode> {
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    match cmd {
        ImmutableCommand::Add {
            repositories,
            tags,
            except,
        } => {
            let body = json!({ "repositories": repositories, "tags": tags, "except": except });
            let path = "/api/v1/immutability-rules";
            let a = c
                .call(Method::POST, path, Some(RequestBody::Json(body)))
                .await?;
            print(remote, &a, |a| {
                println!("added {}", a["description"].as_str().unwrap_or_default());
            });
        }
        ImmutableCommand::List => {
            let a = c
                .call(Method::GET, "/api/v1/immutability-rules", None)
                .await?;
            print(remote, &a, |a| {
                for r in a["rules"].as_array().into_iter().flatten() {
                    println!("{}", r["description"].as_str().unwrap_or_default());
                }
            });
        }
        ImmutableCommand::Remove { id } => {
            let path = format!("/api/v1/immutability-rules/{id}");
            c.call(Method::DELETE, &path, None).await?;
            println!("removed immutability rule #{id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth audit`.
pub async fn audit(remote: &Remote, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    let limit = args.limit.map(|l| l.to_string());
    let before = args.before.map(|b| b.to_string());
    let mut query: Vec<(&str, &str)> = Vec::new();
    for (key, value) in [
        ("since", &args.since),
        ("until", &args.until),
        ("namespace", &args.namespace),
        ("repository", &args.repository),
        ("account", &args.account),
    ] {
        if let Some(v) = value {
            query.push((key, v.as_str()));
        }
    }
    query.extend(args.kinds.iter().map(|k| ("kind", k.as_str())));
    query.extend(limit.iter().map(|l| ("limit", l.as_str())));
    query.extend(before.iter().map(|b| ("before", b.as_str())));
    let a = c
        .call(Method::GET, &with_query("/api/v1/audit", &query), None)
        .await?;
    print(remote, &a, |a| {
        let rows: Vec<Vec<String>> = a["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(audit_row)
            .collect();
        if rows.is_empty() {
            println!("no events");
        }
        print_rows(&without_empty_columns(rows));
        if let Some(next) = a["next_before"].as_i64() {
            println!("more: {}", audit_command(&args, next));
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// `berth webhook …`.
pub async fn webhook(remote: &Remote, cmd: WebhookCommand) -> anyhow::Result<ExitCode> {
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    match cmd {
        WebhookCommand::Add {
            url,
            namespace,
            events,
            format,
            secret,
        } => {
            let body = json!({
                "url": url,
                "namespace": namespace,
                "events": events,
                "format": format,
                "secret": secret,
            });
            let a = c
                .call(
                    Method::POST,
                    "/api/v1/webhooks",
                    Some(RequestBody::Json(body)),
                )
                .await?;
            print(remote, &a, |a| {
                println!(
                    "created webhook {} → {}",
                    a["id"],
                    a["url"].as_str().unwrap_or_default()
                );
                println!(
                    "secret: {} (shown once: configure your receiver to verify \
                     X-Berth-Signature-256 = sha256=HMAC-SHA256(secret, body))",
                    a["secret"].as_str().unwrap_or_default()
                );
            });
        }
        WebhookCommand::List => {
            let a = c.call(Method::GET, "/api/v1/webhooks", None).await?;
            print(remote, &a, print_webhooks);
        }
        WebhookCommand::Remove { id } => {
            let path = format!("/api/v1/webhooks/{id}");
            c.call(Method::DELETE, &path, None).await?;
            println!("removed webhook {id}");
        }
        WebhookCommand::Deliveries { id, limit } => {
            let limit = limit.map(|l| l.to_string());
            let query: Vec<(&str, &str)> = limit.iter().map(|l| ("limit", l.as_str())).collect();
            let path = with_query(&format!("/api/v1/webhooks/{id}/deliveries"), &query);
            let a = c.call(Method::GET, &path, None).await?;
            print(remote, &a, print_deliveries);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One digest per block, newest pull first, then one line per client; a closing line
/// when clients run different images.
fn print_tag_pulls(a: &Value) {
    let target = format!(
        "{}:{}",
        a["repository"].as_str().unwrap_or_default(),
        a["tag"].as_str().unwrap_or_default()
    );
    let digests = a["digests"].as_array().map_or(&[][..], Vec::as_slice);
    if digests.is_empty() {
        println!("no pulls of {target} since {}", short_time(&a["since"]));
        return;
    }
    for d in digests {
        println!(
            "{} {}, last {}",
            d["digest"].as_str().unwrap_or_default(),
            pulls(&d["pulls"]),
            short_time(&d["last"])
        );
        let rows: Vec<Vec<String>> = d["clients"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|cl| {
                let mut agent = cl["user_agent"].as_str().unwrap_or("-").to_owned();
                if let Some(account) = cl["account"].as_str() {
                    agent.push_str(&format!(" ({account})"));
                }
                vec![
                    format!("  {}", cl["client"].as_str().unwrap_or_default()),
                    pulls(&cl["pulls"]),
                    format!("last {}", short_time(&cl["last"])),
                    agent,
                ]
            })
            .collect();
        print_rows(&rows);
    }
    if digests.len() > 1 {
        println!(
            "{} digests served: clients are running different images",
            digests.len()
        );
    }
}

/// `12 pulls`, `1 pull`.
fn pulls(n: &Value) -> String {
    match n.as_u64().unwrap_or_default() {
        1 => "1 pull".to_owned(),
        n => format!("{n} pulls"),
    }
}

/// The columns of one audit event.
fn audit_row(e: &Value) -> Vec<String> {
    let mut target = e["repository"].as_str().unwrap_or("-").to_owned();
    if let Some(tag) = e["tag"].as_str() {
        target.push(':');
        target.push_str(tag);
    }
    let digests = if e["previous_digest"].is_null() {
        short_digest(&e["digest"])
    } else {
        format!(
            "{} → {}",
            short_digest(&e["previous_digest"]),
            short_digest(&e["digest"])
        )
    };
    let count = match e["count"].as_u64() {
        Some(n) if n > 1 => format!("×{n}"),
        _ => String::new(),
    };
    let actor = &e["actor"];
    vec![
        short_time(&e["at"]),
        e["kind"].as_str().unwrap_or_default().to_owned(),
        target,
        digests,
        count,
        actor["account"].as_str().unwrap_or("anonymous").to_owned(),
        actor["client"].as_str().unwrap_or("-").to_owned(),
        e["detail"].as_str().unwrap_or_default().to_owned(),
    ]
}

/// The `berth audit` command line that shows the page after the one printed.
fn audit_command(args: &AuditArgs, before: i64) -> String {
    let mut words = vec!["berth".to_owned(), "audit".to_owned()];
    for (flag, value) in [
        ("--since", &args.since),
        ("--until", &args.until),
        ("--namespace", &args.namespace),
        ("--repository", &args.repository),
        ("--account", &args.account),
    ] {
        if let Some(v) = value {
            words.extend([flag.to_owned(), shell_word(v)]);
        }
    }
    for k in &args.kinds {
        words.extend(["--kind".to_owned(), shell_word(k)]);
    }
    if let Some(l) = args.limit {
        words.extend(["--limit".to_owned(), l.to_string()]);
    }
    words.extend(["--before".to_owned(), before.to_string()]);
    words.join(" ")
}

/// A word as a POSIX shell reads it back: quoted when it holds anything but safe characters.
fn shell_word(w: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:+@=,".contains(c);
    if !w.is_empty() && w.chars().all(safe) {
        w.to_owned()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}

/// The webhook table: id, url, namespace, events, format, delivery state.
fn print_webhooks(a: &Value) {
    let mut rows = vec![
        ["ID", "URL", "NAMESPACE", "EVENTS", "FORMAT", "STATE"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for w in a["webhooks"].as_array().into_iter().flatten() {
        let events: Vec<&str> = w["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let failures = w["failures"].as_u64().unwrap_or_default();
        let attempts = if failures == 1 { "attempt" } else { "attempts" };
        let state = match (failures, w["next_attempt"].as_str()) {
            (0, _) => "ok".to_owned(),
            (n, Some(_)) => format!(
                "failing ({n} {attempts}, next {})",
                short_time(&w["next_attempt"])
            ),
            (n, None) => format!("failing ({n} {attempts})"),
        };
        rows.push(vec![
            w["id"].to_string(),
            w["url"].as_str().unwrap_or_default().to_owned(),
            w["namespace"].as_str().unwrap_or("*").to_owned(),
            if events.is_empty() {
                "all".to_owned()
            } else {
                events.join(",")
            },
            w["format"].as_str().unwrap_or_default().to_owned(),
            state,
        ]);
    }
    print_rows(&rows);
}

/// The delivery table: time, event, kind, attempt, result.
fn print_deliveries(a: &Value) {
    let mut rows = vec![
        ["TIME", "EVENT", "KIND", "ATTEMPT", "RESULT"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for d in a["deliveries"].as_array().into_iter().flatten() {
        let result = match (d["delivered"].as_bool(), d["status"].as_u64()) {
            (Some(true), Some(status)) => format!("delivered {status}"),
            (Some(true), None) => "delivered".to_owned(),
            _ => match (d["error"].as_str(), d["status"].as_u64()) {
                (Some(error), _) => format!("failed: {error}"),
                (None, Some(status)) => format!("failed: the receiver answered {status}"),
                (None, None) => "failed".to_owned(),
            },
        };
        rows.push(vec![
            short_time(&d["at"]),
            d["event_id"].to_string(),
            d["kind"].as_str().unwrap_or_default().to_owned(),
            d["attempt"].to_string(),
            result,
        ]);
    }
    print_rows(&rows);
}

/// Prints rows as columns two spaces apart, each as wide as its widest cell (trailing
/// blanks trimmed).
fn print_rows(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or_default();
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or_default()
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        println!("{}", line.trim_end());
    }
}

/// The rows without the columns that are empty in every row.
fn without_empty_columns(rows: Vec<Vec<String>>) -> Vec<Vec<String>> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or_default();
    let keep: Vec<bool> = (0..columns)
        .map(|i| rows.iter().any(|r| r.get(i).is_some_and(|c| !c.is_empty())))
        .collect();
    rows.into_iter()
        .map(|r| {
            r.into_iter()
                .zip(&keep)
                .filter_map(|(cell, &k)| k.then_some(cell))
                .collect()
        })
        .collect()
}

/// An API time (`2026-11-24T02:10:05.123Z`) to the second (`2026-11-24T02:10:05Z`), or `-`.
fn short_time(v: &Value) -> String {
    let Some(t) = v.as_str() else {
        return "-".to_owned();
    };
    match t.find('.') {
        Some(dot) => {
            let rest = &t[dot + 1..];
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            format!("{}{}", &t[..dot], &rest[digits..])
        }
        None => t.to_owned(),
    }
}

/// `path?k=v&…` with the values percent-encoded (just `path` without parameters).
pub(crate) fn with_query(path: &str, query: &[(&str, &str)]) -> String {
    if query.is_empty() {
        return path.to_owned();
    }
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// `sha256:0123456789ab` (enough to tell digests apart in a table), or `-`.
fn short_digest(v: &Value) -> String {
    v.as_str()
        .map_or_else(|| "-".to_owned(), |d| d.chars().take(19).collect())
}

/// Percent-encodes a query value.
fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `revoked`, `expired` or `active`, from an API object's `revoked_at`/`expires_at`.
fn state_of(v: &Value) -> &'static str {
    if !v["revoked_at"].is_null() {
        "revoked"
    } else if v["expires_at"].as_i64().is_some_and(|e| e <= unix_now()) {
        "expired"
    } else {
        "active"
    }
}

/// `PATTERN=ACTIONS` → the API's grant object.
fn parse_grant(g: &str) -> anyhow::Result<Value> {
    let (pattern, actions) = g
        .split_once('=')
        .with_context(|| format!("grant {g:?}: write PATTERN=ACTIONS, e.g. ci/*=pull,push"))?;
    let actions: Vec<&str> = actions.split(',').map(str::trim).collect();
    Ok(json!({ "repositories": pattern, "actions": actions }))
}

fn print_accounts(a: &Value, only_kind: Option<&str>) {
    println!(
        "{:<24} {:<6} {:<6} {:<8} grants",
        "NAME", "KIND", "ADMIN", "STATE"
    );
    for acc in a["accounts"].as_array().into_iter().flatten() {
        let kind = acc["kind"].as_str().unwrap_or_default();
        if only_kind.is_some_and(|k| k != kind) {
            continue;
        }
        let state = state_of(acc);
        let grants: Vec<String> = acc["grants"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                let actions: Vec<&str> = g["actions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                format!(
                    "{}={}",
                    g["repositories"].as_str().unwrap_or_default(),
                    actions.join(",")
                )
            })
            .collect();
        println!(
            "{:<24} {:<6} {:<6} {:<8} {}",
            acc["name"].as_str().unwrap_or_default(),
            kind,
            if acc["registry_admin"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            state,
            grants.join(" ")
        );
    }
}

fn print_namespaces(a: &Value) {
    println!("{:<24} {:<8} members", "NAMESPACE", "VISIBILITY");
    for ns in a["namespaces"].as_array().into_iter().flatten() {
        let members: Vec<String> = ns["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                format!(
                    "{}:{}",
                    m["account"].as_str().unwrap_or_default(),
                    m["role"].as_str().unwrap_or_default()
                )
            })
            .collect();
        println!(
            "{:<24} {:<8} {}",
            ns["name"].as_str().unwrap_or_default(),
            ns["visibility"].as_str().unwrap_or_default(),
            members.join(" ")
        );
    }
}

fn unix_now() -> i64 {
    berth_registry::service::unix_now()
}
