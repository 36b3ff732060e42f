//! `berth serve`: bind, serve `/v2` over HTTP or HTTPS, expire stale uploads, stop
//! gracefully.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_registry::Registry;
use berth_registry::service::unix_now;

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
    let expiry = Duration::from_secs(config.upload_expiry_hours * 3600);
    tokio::spawn(expire_uploads(registry.clone(), expiry));
    tokio::spawn(crate::memory::release_free_memory());

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(listen = %local, scheme, data = %config.data.display(), "berth is serving the OCI distribution API");
    // Machine-readable line for scripts that start berth on port 0.
    println!("listening on {local}");

    let state = berth_http::AppState { registry, auth };
    let app = berth_http::router(state, Some(install_metrics()?));
    serve(
        listener,
        tls,
        app,
        Duration::from_secs(config.shutdown_grace_secs),
    )
    .await;
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

/// Removes upload sessions older than `expiry`, at start and then hourly.
async fn expire_uploads(registry: Arc<Registry>, expiry: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
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
