//! The proxy's Service and its optional PodDisruptionBudget.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{child_meta, child_name, selector_labels, Component};
use crate::ShotgunCache;

/// The Service `<cache>` in front of the proxy pods: clients point their API3 base URL at
/// `http://<cache>.<namespace>:<port>`.
pub fn service(cache: &ShotgunCache) -> Service {
    let port = i32::from(cache.spec.workers.proxy.port);
    Service {
        metadata: child_meta(cache, cache.name_any(), Some(Component::Proxy.name())),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(cache, Some(Component::Proxy.name()))),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A PodDisruptionBudget keeping all but one proxy pod up during node drains; only when the
/// proxy runs more than one replica (with one, it would block drains forever).
pub fn pod_disruption_budget(cache: &ShotgunCache) -> Option<PodDisruptionBudget> {
    if cache.spec.workers.proxy.replicas < 2 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: child_meta(
            cache,
            child_name(cache, "proxy"),
            Some(Component::Proxy.name()),
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cache, Some(Component::Proxy.name()))),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
