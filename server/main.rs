use std::process::ExitCode;

use clap::Parser;
use inferd::cli::{Cli, Command};

// glibc's malloc took ~12% of the server's CPU under load (the request path's small allocations, freed on other
// threads than they were made on, and malloc_consolidate); mimalloc's per-thread free lists cost a fraction of
// that. ONNX Runtime's own C++ allocations stay with glibc (`memory::return_freed_memory` trims those).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Serve(args) => serve_main(args).map(|()| ExitCode::SUCCESS),
        Command::Profile(args) => Ok(profile(args)),
    }
}

/// `inferd profile`: one job from start to end, no server; its one line of output on stdout, warnings and the
/// error on stderr.
fn profile(args: inferd::cli::ProfileArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    // As for serving: candle's pool is sized before any thread starts.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = inferd::profiler::threads(args.intra_op_threads);
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    match inferd::profiler::run(&args) {
        Ok(written) => {
            println!("{written}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("inferd profile: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve_main(args: inferd::cli::ServeArgs) -> anyhow::Result<()> {
    inferd::logging::init(args.log_format)?;
    // candle sizes its thread pool from RAYON_NUM_THREADS (all cores by default, several times slower on a
    // shared machine); set it before any thread starts, unless the user already has.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", args.intra_op_threads.max(1).to_string());
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.runtime_threads > 0 {
        runtime.worker_threads(args.runtime_threads);
    }
    runtime.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: inferd::cli::ServeArgs) -> anyhow::Result<()> {
    let exit_timeout = std::time::Duration::from_secs(args.exit_timeout_secs);
    let mut server = inferd::server::start(args).await?;
    let listening =
        |name: &str, addr: Option<std::net::SocketAddr>| addr.map(|a| format!("{name} {a}")).unwrap_or_default();
    tracing::info!(
        "inferd ready: {} {} {}",
        listening("HTTP", server.http_addr),
        listening("gRPC", server.grpc_addr),
        listening("metrics", server.metrics_addr)
    );
    tokio::select! {
        r = server.wait() => r?,
        _ = shutdown_signal() => {
            tracing::info!("shutting down: not ready, refusing new requests, finishing those in flight (up to {} s)", exit_timeout.as_secs());
            if tokio::time::timeout(exit_timeout, server.shutdown()).await.is_err() {
                anyhow::bail!("requests still in flight after --exit-timeout-secs {}; exiting anyway", exit_timeout.as_secs());
            }
            tracing::info!("shut down: every request answered");
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
