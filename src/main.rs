//! The `folio` binary: parse the command line, read the configuration, start logging, run the command.

/// mimalloc instead of the system allocator: a GraphQL response is built from many small allocations on
/// several threads, where glibc's malloc spent a fifth of the CPU, much of it on arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // A missing .env is normal; a malformed one is reported by the settings it fails to provide.
    let _ = dotenvy::dotenv();
    let cli = folio::cli::Cli::parse_declared();
    let config = match folio::Config::from_settings(cli.settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("folio: configuration error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let _traces = folio::telemetry::init_tracing(&config);
    match folio::cli::run(cli.command, config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "folio failed");
            eprintln!("folio: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
