//! `berth fsck`: verify stored blobs and reconcile blob files with metadata.

use std::process::ExitCode;

use berth_registry::fsck::fsck;

use crate::config::{StoreArgs, open_registry};

/// Flags of `berth fsck`.
#[derive(clap::Args, Debug)]
pub struct FsckArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Remove corrupt blobs, orphaned files and dangling uploads (run with the server stopped).
    #[arg(long)]
    repair: bool,
}

/// Runs the check; exits 1 when problems were found and not repaired.
pub async fn run(args: FsckArgs) -> anyhow::Result<ExitCode> {
    let config = args.store.resolve(None)?;
    let registry = open_registry(&config.data).await?;
    let r = fsck(&registry, args.repair).await?;
    println!(
        "verified {} blobs ({} bytes)",
        r.blobs_verified, r.bytes_verified
    );
    let verb = if r.repaired { "removed" } else { "found" };
    for d in &r.corrupt {
        println!("corrupt: {d} ({verb})");
    }
    for d in &r.missing {
        println!("missing file for recorded blob: {d} ({verb})");
    }
    for d in &r.orphans {
        println!("orphaned blob file: {d} ({verb})");
    }
    for s in &r.strays {
        println!("stray file: blobs/{s} ({verb})");
    }
    if r.dangling_uploads > 0 {
        println!("dangling uploads: {} ({verb})", r.dangling_uploads);
    }
    if r.is_clean() {
        println!("clean");
        Ok(ExitCode::SUCCESS)
    } else if r.repaired {
        println!("repaired");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("problems found; run `berth fsck --repair` with the server stopped");
        Ok(ExitCode::from(1))
    }
}
