//! `berth`: the registry server and its admin commands.

mod auth;
mod config;
mod fsck;
mod memory;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// berth: a container registry that keeps tags honest and blobs verified.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the registry (embedded default: filesystem blobs + SQLite under ./berth-data).
    Serve(serve::ServeArgs),
    /// Verify every stored blob against its digest and report orphans and corrupt files.
    Fsck(fsck::FsckArgs),
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
