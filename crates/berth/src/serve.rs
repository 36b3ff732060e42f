//! `berth serve`: bind, serve `/v2` over HTTP or HTTPS, expire stale uploads, write
//! buffered events, deliver webhooks, prune old events, stop gracefully.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_registry::Registry;
use berth_registry::service::{unix_now, unix_now_ms};
use berth_registry::webhooks::Backoff;
use berth_remote::HttpNotifier;

use crate::config::{StoreArgs, open_stores};
use crate::tls;

/// Flags of `berth serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address to listen on (default 127.0.0.1:5000).
    #[arg(long, env = "BERTH_LISTEN")]
    listen: Option<String>,
    /// TLS certificate chain (PEM file); with --tls-key, berth serves HTTPS and reloads
    /// both files when they change.
    #[arg(long, env = "BERTH_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM file) of --tls-cert.
    #[arg(long, env = "BERTH_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut config = args.store.resolve(args.listen.as_deref())?;
    config.tls_cert = args.tls_cert.or(config.tls_cert);
    config.tls_key = args.tls_key.or(config.tls_key);
    if args.print_config {
        print!("{}", toml::to_string(&config)?);
        return Ok(ExitCode::SUCCESS);
    }
    let tls = tls::TlsFiles::pair(config.tls_cert.as_deref(), config.tls_key.as_deref())?
        .map(tls::start)
        .transpose()?;
    let (registry, meta) = open_stores(&config.data).await?;
    let auth = crate::auth::start(&config, meta).await?;
    let expiry = Duration::from_secs(config.upload_idle_timeout_secs);
    tokio::spawn(expire_uploads(registry.clone(), expiry));
    tokio::spawn(crate::memory::release_free_memory());
    tokio::spawn(prune_events(registry.clone(), config.events.keep_days));
    if config.gc.interval_secs > 0 {
        tokio::spawn(collect_garbage(registry.clone(), config.gc.clone()));
    }
    let (stop_flushing, flush_stopped) = tokio::sync::oneshot::channel();
    let flusher = tokio::spawn(flush_events(registry.clone(), flush_stopped));
    let notifier = HttpNotifier::new().context("building the webhook HTTP client")?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(listen = %local, scheme, data = %config.data.display(), "berth is serving the OCI distribution API");
    // Machine-readable line for scripts that start berth on port 0.
    println!("listening on {local}");
    tokio::spawn(deliver_webhooks(
        registry.clone(),
        notifier,
        config.webhooks.backoff(),
        format!("{scheme}://{local}"),
    ));

    let state = berth_http::AppState {
        registry: registry.clone(),
        auth,
    };
    let app = berth_http::router(state, Some(install_metrics()?));
    serve(
        listener,
        tls,
        app,
        Duration::from_secs(config.shutdown_grace_secs),
    )
    .await;
    // Let a flush under way finish, then write what the last requests recorded.
    let _ = stop_flushing.send(());
    let _ = flusher.await;
    match registry.flush_events().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(events = n, "wrote the last buffered events"),
        Err(e) => tracing::warn!(error = %e, "could not write the last buffered events"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Installs the Prometheus recorder and returns the `/metrics` renderer.
fn install_metrics() -> anyhow::Result<berth_http::metrics::MetricsRender> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(berth_http::metrics::LATENCY.to_owned()),
            berth_http::metrics::LATENCY_BUCKETS,
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    // Histogram samples pile up in the recorder until they are folded into buckets; without
    // this, memory grows with every request between scrapes.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(Arc::new(move || handle.render()))
}

/// How often pending histogram samples are folded into their buckets.
const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Largest read buffer one HTTP/1 connection may grow (hyper's default is ~400 KiB);
/// with many concurrent uploads these buffers dominate resident memory.
const CONNECTION_READ_BUFFER: usize = 64 * 1024;

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections (TLS when `tls` is set) until SIGTERM/Ctrl-C, then stops accepting
/// and gives requests in flight up to `grace` to finish.
async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    grace: Duration,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(CONNECTION_READ_BUFFER);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = TowerToHyperService::new(tower::service_fn(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(berth_http::ClientAddr(peer));
                let mut app = app.clone();
                async move { tower::Service::call(&mut app, req.map(axum::body::Body::new)).await }
            },
        ));
        // Counted from here, so shutdown also waits for (bounded) handshakes.
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let tls = tls.clone();
        // The handshake runs in the connection's own task: a slow client holds up no one.
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(conn).await
                }
                Some(tls) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let conn = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, letting requests in flight finish");
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(secs = grace.as_secs(), "requests still running after the grace period; exiting");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Cancels upload sessions idle for longer than `expiry`, at start and then every quarter
/// of `expiry` (at least every second, at most every hour).
async fn expire_uploads(registry: Arc<Registry>, expiry: Duration) {
    let every = (expiry / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let before = unix_now() - expiry.as_secs() as i64;
        match registry.expire_uploads(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expired stale uploads"),
            Err(e) => tracing::warn!(error = %e, "could not expire stale uploads"),
        }
    }
}

