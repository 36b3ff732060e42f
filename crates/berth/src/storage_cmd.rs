//! Storage commands of the CLI (`berth gc`, `berth lifecycle`, `berth quota`, `berth
//! usage`), clients of the admin API like the others.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use anyhow::Context;

use crate::admin::{Remote, print, with_query};
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

/// `berth quota …`: byte limits per namespace over the unique blobs its images reference.
#[derive(clap::Subcommand, Debug)]
pub enum QuotaCommand {
    /// Sets a namespace's limit, e.g. `10GiB`, `500MB` (registry admins).
    Set {
        /// Namespace.
        namespace: String,
        /// The limit.
        size: String,
    },
    /// Shows a namespace's limit and what is used.
    Get {
        /// Namespace.
        namespace: String,
    },
    /// Removes a namespace's limit.
    Remove {
        /// Namespace.
        namespace: String,
    },
}

/// `berth usage [namespace]`: bytes used per namespace, or per repository of one.
#[derive(clap::Args, Debug)]
pub struct UsageArgs {
    /// Only this namespace, with its repositories.
    namespace: Option<String>,
}

/// Runs `berth quota …` against the server.
pub async fn quota(remote: &Remote, cmd: QuotaCommand) -> anyhow::Result<ExitCode> {
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    let (method, namespace, body) = match cmd {
        QuotaCommand::Set { namespace, size } => (
            Method::PUT,
            namespace,
            Some(RequestBody::Json(json!({ "limit": size }))),
        ),
        QuotaCommand::Get { namespace } => (Method::GET, namespace, None),
        QuotaCommand::Remove { namespace } => (Method::DELETE, namespace, None),
    };
    let removing = method == Method::DELETE;
    let a = c
        .call(method, &format!("/api/v1/quotas/{namespace}"), body)
        .await?;
    if removing {
        println!("removed the quota of {namespace}");
    } else {
        print(remote, &a, print_usage_line);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `berth usage` against the server.
pub async fn usage(remote: &Remote, args: UsageArgs) -> anyhow::Result<ExitCode> {
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    let path = match &args.namespace {
        Some(ns) => with_query("/api/v1/usage", &[("namespace", ns)]),
        None => "/api/v1/usage".to_owned(),
    };
    let a = c.call(Method::GET, &path, None).await?;
    print(remote, &a, |a| match a["namespaces"].as_array() {
        Some(all) => all.iter().for_each(print_usage_line),
        None => {
            print_usage_line(a);
            for r in a["repositories"].as_array().into_iter().flatten() {
                println!(
                    "  {:<40} {}",
                    r["repository"].as_str().unwrap_or_default(),
                    r["used"].as_str().unwrap_or_default()
                );
            }
        }
    });
    Ok(ExitCode::SUCCESS)
}

/// `payments  9.6 GiB of 10.0 GiB (96 %)`, or `… (no quota)`.
fn print_usage_line(u: &Value) {
    let used = u["used"].as_str().unwrap_or_default();
    let name = u["namespace"].as_str().unwrap_or_default();
    match (u["limit"].as_u64(), u["bytes"].as_u64()) {
        (Some(limit), Some(bytes)) if limit > 0 => println!(
            "{name:<24} {used} of {} ({} %)",
            u["limit_text"].as_str().unwrap_or_default(),
            bytes.saturating_mul(100) / limit
        ),
        _ => println!("{name:<24} {used} (no quota)"),
    }
}

/// `berth delete <repo>@<digest> [--cascade]`: deletes a manifest by digest.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// `repository@sha256:…`.
    image: String,
    /// Also delete its referrers (signatures, SBOMs, attestations) and the index children
    /// only it kept.
    #[arg(long)]
    cascade: bool,
}

/// Runs `berth delete` against the server.
pub async fn delete(remote: &Remote, args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let Some((repo, digest)) = args.image.split_once('@') else {
        anyhow::bail!("{:?}: give the image as repository@sha256:…", args.image);
    };
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    let mut query = vec![("repository", repo), ("digest", digest)];
    if args.cascade {
        query.push(("cascade", "true"));
    }
    let a = c
        .call(
            Method::DELETE,
            &with_query("/api/v1/manifests", &query),
            None,
        )
        .await?;
    print(remote, &a, |a| {
        for d in a["removed"].as_array().into_iter().flatten() {
            println!("deleted {repo}@{}", d.as_str().unwrap_or_default());
        }
    });
    Ok(ExitCode::SUCCESS)
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

/// `berth lifecycle …`: expiry rules in the JSON of ECR lifecycle policies, per repository
/// or namespace.
#[derive(clap::Subcommand, Debug)]
pub enum LifecycleCommand {
    /// Sets the policy of a repository or namespace from an ECR lifecycle policy file.
    Put {
        /// Repository or namespace.
        scope: String,
        /// The policy (JSON, as for `aws ecr put-lifecycle-policy`).
        file: std::path::PathBuf,
    },
    /// Prints the policy of a repository or namespace, as it was put.
    Get {
        /// Repository or namespace.
        scope: String,
    },
    /// Removes the policy of a repository or namespace.
    Remove {
        /// Repository or namespace.
        scope: String,
    },
    /// Lists exactly what would expire now (or at `--at`), and why; changes nothing.
    Preview {
        /// Repository or namespace.
        scope: String,
        /// Evaluate as of this RFC 3339 time instead of now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Evaluates now (or as of `--at`) and expires what the rules select.
    Apply {
        /// Repository or namespace.
        scope: String,
        /// Evaluate as of this RFC 3339 time instead of now.
        #[arg(long)]
        at: Option<String>,
    },
}

/// Runs `berth lifecycle …` against the server.
pub async fn lifecycle(remote: &Remote, cmd: LifecycleCommand) -> anyhow::Result<ExitCode> {
    let c = AdminClient::connect(remote.server.as_deref()).await?;
    match cmd {
        LifecycleCommand::Put { scope, file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let path = with_query("/api/v1/lifecycle", &[("scope", &scope)]);
            let a = c
                .call(Method::PUT, &path, Some(RequestBody::Text(text)))
                .await?;
            print(remote, &a, |a| {
                println!("lifecycle policy of {scope}:");
                for rule in a["rules"].as_array().into_iter().flatten() {
                    println!("  {}", rule.as_str().unwrap_or_default());
                }
            });
        }
        LifecycleCommand::Get { scope } => {
            let path = with_query("/api/v1/lifecycle", &[("scope", &scope)]);
            let a = c.call(Method::GET, &path, None).await?;
            println!("{}", serde_json::to_string_pretty(&a)?);
        }
        LifecycleCommand::Remove { scope } => {
            let path = with_query("/api/v1/lifecycle", &[("scope", &scope)]);
            c.call(Method::DELETE, &path, None).await?;
            println!("removed the lifecycle policy of {scope}");
        }
        LifecycleCommand::Preview { scope, at } => {
            let a = evaluate(&c, "preview", &scope, at.as_deref()).await?;
            print(remote, &a, |a| {
                print_expiries(a, "expiries", "would expire")
            });
        }
        LifecycleCommand::Apply { scope, at } => {
            let a = evaluate(&c, "apply", &scope, at.as_deref()).await?;
            print(remote, &a, |a| print_expiries(a, "expired", "expired"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `POST /api/v1/lifecycle/{action}?scope=…[&at=…]`.
async fn evaluate(
    c: &AdminClient,
    action: &str,
    scope: &str,
    at: Option<&str>,
) -> anyhow::Result<Value> {
    let mut query = vec![("scope", scope)];
    query.extend(at.map(|t| ("at", t)));
    let path = with_query(&format!("/api/v1/lifecycle/{action}"), &query);
    c.call(Method::POST, &path, None).await
}

/// One line per image: repository, digest, tags, and the rule's reason.
fn print_expiries(a: &Value, key: &str, verb: &str) {
    let list = a[key].as_array().cloned().unwrap_or_default();
    for e in &list {
        let tags: Vec<&str> = e["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let tags = if tags.is_empty() {
            "untagged".to_owned()
        } else {
            tags.join(",")
        };
        println!(
            "{} {}@{} ({tags}): {}",
            verb,
            e["repository"].as_str().unwrap_or_default(),
            e["digest"].as_str().unwrap_or_default(),
            e["reason"].as_str().unwrap_or_default()
        );
        for extra in e["removed"].as_array().into_iter().flatten().skip(1) {
            println!(
                "  with {} (kept only by it)",
                extra.as_str().unwrap_or_default()
            );
        }
    }
    println!(
        "{} image{} {verb} in {} as of {}",
        list.len(),
        if list.len() == 1 { "" } else { "s" },
        a["scope"].as_str().unwrap_or_default(),
        a["at"].as_str().unwrap_or_default()
    );
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
        berth_registry::quota::format_size(bytes),
        a["elapsed_ms"].as_u64().unwrap_or(0)
    );
}
