//! `sgcache-operator`: reconciles ShotgunCache resources; serves `/metrics` and `/health`.

use std::sync::Arc;

use anyhow::Context as _;
use axum::{extract::State, routing::get, Router};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams};
use kube::runtime::{watcher, Controller};
use kube::Client;
use sgcache_operator::lease::LeaderElection;
use sgcache_operator::metrics::Metrics;
use sgcache_operator::reconcile::{error_policy, reconcile, Context};
use sgcache_operator::resources::WorkerSettings;
use sgcache_operator::sqldb::SqlCacheDatabase;
use sgcache_operator::ShotgunCache;

#[derive(Debug, Parser)]
#[command(
    name = "sgcache-operator",
    version,
    about = "Kubernetes operator for sgcache"
)]
struct Cli {
    /// The sgcache-worker image the worker Deployments run.
    #[arg(long, env = "SGCACHE_WORKER_IMAGE")]
    worker_image: String,
    #[arg(
        long,
        env = "SGCACHE_WORKER_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    worker_image_pull_policy: String,
    /// Worker container resources, as JSON (`{"requests":{"cpu":"100m"}}`).
    #[arg(long, env = "SGCACHE_WORKER_RESOURCES", default_value = "{}")]
    worker_resources: String,
    /// Address of the `/metrics` and `/health` server.
    #[arg(long, env = "SGCACHE_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: String,
    /// Log format: json or text.
    #[arg(long, env = "SGCACHE_LOG_FORMAT", default_value = "json")]
    log_format: String,
    /// Take a Lease before reconciling, so only one replica acts.
    #[arg(long, env = "SGCACHE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "sgcache-operator")]
    identity: String,
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn,sqlx=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve_metrics(State(m): State<Arc<Metrics>>) -> String {
    m.encode()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(&cli.log_format);
    let resources = serde_json::from_str(&cli.worker_resources)
        .context("--worker-resources is not valid JSON")?;
    let settings = WorkerSettings {
        image: cli.worker_image,
        image_pull_policy: cli.worker_image_pull_policy,
        resources,
    };
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration")?;
    let caches: Api<ShotgunCache> = Api::all(client.clone());
    if let Err(e) = caches.list(&ListParams::default().limit(1)).await {
        tracing::error!(error = %e, "cannot list ShotgunCaches; is the CRD installed? (kubectl apply -f crds/)");
        std::process::exit(1);
    }
    let metrics = Arc::new(Metrics::default());
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/health", get(|| async { "ok" }))
        .with_state(metrics.clone());
    let listener = tokio::net::TcpListener::bind(&cli.listen)
        .await
        .context("cannot bind the metrics address")?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let lease = LeaderElection::new(
        client.clone(),
        &cli.namespace,
        "sgcache-operator",
        &cli.identity,
    );
    if cli.leader_election {
        lease.acquire().await;
    }
    let ctx = Arc::new(Context::new(
        client.clone(),
        Arc::new(SqlCacheDatabase),
        settings,
        metrics,
    ));
    let controller = Controller::new(caches, watcher::Config::default().any_semantic())
        .owns(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(Api::<Service>::all(client), watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()));
    if cli.leader_election {
        tokio::select! {
            _ = controller => {}
            _ = lease.hold() => anyhow::bail!("lost the leader lease; restarting to campaign again"),
        }
    } else {
        controller.await;
    }
    tracing::info!("operator stopped");
    Ok(())
}
