//! `sgcache-operator`: reconciles ShotgunCache resources; serves `/metrics`, `/health`
//! (liveness) and `/readyz` (leader, standby, or a failing watch).

use std::sync::Arc;

use anyhow::Context as _;
use axum::{extract::State, routing::get, Router};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, ListParams};
use kube::runtime::controller;
use kube::runtime::{watcher, Controller};
use kube::Client;
use sgcache_operator::health::{Health, Role};
use sgcache_operator::lease::{self, LeaderElection};
use sgcache_operator::metrics::Metrics;
use sgcache_operator::reconcile::{error_policy, reconcile, Context};
use sgcache_operator::resources::WorkerSettings;
use sgcache_operator::secrets::caches_referencing;
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
    /// Namespace of the Lease (the operator's own). Default: the pod's namespace in a
    /// cluster, the kubeconfig context's namespace outside one (else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// This replica's identity in the Lease; default: the pod name (or host name) and a
    /// random suffix, unique per process.
    #[arg(long, env = "SGCACHE_OPERATOR_IDENTITY")]
    identity: Option<String>,
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube=warn,sqlx=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        // The workers' shape: the event's fields at the top level, the span its own key.
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

#[derive(Clone)]
struct Probes {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

async fn serve_metrics(State(p): State<Probes>) -> String {
    p.metrics.encode()
}

async fn serve_ready(State(p): State<Probes>) -> (axum::http::StatusCode, String) {
    p.health.readiness()
}

/// Serves `/metrics`, `/health` and `/readyz`.
async fn serve_probes(listen: &str, probes: Probes) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/health", get(|| async { "ok" }))
        .route("/readyz", get(serve_ready))
        .with_state(probes);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .context("cannot bind the metrics address")?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(())
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
    let health = Arc::new(Health::default());
    serve_probes(
        &cli.listen,
        Probes {
            metrics: metrics.clone(),
            health: health.clone(),
        },
    )
    .await?;

    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    tracing::info!(namespace = %namespace, "the leader Lease and the operator's own Events go to this namespace");
    let pod_name = std::env::var("POD_NAME").ok();
    let identity = cli
        .identity
        .unwrap_or_else(|| lease::default_identity(pod_name.as_deref()));
    let lease = LeaderElection::new(client.clone(), &namespace, "sgcache-operator", &identity)
        .with_health(health.clone());
    if cli.leader_election {
        health.set_role(Role::Standby);
        // A SIGTERM while standing by stops at once: there is nothing to hand over.
        tokio::select! {
            _ = lease.acquire() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = sigterm() => return Ok(()),
        }
    }
    health.set_role(Role::Leader);
    let mut ctx = Context::new(
        client.clone(),
        Arc::new(SqlCacheDatabase::default()),
        settings,
        metrics,
    );
    ctx.events = sgcache_operator::events::Events::new(client.clone(), Some(identity.clone()))
        .with_home(own_pod(pod_name.as_deref(), &namespace));
    let wakes = ctx
        .backfill_wakes
        .take_receiver()
        .expect("the backfill wakes are taken once");
    let ctx = Arc::new(ctx);
    let controller = Controller::new(caches, watcher::Config::default().any_semantic());
    let store = controller.store();
    let watch_health = health.clone();
    let controller = controller
        .owns(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default(),
        )
        .owns(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        // A created, changed or deleted Secret reconciles the caches that name it at once.
        .watches(
            Api::<Secret>::all(client),
            watcher::Config::default(),
            move |secret: Secret| {
                let ns = secret.metadata.namespace.unwrap_or_default();
                let name = secret.metadata.name.unwrap_or_default();
                caches_referencing(&store.state(), &ns, &name)
            },
        )
        // A backfill that progressed reconciles its cache at once (backfill_wake.rs).
        .reconcile_on(futures::stream::unfold(wakes, |mut rx| async move {
            rx.recv().await.map(|target| (target, rx))
        }))
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(move |result| {
            // A reconcile that worked says nothing of a failing watch of another kind: the
            // error holds /readyz at 503 until none came for a while (health.rs).
            if let Err(controller::Error::QueueError(e)) = result {
                tracing::warn!(error = %e, "watch failing");
                watch_health.set_watch_error(Some(e.to_string()));
            }
            futures::future::ready(())
        });
    if cli.leader_election {
        tokio::select! {
            _ = controller => {
                // Stopped by a signal: hand the Lease over now rather than at its expiry.
                match lease.release().await {
                    Ok(true) => tracing::info!("leader lease released"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot release the leader lease"),
                }
            }
            _ = lease.hold() => {
                // Another replica leads now: this one stops acting at once, and its restart
                // makes it a standby.
                tracing::error!("another replica took the leader lease; exiting to stand by");
                std::process::exit(1);
            }
        }
    } else {
        controller.await;
    }
    tracing::info!("operator stopped");
    Ok(())
}

/// Resolves on SIGTERM (what Kubernetes sends a pod it stops).
async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// The operator's own pod, when it runs in one (the chart sets POD_NAME).
fn own_pod(
    name: Option<&str>,
    namespace: &str,
) -> Option<k8s_openapi::api::core::v1::ObjectReference> {
    Some(k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name?.to_string()),
        namespace: Some(namespace.to_string()),
        ..Default::default()
    })
}
