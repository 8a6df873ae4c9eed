//! The `boxoffice` binary: parses the command line, sets up logging and runs the library.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use boxoffice::config::{Cli, Command};

/// mimalloc rather than glibc's allocator: actors, requests and records are many short-lived
/// allocations across threads, where glibc's arenas showed up in every profile (malloc, free and
/// arena consolidation were about a fifth of the server's time in an expiry storm) and kept
/// Argon2's freed 19 MiB blocks resident (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(boxoffice::app::DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(
        std::env::var_os("NO_COLOR").is_none()
            && std::io::IsTerminal::is_terminal(&std::io::stdout()),
    );
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT, starting shutdown"),
        () = terminate => tracing::info!("received SIGTERM, starting shutdown"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest's rustls needs a process-wide crypto provider; ring is pure and fast to build.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("boxoffice: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => {
            init_tracing(args.log_format == "json");
            runtime.block_on(async move {
                match boxoffice::app::start(*args, shutdown_signal()).await {
                    Ok(server) => {
                        server.wait().await;
                        ExitCode::SUCCESS
                    }
                    Err(error) => {
                        eprintln!("boxoffice: {error}");
                        ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(1))
                    }
                }
            })
        }
        Command::Loadtest(args) => {
            ExitCode::from(runtime.block_on(boxoffice::loadtest::run(*args)))
        }
        Command::Healthcheck(args) => runtime.block_on(async move {
            let url = args.url();
            let client = match reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .build()
            {
                Ok(client) => client,
                Err(error) => {
                    eprintln!("boxoffice healthcheck: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match client.get(&url).send().await {
                Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
                Ok(response) => {
                    eprintln!(
                        "boxoffice healthcheck: {url} answered {}",
                        response.status()
                    );
                    ExitCode::FAILURE
                }
                Err(error) => {
                    eprintln!("boxoffice healthcheck: {url}: {error}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}
