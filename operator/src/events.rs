//! Publishing Kubernetes Events (`events.k8s.io/v1`) about ShotgunCaches, so that repeats
//! aggregate into one Event's series instead of piling up.
//!
//! kube's [`Recorder`] folds a repeat of (object, type, action, reason) into a series of the
//! *first* Event, keeping that Event's note. That is what we want for a failure repeated on
//! every retry, but not for a note that says something new (a second `SchemaChanged` naming
//! other fields would otherwise be shown with the first one's text). So one Recorder serves
//! each (object, reason) while its note stays the same; a new note starts a new Event.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

use crate::ShotgunCache;

/// The Events' reporting controller.
pub const REPORTER: &str = "sgcache-operator";

/// Which Event series a publication joins.
type SeriesKey = (String, String);

/// The controller's Event publisher, shared by every reconcile.
pub struct Events {
    client: Client,
    reporter: Reporter,
    /// Per (object uid, reason): the note of its current series and the Recorder holding it.
    series: Mutex<HashMap<SeriesKey, (String, Recorder)>>,
}

impl Events {
    /// `instance` is this replica's identity (the Lease holder identity).
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Events {
            client,
            reporter: Reporter {
                controller: REPORTER.into(),
                instance,
            },
            series: Mutex::default(),
        }
    }

    /// The Recorder of this (object, reason, note)'s series; a new one when the note changed.
    fn recorder(&self, uid: &str, reason: &str, note: &str) -> Recorder {
        let mut series = self.series.lock().expect("events lock");
        let key = (uid.to_string(), reason.to_string());
        match series.get(&key) {
            Some((last, recorder)) if last == note => recorder.clone(),
            _ => {
                let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
                series.insert(key, (note.to_string(), recorder.clone()));
                recorder
            }
        }
    }

    /// Publishes one Event about `cache`. Failing to publish is logged, never fatal: the status
    /// carries the same information.
    pub async fn publish(&self, cache: &ShotgunCache, type_: EventType, reason: &str, note: &str) {
        let uid = cache.uid().unwrap_or_default();
        let recorder = self.recorder(&uid, reason, note);
        // Without the resourceVersion: every status write bumps it, and a reference that
        // changes with each write would never repeat, so nothing would aggregate.
        let mut reference = cache.object_ref(&());
        reference.resource_version = None;
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &reference).await {
            warn!(error = %e, reason, "cannot publish event");
        }
    }

    /// Forgets an object's series once it is gone.
    pub fn forget(&self, cache: &ShotgunCache) {
        let uid = cache.uid().unwrap_or_default();
        let mut series = self.series.lock().expect("events lock");
        series.retain(|(u, _), _| *u != uid);
    }
}
