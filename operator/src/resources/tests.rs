use k8s_openapi::api::core::v1::Container;
use kube::ResourceExt;
use sgcache::spec::{DeletionPolicy, SecretKeyRef, ValueSource};
use sgcache::ShotgunCacheSpec;

use super::*;
use crate::ShotgunCache;

fn settings() -> WorkerSettings {
    WorkerSettings {
        image: "sgcache-worker:test".into(),
        ..WorkerSettings::default()
    }
}

fn only_container(d: &k8s_openapi::api::apps::v1::Deployment) -> &Container {
    let pod = d.spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.containers.len(), 1);
    &pod.containers[0]
}

fn pod_hash(d: &k8s_openapi::api::apps::v1::Deployment) -> String {
    let meta = d.spec.template.metadata.as_ref().unwrap();
    meta.annotations.as_ref().unwrap()[CONFIG_HASH_ANNOTATION].clone()
}

#[test]
fn config_map_holds_the_spec_without_secrets() {
    let cache = ShotgunCache::test();
    let cm = config_map(&cache);
    assert_eq!(cm.name_any(), "cache-config");
    let yaml = &cm.data.as_ref().unwrap()[CONFIG_FILE];
    let parsed = ShotgunCacheSpec::from_yaml(yaml, "cm").expect("the worker can parse its config");
    assert_eq!(parsed.entities, cache.spec.entities);
    assert_eq!(
        parsed.site.url.as_deref(),
        Some("https://studio.example.com")
    );
    assert!(parsed.site.api_key.is_none() && parsed.site.script_name.is_none());
    assert!(parsed.database.url.is_none());
    // Pods are reached through their Service: the proxy listens on every interface there
    // (the worker's own default is 127.0.0.1).
    assert_eq!(
        parsed.workers.proxy.bind,
        Some(std::net::Ipv4Addr::UNSPECIFIED.into())
    );
    assert!(
        !yaml.contains("apiKey") && !yaml.contains("secretKeyRef"),
        "{yaml}"
    );
}

#[test]
fn children_are_owned_by_the_cache() {
    let cache = ShotgunCache::test();
    let s = settings();
    let metas = [
        config_map(&cache).metadata,
        deployment(&cache, Component::Proxy, &s).metadata,
        service(&cache).metadata,
        pod_disruption_budget(&cache).unwrap().metadata,
    ];
    for m in metas {
        let refs = m.owner_references.expect("owner reference");
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, "ShotgunCache");
        assert_eq!(refs[0].api_version, "sgcache.io/v1alpha1");
        assert_eq!(refs[0].uid, cache.metadata.uid.clone().unwrap());
        assert_eq!(refs[0].controller, Some(true));
        assert_eq!(m.namespace.as_deref(), Some("default"));
    }
}

#[test]
fn proxy_deployment_scales_probes_and_runs_locked_down() {
    let cache = ShotgunCache::test().with_spec(|s| s.workers.proxy.replicas = 3);
    let d = deployment(&cache, Component::Proxy, &settings());
    assert_eq!(d.name_any(), "cache-proxy");
    let spec = &d.spec;
    assert_eq!(spec.replicas, Some(3));
    assert!(
        spec.strategy.is_none(),
        "proxy rolls with the default RollingUpdate"
    );
    let c = only_container(&d);
    assert_eq!(c.image.as_deref(), Some("sgcache-worker:test"));
    assert_eq!(
        c.args.as_ref().unwrap(),
        &[
            "--config",
            "/etc/sgcache/sgcache.yaml",
            "--log-format",
            "json",
            "proxy"
        ]
    );
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8010);
    let ready = c
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(ready.path.as_deref(), Some("/readyz"));
    let live = c
        .liveness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(live.path.as_deref(), Some("/healthz"));
    // From the container's first second, a probe that waits for the listener (never a
    // failure on a healthy start), then readiness.
    let startup = c.startup_probe.as_ref().expect("a startup probe");
    let exec = startup.exec.as_ref().unwrap().command.clone().unwrap();
    assert_eq!(
        exec,
        [
            super::workloads::WORKER_BINARY,
            "probe",
            "--host",
            "127.0.0.1",
            "--port",
            "8010",
            "--wait-seconds",
            "3"
        ]
    );
    assert_eq!(startup.initial_delay_seconds, None);
    assert!(startup.timeout_seconds > Some(super::workloads::STARTUP_WAIT_SECONDS));
    assert!(startup.failure_threshold.unwrap() * startup.period_seconds.unwrap() >= 60);
    assert_eq!(c.readiness_probe.as_ref().unwrap().period_seconds, Some(1));
    // Serves on while its removal from the endpoints spreads, then gets SIGTERM.
    let drain = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
    assert_eq!(
        drain.sleep.as_ref().unwrap().seconds,
        super::workloads::PROXY_DRAIN_SECONDS
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );
    let selector = spec.selector.match_labels.as_ref().unwrap();
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
}

