//! The `folio` binary: parse the command line, read the configuration, start logging, run the command.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // A missing .env is normal; a malformed one is reported by the settings it fails to provide.
    let _ = dotenvy::dotenv();
    let cli = folio::cli::Cli::parse();
    let config = match folio::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("folio: configuration error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    folio::telemetry::init_tracing(&config);
    match folio::cli::run(cli, config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "folio failed");
            eprintln!("folio: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
