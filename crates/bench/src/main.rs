//! `berth-bench`: a benchmark program (not a test) that drives registries over HTTP on
//! loopback and prints one line per scenario and a side-by-side table.
//!
//! By default it starts the CNCF Distribution registry (`/usr/bin/docker-registry`) and a
//! release `berth`, each on a temp dir and a loopback port, runs every scenario on both
//! alternately in the same run, and reports berth/Distribution ratios.

mod load;
mod scenarios;
mod stats;
mod target;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use scenarios::{Figure, Sizes};
use target::Target;

/// Benchmark berth against the Distribution registry.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The berth binary to benchmark (build it with `cargo build --release`).
    #[arg(long, default_value = "target/release/berth")]
    berth: PathBuf,
    /// The Distribution registry binary (Debian package docker-registry).
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    distribution: PathBuf,
    /// Benchmark an already running registry at this address (HOST:PORT) instead.
    #[arg(long)]
    url: Option<String>,
    /// Small sizes and short durations: checks the program works, measures nothing useful.
    #[arg(long)]
    quick: bool,
    /// Seconds each request-rate scenario runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Repetitions of each throughput scenario (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Run only the scenarios whose name contains this text.
    #[arg(long)]
    only: Option<String>,
    /// Also run berth with credentials required (pushes with Basic credentials, request
    /// rates with a bearer token), to measure what authentication costs.
    #[arg(long)]
    auth_cost: bool,
    /// Also run another berth binary (e.g. built from an earlier commit) as `baseline`,
    /// between Distribution and berth, so the table shows berth / baseline: what a change
    /// costs or saves, measured in the same run.
    #[arg(long, value_name = "BERTH_BINARY")]
    baseline: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full(args.seconds, args.repeat)
    };
    let mut targets: Vec<Target> = match &args.url {
        Some(url) => vec![Target::external(url)],
        None => {
            let distribution = Target::distribution(&args.distribution)
                .await
                .context("starting the Distribution registry")?;
            let mut targets = vec![distribution];
            if let Some(bin) = &args.baseline {
                let baseline = Target::start_berth(bin, "baseline", None)
                    .await
                    .context("starting the baseline berth")?;
                targets.push(baseline);
            }
            targets.push(Target::berth(&args.berth).await.context("starting berth")?);
            if args.auth_cost {
                let with_auth = Target::berth_with_auth(&args.berth)
                    .await
                    .context("starting berth with auth")?;
                targets.push(with_auth);
            }
            targets
        }
    };
    for t in &targets {
        eprintln!("# {} at {} (pid {:?})", t.name, t.addr, t.pid());
    }

    let mut rows: Vec<(String, Vec<Figure>)> = Vec::new();
    let chosen: Vec<&scenarios::Scenario> = scenarios::ALL
        .iter()
        .filter(|s| args.only.as_deref().is_none_or(|o| s.name.contains(o)))
        .collect();
    // Scenarios that stop their target run last, after the peak-RSS reading.
    let (stopping, running): (Vec<_>, Vec<_>) = chosen.into_iter().partition(|s| s.stops_target);
    for scenario in &running {
        rows.push(run_scenario(scenario, &mut targets, &sizes).await?);
    }
    let mut rss = Vec::new();
    for t in &targets {
        if let Some(kib) = t.peak_rss_kib() {
            println!(
                "{:<10} {:<34} {} MiB",
                t.name,
                "peak RSS (VmHWM)",
                kib / 1024
            );
            rss.push(Figure::lower(kib as f64 / 1024.0, "MiB"));
        }
    }
    if rss.len() == targets.len() {
        rows.push(("peak RSS (VmHWM)".to_owned(), rss));
    }
    for scenario in &stopping {
        rows.push(run_scenario(scenario, &mut targets, &sizes).await?);
    }
    print_table(&targets, &rows);
    for t in targets {
        t.stop().await;
    }
    Ok(())
}

/// Runs one scenario on every target in turn; its row of the table.
async fn run_scenario(
    scenario: &scenarios::Scenario,
    targets: &mut [Target],
    sizes: &Sizes,
) -> anyhow::Result<(String, Vec<Figure>)> {
    let mut figures = Vec::new();
    for t in targets.iter_mut() {
        let f = (scenario.run)(t, sizes)
            .await
            .with_context(|| format!("{} on {}", scenario.name, t.name))?;
        println!("{:<10} {:<34} {}", t.name, scenario.name, f.describe());
        figures.push(f);
        // Let the page cache and the server settle between runs.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok((scenario.name.to_owned(), figures))
}

fn print_table(targets: &[Target], rows: &[(String, Vec<Figure>)]) {
    println!();
    print!("| scenario |");
    for t in targets {
        print!(" {} |", t.name);
    }
    // Ratios of each target to the one before it: baseline / distribution, berth /
    // baseline (or distribution), berth+auth / berth.
    let ratios: Vec<(usize, usize)> = (1..targets.len()).map(|i| (i, i - 1)).collect();
    for &(a, b) in &ratios {
        print!(" {} / {} |", targets[a].name, targets[b].name);
    }
    println!();
    print!("|---|");
    for _ in 0..targets.len() + ratios.len() {
        print!("---|");
    }
    println!();
    for (name, figures) in rows {
        print!("| {name} |");
        for f in figures {
            print!(" {} |", f.describe());
        }
        for &(a, b) in &ratios {
            match (figures.get(a), figures.get(b)) {
                (Some(fa), Some(fb)) => print!(" {} |", fa.ratio_to(fb)),
                _ => print!(" |"),
            }
        }
        println!();
    }
}
