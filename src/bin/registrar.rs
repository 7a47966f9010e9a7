//! The registrar operator.
//!
//! For now it connects to the cluster, checks that registrar's CRDs are
//! installed, and waits for SIGINT or SIGTERM; the controllers land in later
//! changes.

use std::process::ExitCode;

use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use registrar::telemetry::{self, LogFormat};
use tracing::{error, info};

/// Turns OAuth 2.0 client registrations into declarative Kubernetes resources.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Log line format.
    #[arg(long, env = "REGISTRAR_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(args.log_format);
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "registrar stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::try_default().await?;
    let version = client.apiserver_version().await?;
    info!(server = %version.git_version, "connected to the Kubernetes API server");

    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for crd in registrar::api::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        if crds.get_opt(&name).await?.is_none() {
            return Err(format!(
                "the CustomResourceDefinition {name} is not installed; apply crds/ first (kubectl apply --server-side -f crds/)"
            )
            .into());
        }
    }
    info!("registrar's CRDs are installed; waiting (controllers are not implemented yet)");

    shutdown_signal().await;
    info!("shutting down");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