#[test]
fn events_and_scanner_run_one_replica_with_recreate() {
    let cache = ShotgunCache::test().with_spec(|s| s.workers.proxy.replicas = 5);
    for component in [Component::Events, Component::Scanner] {
        let d = deployment(&cache, component, &settings());
        assert_eq!(d.name_any(), format!("cache-{}", component.name()));
        let spec = &d.spec;
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(
            spec.strategy.as_ref().unwrap().type_.as_deref(),
            Some("Recreate")
        );
        let c = only_container(&d);
        assert_eq!(
            c.args.as_ref().unwrap().last().map(String::as_str),
            Some(component.name())
        );
        // The labels the chart's PodMonitor selects worker pods by (templates/monitoring.yaml).
        let pod_labels = d
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        for (k, v) in [
            ("app.kubernetes.io/name", "sgcache"),
            ("app.kubernetes.io/managed-by", "sgcache-operator"),
            ("app.kubernetes.io/component", component.name()),
        ] {
            assert_eq!(pod_labels.get(k).map(String::as_str), Some(v), "{k}");
        }
        // Their metrics port, named `metrics` (the PodMonitor's endpoint), carries the probes:
        // /healthz fails when the worker's loop stops making progress.
        let port = &c.ports.as_ref().expect("a metrics port")[0];
        assert_eq!(port.name.as_deref(), Some("metrics"));
        let expected = match component {
            Component::Events => 9101,
            _ => 9102,
        };
        assert_eq!(port.container_port, expected);
        let startup = c.startup_probe.as_ref().unwrap().exec.clone().unwrap();
        assert!(
            startup.command.unwrap().ends_with(&[
                "--port".into(),
                expected.to_string(),
                "--wait-seconds".into(),
                "3".into()
            ]),
            "the startup probe waits for the worker's own port"
        );
        for (probe, path) in [
            (&c.readiness_probe, "/readyz"),
            (&c.liveness_probe, "/healthz"),
        ] {
            let get = probe.as_ref().expect("a probe").http_get.clone().unwrap();
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(
                get.port,
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("metrics".into())
            );
        }
    }
}

#[test]
fn worker_metrics_ports_follow_the_spec_and_zero_turns_them_off() {
    let cache = ShotgunCache::test().with_spec(|s| {
        s.workers.events.metrics_port = 9300;
        s.workers.scanner.metrics_port = 0;
    });
    let events = deployment(&cache, Component::Events, &settings());
    let c = only_container(&events);
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 9300);
    let scanner = deployment(&cache, Component::Scanner, &settings());
    let c = only_container(&scanner);
    assert!(c.ports.is_none() && c.liveness_probe.is_none() && c.readiness_probe.is_none());
    assert!(c.startup_probe.is_none());
}

#[test]
fn secrets_reach_workers_as_secret_key_refs() {
    let cache = ShotgunCache::test();
    let d = deployment(&cache, Component::Events, &settings());
    let env = only_container(&d).env.clone().unwrap();
    let by_name = |n: &str| env.iter().find(|e| e.name == n).unwrap().clone();
    let key = by_name("SHOTGUN_API_KEY");
    assert!(key.value.is_none());
    let sel = key.value_from.unwrap().secret_key_ref.unwrap();
    assert_eq!((sel.name.as_str(), sel.key.as_str()), ("site", "apiKey"));
    let db = by_name("DATABASE_URL")
        .value_from
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!((db.name.as_str(), db.key.as_str()), ("db", "url"));
    assert_eq!(
        by_name("SHOTGUN_SCRIPT_NAME").value.as_deref(),
        Some("sgcache")
    );
}

