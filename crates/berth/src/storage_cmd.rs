//! Storage commands of the CLI (`berth gc`), clients of the admin API like the others.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::{Remote, print};
use crate::client::{AdminClient, RequestBody};

/// `berth gc`: removes blobs no manifest references, and with `--delete-untagged` untagged
/// manifests nothing depends on, while the registry keeps serving.
#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// Only report what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Also remove untagged manifests (never children of an index that is still present,
    /// never referrers such as signatures of a manifest that is still present).
    #[arg(long)]
    delete_untagged: bool,
    /// Leave alone what was stored, linked or pushed more recently than this (default 1h).
    #[arg(long, value_name = "DURATION")]
    grace: Option<String>,
}

/// Runs `berth gc` against the server.
pub async fn gc(remote: &Remote, args: GcArgs) -> anyhow::Result<ExitCode> {
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    let body = json!({
        "dry_run": args.dry_run,
        "delete_untagged": args.delete_untagged,
        "grace": args.grace,
    });
    let a = c
        .call(Method::POST, "/api/v1/gc", Some(RequestBody::Json(body)))
        .await?;
    print(remote, &a, print_report);
    Ok(ExitCode::SUCCESS)
}

fn print_report(a: &Value) {
    let dry = a["dry_run"].as_bool().unwrap_or(false);
    for m in a["manifests"].as_array().into_iter().flatten() {
        println!(
            "{} untagged manifest {}@{}",
            if dry { "would remove" } else { "removed" },
            m["repository"].as_str().unwrap_or_default(),
            m["digest"].as_str().unwrap_or_default()
        );
    }
    let manifests = a["manifests"].as_array().map_or(0, Vec::len);
    let blobs = a["blobs"].as_u64().unwrap_or(0);
    let bytes = a["bytes"].as_u64().unwrap_or(0);
    println!(
        "{} {manifests} untagged manifest{}, {blobs} blob{} ({}) in {} ms",
        if dry { "would remove" } else { "removed" },
        if manifests == 1 { "" } else { "s" },
        if blobs == 1 { "" } else { "s" },
        human_bytes(bytes),
        a["elapsed_ms"].as_u64().unwrap_or(0)
    );
}

/// Bytes in the largest binary unit that keeps the number at least 1.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_are_shown_in_binary_units() {
        let shown: Vec<String> = [0, 1023, 1024, 1536, 412 * 1024 * 1024, 10 << 30]
            .map(super::human_bytes)
            .to_vec();
        assert_eq!(
            shown,
            [
                "0 B",
                "1023 B",
                "1.0 KiB",
                "1.5 KiB",
                "412.0 MiB",
                "10.0 GiB"
            ]
        );
    }
}
