//! Leader election: of several replicas, the one holding a `coordination.k8s.io` Lease runs
//! the controllers; the others stand by until it is free.
//!
//! The Lease is taken and renewed by [`kube_lease_manager`] (server-side apply, so two
//! replicas cannot both take a free Lease). Its holder renews every `retry_period`; a replica
//! takes the Lease over once `lease_duration` has passed since the last renewal (by the
//! `renewTime` the holder wrote).
//!
//! The lease manager keeps calling itself the holder while it cannot reach the API server: it
//! learns of a takeover only from the next Lease it reads. So the leader also checks its own
//! renewals (the [`Leader::lost`] guard, client-go's `renewDeadline`): when it has not seen a
//! renewal of its own within `renew_deadline`, it steps down, by its own clock, before any
//! other replica may take over (`lease_duration - renew_deadline` later, the margin for clock
//! skew between nodes).

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How this replica takes part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The Lease's namespace and name.
    pub namespace: String,
    pub lease_name: String,
    /// This replica's name in the Lease's `holderIdentity`: unique per process.
    pub identity: String,
    /// How long after its last renewal a Lease may be taken over (whole seconds: the Lease
    /// stores `leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// The leader steps down when it has seen no renewal of its own for this long.
    pub renew_deadline: Duration,
    /// How often the leader renews (whole seconds, as the lease manager counts).
    pub retry_period: Duration,
}

impl Default for Config {
    /// client-go's defaults (15 s, 10 s, 2 s) on the Lease `streamflow-operator` in `default`.
    fn default() -> Self {
        Self {
            namespace: "default".to_owned(),
            lease_name: "streamflow-operator".to_owned(),
            identity: identity(None),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "leader election: need retry period < renew deadline < lease duration, lease duration and retry period in whole seconds (got {lease_duration:?}, {renew_deadline:?}, {retry_period:?})"
    )]
    Timing {
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    },
    #[error("leader election: Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error("lost the leadership (Lease {namespace}/{name}): {reason}")]
    Lost {
        namespace: String,
        name: String,
        reason: String,
    },
}

impl Config {
    /// Refuses timings the election cannot keep (and the lease manager would panic on).
    pub fn validate(&self) -> Result<(), Error> {
        let whole = |d: Duration| d.subsec_nanos() == 0 && d.as_secs() > 0;
        let ok = whole(self.lease_duration)
            && whole(self.retry_period)
            && self.retry_period < self.renew_deadline
            && self.renew_deadline < self.lease_duration;
        if ok {
            Ok(())
        } else {
            Err(Error::Timing {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            })
        }
    }

    /// The lease manager's grace: it renews `grace` before the Lease would expire, so
    /// `lease_duration - grace` = `retry_period` after the last renewal.
    fn grace_seconds(&self) -> u64 {
        self.lease_duration.as_secs() - self.retry_period.as_secs()
    }

    fn lost(&self, reason: impl Into<String>) -> Error {
        Error::Lost {
            namespace: self.namespace.clone(),
            name: self.lease_name.clone(),
            reason: reason.into(),
        }
    }
}

/// A process-unique identity: `<pod name>_<random>` (the pod name is the hostname in
/// Kubernetes), so a restarted container never mistakes its predecessor's Lease for its own.
pub fn identity(hostname: Option<&str>) -> String {
    let host = hostname
        .filter(|h| !h.is_empty())
        .unwrap_or("streamflow-operator");
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}_{}", &random[..8])
}

/// A replica standing by for the Lease (the lease manager working in the background).
pub struct Candidate {
    config: Config,
    api: Api<Lease>,
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// The replica holding the Lease.
pub struct Leader(Candidate);

impl Candidate {
    /// Joins the election (creating the Lease if there is none); does not wait to lead.
    pub async fn join(client: Client, config: Config) -> Result<Candidate, Error> {
        config.validate()?;
        let manager = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(config.lease_duration.as_secs())
            .with_grace(config.grace_seconds())
            .build()
            .await
            .map_err(|source| Error::Lease {
                namespace: config.namespace.clone(),
                name: config.lease_name.clone(),
                source,
            })?;
        let (state, task) = manager.watch().await;
        info!(
            lease = %format!("{}/{}", config.namespace, config.lease_name),
            identity = %config.identity,
            "standing by for the leader Lease"
        );
        Ok(Candidate {
            api: Api::namespaced(client, &config.namespace),
            config,
            state,
            task,
        })
    }

    /// Waits until this replica holds the Lease.
    pub async fn lead(mut self) -> Result<Leader, Error> {
        loop {
            if *self.state.borrow_and_update() {
                info!(identity = %self.config.identity, "acquired the leader Lease");
                return Ok(Leader(self));
            }
            if self.state.changed().await.is_err() {
                return Err(self.stopped().await);
            }
        }
    }

