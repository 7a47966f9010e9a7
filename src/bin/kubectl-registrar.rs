//! `kubectl registrar`: the plugin binary. See `kubectl registrar --help`.

use std::process::ExitCode;

use clap::Parser;
use registrar::cli::{self, Cli};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            cli::report(&e);
            ExitCode::from(1)
        }
    }
}
