//! The three worker Deployments: `proxy` (scaled by the spec), `events` and `scanner` (one
//! replica each, replaced with `Recreate` so two never run at once).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecurityContext, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    child_meta, child_name, config_hash, labels, selector_labels, worker_env, WorkerSettings,
    CONFIG_FILE, CONFIG_HASH_ANNOTATION,
};
use crate::ShotgunCache;

/// A worker process, run by one Deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Proxy,
    Events,
    Scanner,
}

impl Component {
    /// In the order they are rolled out: writers first, then the proxy.
    pub const ALL: [Component; 3] = [Component::Events, Component::Scanner, Component::Proxy];

    /// The worker subcommand and the name suffix.
    pub fn name(self) -> &'static str {
        match self {
            Component::Proxy => "proxy",
            Component::Events => "events",
            Component::Scanner => "scanner",
        }
    }
}

const CONFIG_DIR: &str = "/etc/sgcache";
/// How long a stopping proxy pod keeps serving before it is sent SIGTERM: the time for its
/// removal from the Service's endpoints to reach every node, so no client is refused a
/// connection during a rollout or a scale-down.
pub const PROXY_DRAIN_SECONDS: i64 = 3;
/// The non-root user the worker image runs as.
const RUN_AS_USER: i64 = 65532;

/// The Deployment with the hash of the Secret values its pods get in their template: the pods
/// read them at start, so a changed value must roll them.
pub fn with_secrets_hash(mut d: Deployment, hash: &str) -> Deployment {
    let meta = d
        .spec
        .template
        .metadata
        .get_or_insert_with(ObjectMeta::default);
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(super::SECRETS_HASH_ANNOTATION.into(), hash.into());
    d
}

/// The Deployment `<cache>-<component>`.
pub fn deployment(
    cache: &ShotgunCache,
    component: Component,
    settings: &WorkerSettings,
) -> Deployment {
    let proxy = component == Component::Proxy;
    let replicas = if proxy {
        cache.spec.workers.proxy.replicas as i32
    } else {
        1
    };
    let strategy = (!proxy).then(|| DeploymentStrategy {
        type_: Some("Recreate".into()),
        ..DeploymentStrategy::default()
    });
    let annotations = BTreeMap::from([(
        CONFIG_HASH_ANNOTATION.to_string(),
        config_hash(cache, settings),
    )]);
    Deployment {
        metadata: child_meta(
            cache,
            child_name(cache, component.name()),
            Some(component.name()),
        ),
        spec: DeploymentSpec {
            replicas: Some(replicas),
            strategy,
            selector: LabelSelector {
                match_labels: Some(selector_labels(cache, Some(component.name()))),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(cache, Some(component.name()))),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(cache, component, settings)),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

fn pod_spec(cache: &ShotgunCache, component: Component, settings: &WorkerSettings) -> PodSpec {
    PodSpec {
        containers: vec![container(cache, component, settings)],
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        volumes: Some(vec![
            Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: child_name(cache, "config"),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "tmp".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    }
}

/// The container port serving `/metrics`, `/healthz` and `/readyz`, and its name: the API
/// port (`http`) for the proxy, `metrics` for the follower and the scanner (None when the spec
/// turns their port off with 0).
pub fn probe_port(cache: &ShotgunCache, component: Component) -> Option<(&'static str, i32)> {
    let workers = &cache.spec.workers;
    let (name, port) = match component {
        Component::Proxy => ("http", workers.proxy.port),
        Component::Events => ("metrics", workers.events.metrics_port),
        Component::Scanner => ("metrics", workers.scanner.metrics_port),
    };
    (port != 0).then_some((name, i32::from(port)))
}

fn container(cache: &ShotgunCache, component: Component, settings: &WorkerSettings) -> Container {
    let probe_port = probe_port(cache, component);
    Container {
        name: component.name().into(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        args: Some(vec![
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
            "--log-format".into(),
            "json".into(),
            component.name().into(),
        ]),
        env: Some(worker_env(&cache.spec)),
        ports: probe_port.map(|(name, port)| {
            vec![ContainerPort {
                name: Some(name.into()),
                container_port: port,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            }]
        }),
        // The follower's and the scanner's `/readyz` answer 200 on standby too (it is where a
        // second instance should be); their `/healthz` fails when their loop stops making
        // progress for longer than its allowance (docs: "Metrics and probes"). The startup
        // probe runs in the container from its first second and waits for the process to
        // listen (an HTTP probe sent before would fail, with a Warning Event, on every healthy
        // start; one held back by a fixed delay makes every pod that much later); the kubelet
        // then runs readiness at once.
        startup_probe: probe_port.map(|(_, port)| startup_probe(port, probe_host(cache))),
        readiness_probe: probe_port.map(|(name, _)| http_probe(name, "/readyz", 1)),
        liveness_probe: probe_port.map(|(name, _)| http_probe(name, "/healthz", 15)),
        lifecycle: (component == Component::Proxy).then(|| Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PROXY_DRAIN_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(settings.resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    }
}

/// Where the worker binary is in its image (Dockerfile.worker; scripts/images.sh reads the same
/// final stage): the startup probe runs it.
pub const WORKER_BINARY: &str = "/usr/local/bin/sgcache-worker";

/// How long one startup probe waits for the worker to listen; the kubelet gives it a second
/// more before it counts as a failure.
pub const STARTUP_WAIT_SECONDS: i32 = 3;

/// `sgcache-worker probe`: waits for the port, then asks `/healthz` (see its module). Up to
/// 120 attempts a second apart, as long as a start may take.
fn startup_probe(port: i32, host: String) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                WORKER_BINARY.into(),
                "probe".into(),
                "--host".into(),
                host,
                "--port".into(),
                port.to_string(),
                "--wait-seconds".into(),
                STARTUP_WAIT_SECONDS.to_string(),
            ]),
        }),
        period_seconds: Some(1),
        timeout_seconds: Some(STARTUP_WAIT_SECONDS + 1),
        failure_threshold: Some(120),
        ..Probe::default()
    }
}

/// The address the startup probe connects to inside the pod: the one the worker binds, or
/// loopback when it binds every address (the default in pods).
fn probe_host(cache: &ShotgunCache) -> String {
    match cache.spec.workers.proxy.bind {
        Some(ip) if !ip.is_unspecified() => ip.to_string(),
        _ => "127.0.0.1".into(),
    }
}

fn http_probe(port: &str, path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(port.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}
