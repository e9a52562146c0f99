//! What the three controllers do the same way, written once: their shared [`Context`]
//! (client, metrics, who publishes Events), Event publishing, status writes, the finalizer,
//! and retrying a failed reconcile; and [`kstatus`], the conditions GitOps tools read.

pub mod kstatus;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::{debug, warn};

use crate::api::labels::MANAGER;
use crate::metrics::Metrics;
use crate::{Error, Result};

/// An object waiting on nothing is looked at again after this long anyway.
pub const RESYNC: Duration = Duration::from_secs(300);
/// After a status write refused as stale ([`Error::Stale`]): the watch event of the newer
/// object normally comes first.
const STALE_RETRY: Duration = Duration::from_secs(2);
/// The longest Event note: the API server refuses longer ones, and a whole failure message
/// belongs in the status, not in every Event.
const MAX_NOTE: usize = 1000;

/// What every controller's reconcile has: the client, the metrics, who publishes its Events,
/// and how many times in a row each object's reconcile failed.
pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    reporter: Reporter,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics) -> Self {
        Self {
            client,
            metrics,
            reporter: Reporter::from(MANAGER),
            failures: Mutex::default(),
        }
    }

    /// Publishes `event` about `obj`; a failure to publish is logged, not returned (the
    /// status already says what the Event tells).
    pub async fn publish<K>(&self, obj: &K, event: &Event)
    where
        K: Resource<DynamicType = ()>,
    {
        // A Recorder for this Event alone: kube's Recorder keeps every Event it published for
        // 6 minutes to count repeats as a series, and one for every object held the last 6
        // minutes' Events of all of them (~10,000 at the ~28 a second of a large Backfill, most
        // of the operator's heap: docs/benchmarks.md). A transition is published once (the
        // status recording it is written conditionally first): there is no repeat to count.
        let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
        if let Err(e) = recorder.publish(event, &obj.object_ref(&())).await {
            warn!(object = %key(obj), reason = event.reason, "cannot publish event: {e}");
        }
    }

    /// Writes `obj`'s status with server-side apply, as this operator's field manager: the one
    /// way every controller here writes status. The write is conditional on the object's
    /// `resourceVersion` as read: a status decided from a stale copy is refused
    /// ([`Error::Stale`]) instead of overwriting a newer one, so the side effects of a
    /// transition (Events, metrics), which follow the write, happen once.
    pub async fn apply_status<K, S>(&self, obj: &K, status: &S) -> Result<()>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Debug,
        S: Serialize,
    {
        let ns = namespace_of(obj)?;
        let name = obj.name_any();
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": {"resourceVersion": obj.resource_version()},
            "status": status,
        });
        match api
            .patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Stale {
                object: format!("{}/{ns}/{name}", K::kind(&())),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Counts a failed reconcile and says when to try again: 5 s, doubling per failure in a
    /// row of the same object, at most [`RESYNC`].
    pub fn retry_after<K: ResourceExt>(&self, obj: &K, error: &Error) -> Action {
        let kind = error.metric_label();
        self.metrics.errors.with_label_values(&[kind]).inc();
        let n = match self.failures.lock() {
            Ok(mut failures) => {
                let n = failures.entry(key(obj)).or_insert(0);
                *n += 1;
                *n
            }
            Err(_) => 1,
        };
        let wait = Duration::from_secs(5 * 2u64.saturating_pow(n.min(6) - 1)).min(RESYNC);
        warn!(object = %key(obj), kind, "reconcile failed, retrying in {wait:?}: {error}");
        Action::requeue(wait)
    }

    /// Forgets `obj`'s failures in a row once a reconcile of it succeeds.
    pub fn succeeded<K: ResourceExt>(&self, obj: &K) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&key(obj));
        }
    }
}

/// An Event of this operator's (truncated to what the API server takes).
pub fn event(reason: &str, message: &str, warning: bool) -> Event {
    let mut note = message.to_owned();
    if note.len() > MAX_NOTE {
        let mut cut = MAX_NOTE;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    }
}

/// Runs `reconcile` under the finalizer `name` (kube's helper adds it first and removes it once
/// the cleanup succeeded), unwrapping what the helper wraps: the object being gone by the time
/// its finalizer is removed is the deletion finishing, not an error, and a status decided on a
/// stale copy is looked at again shortly.
pub async fn with_finalizer<K, F, Fut>(
    api: &Api<K>,
    name: &str,
    obj: Arc<K>,
    reconcile: F,
) -> Result<Action>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    <K as Resource>::DynamicType: Default,
    F: FnOnce(finalizer::Event<K>) -> Fut,
    Fut: Future<Output = Result<Action>>,
{
    use finalizer::Error as F;
    match finalizer(api, name, obj, reconcile).await {
        Ok(a) => Ok(a),
        Err(F::RemoveFinalizer(kube::Error::Api(s))) if s.code == 404 => Ok(Action::await_change()),
        // Decided on a stale copy: the watch brings the newer one at once; this is a fallback.
        Err(F::ApplyFailed(Error::Stale { object })) => {
            debug!(%object, "stale copy: nothing written, reconciling the newer one");
            Ok(Action::requeue(STALE_RETRY))
        }
        Err(F::ApplyFailed(inner) | F::CleanupFailed(inner)) => Err(inner),
        Err(other) => Err(Error::Finalizer(Box::new(other))),
    }
}

/// The object's namespace; every resource here is namespaced.
pub fn namespace_of<K: ResourceExt>(obj: &K) -> Result<String> {
    obj.namespace().ok_or(Error::MissingField {
        object: obj.name_any(),
        field: "metadata.namespace",
    })
}

/// `namespace/name`, for logs and per-object bookkeeping.
pub fn key<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}