#[test]
fn config_hash_follows_the_config_not_the_replica_count() {
    let s = settings();
    let base = ShotgunCache::test();
    let h0 = pod_hash(&deployment(&base, Component::Proxy, &s));
    let scaled = base.clone().with_spec(|sp| sp.workers.proxy.replicas = 7);
    assert_eq!(pod_hash(&deployment(&scaled, Component::Proxy, &s)), h0);
    // The documented way to drop a cache must not restart it first.
    for policy in [DeletionPolicy::Delete, DeletionPolicy::Retain] {
        let switched = base.clone().with_spec(|sp| sp.deletion_policy = policy);
        assert_eq!(pod_hash(&deployment(&switched, Component::Events, &s)), h0);
    }
    let more = base
        .clone()
        .with_spec(|sp| sp.entities[0].fields.push("description".into()));
    let h1 = pod_hash(&deployment(&more, Component::Proxy, &s));
    assert_ne!(h1, h0, "a new field rolls the pods");
    assert_eq!(pod_hash(&deployment(&more, Component::Scanner, &s)), h1);
    let new_image = WorkerSettings {
        image: "sgcache-worker:v2".into(),
        ..s.clone()
    };
    assert_ne!(
        pod_hash(&deployment(&base, Component::Proxy, &new_image)),
        h0
    );
    let rotated = base.with_spec(|sp| {
        sp.site.api_key = Some(ValueSource {
            secret_key_ref: Some(SecretKeyRef {
                name: "site2".into(),
                key: "apiKey".into(),
            }),
            ..ValueSource::default()
        })
    });
    assert_ne!(pod_hash(&deployment(&rotated, Component::Proxy, &s)), h0);
}

#[test]
fn service_targets_proxy_pods_and_pdb_needs_two_replicas() {
    let cache = ShotgunCache::test().with_spec(|s| s.workers.proxy.port = 9000);
    let svc = service(&cache);
    assert_eq!(svc.name_any(), "cache");
    let spec = svc.spec.unwrap();
    assert_eq!(spec.ports.as_ref().unwrap()[0].port, 9000);
    assert_eq!(
        spec.selector.unwrap()["app.kubernetes.io/component"],
        "proxy"
    );
    let pdb = pod_disruption_budget(&cache).expect("two replicas by default");
    assert_eq!(
        pdb.spec.unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let single = cache.with_spec(|s| s.workers.proxy.replicas = 1);
    assert!(pod_disruption_budget(&single).is_none());
}

#[test]
fn kubernetes_validation_accepts_the_sample_and_lists_each_problem() {
    let ok = ShotgunCache::test();
    assert_eq!(validate_for_kubernetes(&ok.spec), Vec::<String>::new());

    let bad = ShotgunCacheSpec::from_yaml(
        "site:\n  apiKey: {value: hunter2}\n  scriptName: {env: SCRIPT}\nentities: []\n",
        "t",
    )
    .unwrap();
    let problems = validate_for_kubernetes(&bad);
    let has = |s: &str| problems.iter().any(|p| p.contains(s));
    assert!(has("site.url is required"), "{problems:?}");
    assert!(
        has("site.apiKey must come from a secretKeyRef"),
        "{problems:?}"
    );
    assert!(has("site.scriptName.env is for local use"), "{problems:?}");
    assert!(has("database.url is required"), "{problems:?}");
    assert!(has("entities lists no entity type"), "{problems:?}");
    assert!(
        !problems.iter().any(|p| p.contains("hunter2")),
        "no secret in messages"
    );

    let dup = ok.with_spec(|s| {
        let first = s.entities[0].clone();
        s.entities.push(first)
    });
    let problems = validate_for_kubernetes(&dup.spec);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("Shot is declared twice")),
        "{problems:?}"
    );
}

/// The startup probe runs the worker binary where its image puts it: the entrypoint of
/// Dockerfile.worker's final stage (which scripts/images.sh builds from too).
#[test]
fn the_startup_probe_runs_the_images_entrypoint() {
    let dockerfile = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Dockerfile.worker"),
    )
    .unwrap();
    let entrypoint = format!("ENTRYPOINT [\"{}\"]", super::workloads::WORKER_BINARY);
    assert!(
        dockerfile.lines().any(|l| l.trim() == entrypoint),
        "Dockerfile.worker has no `{entrypoint}`"
    );
}
