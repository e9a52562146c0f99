//! The PipelineRun controller. Run one replica (Deployment strategy Recreate); see
//! docs/operator.md.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use streamflow_operator::controller::{self, Options};

#[derive(Parser)]
#[command(
    name = "streamflow-operator",
    version,
    about = "Runs PipelineRuns as Kubernetes Jobs."
)]
struct Cli {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "STREAMFLOW_OPERATOR_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(
        long,
        env = "STREAMFLOW_OPERATOR_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: SocketAddr,
    /// Reconciles in flight at once, per controller.
    #[arg(
        long,
        env = "STREAMFLOW_OPERATOR_CONCURRENCY",
        default_value_t = 8,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    concurrency: u16,
    /// The job image of PipelineRuns that name none (`spec.image`); the chart sets it to the
    /// `streamflow` image of its appVersion.
    #[arg(long, env = "STREAMFLOW_OPERATOR_DEFAULT_IMAGE", default_value = streamflow_operator::crd::DEFAULT_IMAGE)]
    default_image: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let client = match client().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "error: cannot build a Kubernetes client (KUBECONFIG or in-cluster config): {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    let opts = Options {
        namespace: cli.namespace,
        http_addr: cli.http_addr,
        concurrency: cli.concurrency,
        default_image: cli.default_image,
    };
    match controller::run(client, opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The default client (KUBECONFIG or in-cluster), counting its requests in the operator's
/// metrics.
async fn client() -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    let layer = tower::util::MapRequestLayer::new(streamflow_operator::metrics::count_api_request);
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}
