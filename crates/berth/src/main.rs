//! `berth`: the registry server and its admin commands.

mod admin;
mod auth;
mod client;
mod config;
mod fsck;
mod memory;
mod serve;
mod storage_cmd;
mod tls;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// berth: a container registry that keeps tags honest and blobs verified.
#[derive(Parser, Debug)]
#[command(version, about, after_help = ADMIN_HELP)]
struct Cli {
    #[command(flatten)]
    remote: admin::Remote,
    #[command(subcommand)]
    command: Command,
}

/// Shown by `berth help`: how the admin commands find their server and credentials.
const ADMIN_HELP: &str = "\
The admin commands (login, user, robot, token, namespace, member, immutable, tag,
audit, webhook, htpasswd) call the server's
admin API at --server (BERTH_SERVER, default http://127.0.0.1:5000) with, first found:
BERTH_USERNAME + BERTH_PASSWORD, the login stored by `berth login`, or no credentials
(enough while the server runs open). --json prints the server's answer as JSON.

Examples:
  echo \"$PASSWORD\" | berth login --username admin --password-stdin
  echo 'ann-pass-123' | berth user add ann
  berth robot add ci --grant 'ci/*=pull,push' --expires-in-days 90
  berth token add laptop --expires-in-days 30
  berth namespace add team --public
  berth member add team ann writer
  berth htpasswd import /etc/docker/registry/htpasswd
  berth immutable add 'payments/*' --tags 'v*' --except latest
  berth tag history payments/api latest [--at 2026-11-24T01:40:00Z]
  berth tag restore payments/api latest --previous
  berth tag pulls payments/api latest --since 2h
  berth audit --kind tag.overwritten --namespace payments --since 7d
  berth webhook add https://hooks.example.com/berth --event tag.overwritten";

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the registry (embedded default: filesystem blobs + SQLite under ./berth-data).
    Serve(serve::ServeArgs),
    /// Verify every stored blob against its digest and report orphans and corrupt files.
    Fsck(fsck::FsckArgs),
    /// Log in to a berth server (stores a refresh token, never the password).
    Login(admin::LoginArgs),
    /// Forget the stored login for a server.
    Logout,
    /// Manage users: add, list, passwd, remove.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Manage robot accounts for CI: add, list, revoke.
    #[command(subcommand)]
    Robot(admin::RobotCommand),
    /// Manage namespaces: add, list, set --public/--private.
    #[command(subcommand)]
    Namespace(admin::NamespaceCommand),
    /// Manage namespace members: add, remove.
    #[command(subcommand)]
    Member(admin::MemberCommand),
    /// Manage personal access tokens: add, list, revoke.
    #[command(subcommand)]
    Token(admin::TokenCommand),
    /// Tag immutability rules: add, list, remove.
    #[command(subcommand)]
    Immutable(admin::ImmutableCommand),
    /// Tag history (when a tag moved, who moved it, from which digest to which), restore, pulls.
    #[command(subcommand)]
    Tag(admin::TagCommand),
    /// The event log: pushes, pulls, deletes, tag changes, denials, failed logins.
    Audit(admin::AuditArgs),
    /// Webhooks notifying receivers of events: add, list, remove, deliveries.
    #[command(subcommand)]
    Webhook(admin::WebhookCommand),
    /// Import accounts from an htpasswd file.
    #[command(subcommand)]
    Htpasswd(admin::HtpasswdCommand),
    /// Garbage collection now: unreferenced blobs, optionally untagged manifests.
    Gc(storage_cmd::GcArgs),
    /// Lifecycle policies in ECR's JSON: put, get, remove, preview, apply.
    #[command(subcommand)]
    Lifecycle(storage_cmd::LifecycleCommand),
    /// Byte limits per namespace: set, get, remove.
    #[command(subcommand)]
    Quota(storage_cmd::QuotaCommand),
    /// Bytes used per namespace, or per repository of one namespace.
    Usage(storage_cmd::UsageArgs),
    /// Deletes a manifest by digest; --cascade also deletes its referrers.
    Delete(storage_cmd::DeleteArgs),
}

fn main() -> ExitCode {
    memory::limit_arenas();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // Access logs (one line per request) are opt-in: RUST_LOG=info,berth::access=info
                .unwrap_or_else(|_| "info,sqlx=warn,berth::access=off".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Fsck(args) => fsck::run(args).await,
            Command::Login(args) => admin::login(&cli.remote, args).await,
            Command::Logout => admin::logout(&cli.remote),
            Command::User(cmd) => admin::user(&cli.remote, cmd).await,
            Command::Robot(cmd) => admin::robot(&cli.remote, cmd).await,
            Command::Namespace(cmd) => admin::namespace(&cli.remote, cmd).await,
            Command::Member(cmd) => admin::member(&cli.remote, cmd).await,
            Command::Token(cmd) => admin::token(&cli.remote, cmd).await,
            Command::Immutable(cmd) => admin::immutable(&cli.remote, cmd).await,
            Command::Tag(cmd) => admin::tag(&cli.remote, cmd).await,
            Command::Audit(args) => admin::audit(&cli.remote, args).await,
            Command::Webhook(cmd) => admin::webhook(&cli.remote, cmd).await,
            Command::Htpasswd(cmd) => admin::htpasswd(&cli.remote, cmd).await,
            Command::Gc(args) => storage_cmd::gc(&cli.remote, args).await,
            Command::Lifecycle(cmd) => storage_cmd::lifecycle(&cli.remote, cmd).await,
            Command::Quota(cmd) => storage_cmd::quota(&cli.remote, cmd).await,
            Command::Usage(args) => storage_cmd::usage(&cli.remote, args).await,
            Command::Delete(args) => storage_cmd::delete(&cli.remote, args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth: {e:#}");
            ExitCode::FAILURE
        }
    }
}