/// How often buffered events are written to the metadata store.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// How often subscriptions are checked for due webhook deliveries.
const DELIVERY_INTERVAL: Duration = Duration::from_millis(250);
/// How often events older than `[events] keep_days` are deleted.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Writes buffered events every second until `stop` fires (or its sender is dropped).
/// Errors are logged and the loop goes on: the events stay buffered for the next try.
async fn flush_events(registry: Arc<Registry>, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = RepeatedWarning::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        match registry.flush_events().await {
            Ok(_) => warned.clear(),
            Err(e) => warned.warn("could not write buffered events", &e),
        }
    }
}

/// Runs a webhook delivery round every 250 ms, for the life of the server. `source` is this
/// server's base URL, as Distribution-format payloads name it.
async fn deliver_webhooks(
    registry: Arc<Registry>,
    notifier: HttpNotifier,
    backoff: Backoff,
    source: String,
) {
    let mut tick = tokio::time::interval(DELIVERY_INTERVAL);
    // A round can outlast the interval (a slow receiver); never run rounds back to back.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = RepeatedWarning::default();
    loop {
        tick.tick().await;
        match registry.deliver_webhooks(&notifier, backoff, &source).await {
            Ok(n) => {
                warned.clear();
                if n > 0 {
                    tracing::debug!(delivered = n, "delivered webhooks");
                }
            }
            Err(e) => warned.warn("webhook delivery round failed", &e),
        }
    }
}

/// Deletes events older than `keep_days`, at start and then hourly.
async fn prune_events(registry: Arc<Registry>, keep_days: u64) {
    let keep_ms = i64::try_from(keep_days)
        .unwrap_or(i64::MAX)
        .saturating_mul(86_400_000);
    let mut tick = tokio::time::interval(PRUNE_INTERVAL);
    loop {
        tick.tick().await;
        let before = unix_now_ms().saturating_sub(keep_ms);
        match registry.prune_events(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, keep_days, "pruned old events"),
            Err(e) => tracing::warn!(error = %e, "could not prune old events"),
        }
    }
}

/// Every `[gc] interval` (the first time one interval after start): applies the
/// lifecycle policies, then collects garbage.
async fn collect_garbage(registry: Arc<Registry>, gc: crate::config::GcConfig) {
    let interval = Duration::from_secs(gc.interval_secs);
    let opts = berth_registry::gc::GcOptions {
        grace: Duration::from_secs(gc.grace_secs),
        dry_run: false,
        delete_untagged: gc.delete_untagged,
    };
    let actor = berth_registry::Actor {
        account: Some("berth-gc".to_owned()),
        client: None,
        user_agent: None,
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match registry.apply_lifecycle_policies(&actor).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(images = n, "lifecycle policies expired images"),
            Err(e) => tracing::warn!(error = %e, "lifecycle evaluation failed"),
        }
        match registry.collect_garbage(&opts, &actor).await {
            Ok(r) => tracing::info!(
                manifests = r.manifests.len(),
                blobs = r.blobs,
                bytes = r.bytes,
                ms = r.elapsed.as_millis() as u64,
                "garbage collection"
            ),
            Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
        }
    }
}

/// Keeps a loop that fails several times a second from flooding the log: the same error
/// is logged once at `warn`, its repeats at `debug`, until a success clears it.
#[derive(Default)]
struct RepeatedWarning {
    last: Option<String>,
}

impl RepeatedWarning {
    fn warn(&mut self, what: &str, e: &dyn std::fmt::Display) {
        let text = e.to_string();
        if self.last.as_deref() == Some(text.as_str()) {
            tracing::debug!(error = %text, "{what} (again)");
        } else {
            tracing::warn!(error = %text, "{what}");
            self.last = Some(text);
        }
    }

    fn clear(&mut self) {
        if self.last.take().is_some() {
            tracing::info!("recovered from the previous error");
        }
    }
}
