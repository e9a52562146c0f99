//! The operator: the PipelineRun, Backfill and Pipeline controllers. Replicas elect a leader
//! on a Lease, and only the leader runs the controllers; see docs/operator.md.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use streamflow_operator::controller::{self, Options};
use streamflow_operator::leader;

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
    #[arg(long, env = "STREAMFLOW_OPERATOR_DEFAULT_IMAGE", default_value = streamflow_operator::api::pipelinerun::DEFAULT_IMAGE)]
    default_image: String,
    /// Elect a leader on a Lease: only the replica holding it runs the controllers. `false`
    /// only where exactly one operator process can run.
    #[arg(
        long,
        env = "STREAMFLOW_OPERATOR_LEADER_ELECT",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    leader_elect: bool,
    /// Namespace of the Lease (default: the operator's own, from its ServiceAccount, or the
    /// kubeconfig context's).
    #[arg(long, env = "STREAMFLOW_OPERATOR_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the Lease; operators sharing it elect one leader among them.
    #[arg(
        long,
        env = "STREAMFLOW_OPERATOR_LEADER_ELECTION_LEASE_NAME",
        default_value = "streamflow-operator"
    )]
    leader_election_lease_name: String,
    /// How long after its holder's last renewal another replica may take the Lease over
    /// (whole seconds).
    #[arg(long, env = "STREAMFLOW_OPERATOR_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    leader_election_lease_duration: Duration,
    /// The leader stops when it has not renewed the Lease for this long (less than the lease
    /// duration: the rest is the margin for clock skew between nodes).
    #[arg(long, env = "STREAMFLOW_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    leader_election_renew_deadline: Duration,
    /// How often the leader renews the Lease (whole seconds).
    #[arg(long, env = "STREAMFLOW_OPERATOR_LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    leader_election_retry_period: Duration,
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
    let leader_election = cli.leader_elect.then(|| leader::Config {
        namespace: cli
            .leader_election_namespace
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        lease_name: cli.leader_election_lease_name,
        // The pod's name in Kubernetes.
        identity: leader::identity(std::env::var("HOSTNAME").ok().as_deref()),
        lease_duration: cli.leader_election_lease_duration,
        renew_deadline: cli.leader_election_renew_deadline,
        retry_period: cli.leader_election_retry_period,
    });
    if let Some(Err(e)) = leader_election.as_ref().map(leader::Config::validate) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let opts = Options {
        namespace: cli.namespace,
        http_addr: cli.http_addr,
        concurrency: cli.concurrency,
        default_image: cli.default_image,
        leader_election,
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