    /// Why the lease manager's task ended (it ends only on an error it cannot retry).
    async fn stopped(&mut self) -> Error {
        let reason = match (&mut self.task).await {
            Ok(Ok(_)) => "the lease manager stopped".to_owned(),
            Ok(Err(e)) => format!("the lease manager stopped: {e}"),
            Err(e) => format!("the lease manager task failed: {e}"),
        };
        self.config.lost(reason)
    }
}

impl Leader {
    /// Resolves when this replica no longer leads: the lease manager read another holder, or
    /// no renewal of its own was seen for `renew_deadline` (the API server unreachable, say).
    /// Never resolves while the leadership holds.
    pub async fn lost(&mut self) -> Error {
        let Candidate {
            config,
            api,
            state,
            task: _,
        } = &mut self.0;
        let mut last_renewal = SystemTime::now();
        let mut check = tokio::time::interval(config.retry_period);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let until_deadline = (last_renewal + config.renew_deadline)
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            if until_deadline.is_zero() {
                return config.lost(format!(
                    "no renewal seen for {:?} (renew deadline)",
                    config.renew_deadline
                ));
            }
            tokio::select! {
                changed = state.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if !*state.borrow_and_update() {
                        return config.lost("another replica holds the Lease");
                    }
                }
                // A read that hangs (a partition that drops packets) must not hold the
                // deadline up: it is given until the deadline at most.
                _ = check.tick() => match tokio::time::timeout(until_deadline, own_renewal(api, config)).await {
                    Ok(Ok(Some(renewed))) => last_renewal = last_renewal.max(renewed),
                    Ok(Ok(None)) => return config.lost("the Lease names another holder, or none"),
                    Ok(Err(e)) => warn!("cannot read the leader Lease: {e}"),
                    Err(_) => {}
                },
                // The deadline is checked at the top of the loop.
                () = tokio::time::sleep(until_deadline) => {}
            }
        }
        self.0.stopped().await
    }

    /// Gives the Lease up (after the controllers stopped), so another replica takes over at
    /// once rather than after `lease_duration`.
    pub async fn release(self) {
        let Candidate {
            config,
            state,
            task,
            ..
        } = self.0;
        // Closing the channel makes the lease manager release the Lease and return.
        drop(state);
        match task.await {
            Ok(Ok(_)) => info!(identity = %config.identity, "released the leader Lease"),
            Ok(Err(e)) => warn!("cannot release the leader Lease: {e}"),
            Err(e) => warn!("the lease manager task failed: {e}"),
        }
    }
}

/// The `renewTime` of the Lease if this replica holds it; `None` if it names another holder
/// or none. `renewTime` is written by this process, so it reads in this process's clock.
async fn own_renewal(api: &Api<Lease>, config: &Config) -> Result<Option<SystemTime>, kube::Error> {
    let lease = api.get_opt(&config.lease_name).await?;
    let spec = lease.and_then(|l| l.spec).unwrap_or_default();
    if spec.holder_identity.as_deref() != Some(config.identity.as_str()) {
        return Ok(None);
    }
    // Held but never renewed: nothing to extend the deadline with.
    Ok(spec.renew_time.map(|t| SystemTime::from(t.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(lease: u64, renew_ms: u64, retry: u64) -> Config {
        Config {
            lease_duration: Duration::from_secs(lease),
            renew_deadline: Duration::from_millis(renew_ms),
            retry_period: Duration::from_secs(retry),
            ..Config::default()
        }
    }

    #[test]
    fn client_go_defaults_are_valid() {
        assert!(Config::default().validate().is_ok());
        assert_eq!(Config::default().grace_seconds(), 13);
    }

    #[test]
    fn timings_must_be_ordered_and_whole() {
        assert!(timing(4, 3000, 1).validate().is_ok());
        // renew deadline not below the lease duration: two leaders while clocks agree
        assert!(timing(15, 15_000, 2).validate().is_err());
        // retry period not below the renew deadline: one late renewal loses the lease
        assert!(timing(15, 2000, 2).validate().is_err());
        assert!(timing(15, 10_000, 0).validate().is_err());
        let fractional = Config {
            lease_duration: Duration::from_millis(15_500),
            ..Config::default()
        };
        assert!(fractional.validate().is_err());
    }

    #[test]
    fn identities_differ_per_process_and_name_the_pod() {
        let a = identity(Some("streamflow-operator-6d9f-x2"));
        let b = identity(Some("streamflow-operator-6d9f-x2"));
        assert_ne!(a, b);
        assert!(a.starts_with("streamflow-operator-6d9f-x2_"));
        assert!(identity(None).starts_with("streamflow-operator_"));
        assert!(identity(Some("")).starts_with("streamflow-operator_"));
    }
}
