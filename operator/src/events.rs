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

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::ShotgunCache;

/// The Events' reporting controller.
pub const REPORTER: &str = "sgcache-operator";

/// The API server refuses an Event whose note is longer (bytes, `events.k8s.io/v1`).
pub const NOTE_LIMIT: usize = 1024;
const TRUNCATED: &str = " … (truncated; the full text is in the operator's log)";

/// `note` as the API server accepts it: cut at a character boundary to fit [`NOTE_LIMIT`]
/// with a pointer to the log, where the full text is written.
pub fn fit_note(note: &str) -> std::borrow::Cow<'_, str> {
    if note.len() <= NOTE_LIMIT {
        return note.into();
    }
    let mut end = NOTE_LIMIT - TRUNCATED.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", &note[..end]).into()
}

/// Which Event series a publication joins.
type SeriesKey = (String, String);

/// The controller's Event publisher, shared by every reconcile.
pub struct Events {
    client: Client,
    reporter: Reporter,
    /// Per (object uid, reason): the note of its current series and the Recorder holding it.
    series: Mutex<HashMap<SeriesKey, (String, Recorder)>>,
    /// The operator's own pod: where what cannot be said on a cache (its namespace is being
    /// deleted and refuses new Events) is said too.
    home: Option<ObjectReference>,
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
            home: None,
        }
    }

    /// Events about the operator itself go to this object (its pod).
    pub fn with_home(mut self, home: Option<ObjectReference>) -> Self {
        self.home = home;
        self
    }

    /// Publishes one Event about the operator's own pod (nothing when it runs out of cluster).
    pub async fn publish_home(&self, type_: EventType, reason: &str, note: &str) {
        let Some(home) = &self.home else { return };
        let uid = home
            .uid
            .clone()
            .or_else(|| home.name.clone())
            .unwrap_or_default();
        self.send(&uid, home.clone(), type_, reason, note).await;
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
        // Without the resourceVersion: every status write bumps it, and a reference that
        // changes with each write would never repeat, so nothing would aggregate.
        let mut reference = cache.object_ref(&());
        reference.resource_version = None;
        self.send(&uid, reference, type_, reason, note).await;
    }

    async fn send(
        &self,
        uid: &str,
        reference: ObjectReference,
        type_: EventType,
        reason: &str,
        note: &str,
    ) {
        let recorder = self.recorder(uid, reason, note);
        let fitted = fit_note(note);
        if fitted.len() < note.len() {
            info!(
                reason,
                object = reference.name.as_deref().unwrap_or_default(),
                note,
                "event note truncated; full text"
            );
        }
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(fitted.into_owned()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_to_the_api_server_limit_with_a_pointer_to_the_log() {
        assert_eq!(fit_note("short"), "short");
        let exact = "x".repeat(NOTE_LIMIT);
        assert_eq!(fit_note(&exact), exact);
        // Multi-byte characters across the cut: still valid UTF-8, still within the limit.
        let long = "é".repeat(2000);
        let fitted = fit_note(&long);
        assert!(fitted.len() <= NOTE_LIMIT, "{}", fitted.len());
        assert!(
            fitted.ends_with("full text is in the operator's log)"),
            "{fitted}"
        );
        assert!(fitted.starts_with("éé"));
    }
}
