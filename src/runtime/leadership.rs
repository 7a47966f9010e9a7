//! Leader election on a Lease, with kube-lease-manager: of several replicas,
//! only the leader reconciles. Standbys keep their caches warm, so a new leader
//! acts at once; a replica that loses the lease stops reconciling and exits, to
//! rejoin as a standby after its restart.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

/// Where and how long the lease is held.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// This replica's identity in the lease (the pod name in a cluster).
    pub identity: String,
    /// How long a lease lasts without renewal: the longest a failover takes.
    pub duration_secs: u64,
}

/// Held leadership.
pub struct Leadership {
    state: watch::Receiver<bool>,
    task: JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>,
}

/// Waits until this replica holds the lease. `None` when `stopped` resolves first.
pub async fn acquire(
    client: Client,
    settings: &LeaseSettings,
    stopped: impl Future<Output = ()>,
) -> Result<Option<Leadership>, LeaseManagerError> {
    let grace = (settings.duration_secs / 3).max(1);
    let manager = LeaseManagerBuilder::new(client, &settings.name)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(settings.duration_secs)
        .with_grace(grace)
        .build()
        .await?;
    let (mut state, task) = manager.watch().await;
    info!(
        lease = settings.name,
        namespace = settings.namespace,
        identity = settings.identity,
        "waiting for leadership"
    );
    let mut stopped = std::pin::pin!(stopped);
    loop {
        if *state.borrow_and_update() {
            info!(identity = settings.identity, "acquired leadership");
            return Ok(Some(Leadership { state, task }));
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() {
                // The lease task ended; its error tells why.
                return match task.await {
                    Ok(Err(e)) => Err(e),
                    _ => Ok(None),
                };
            },
            () = &mut stopped => {
                drop(state);
                let _ = task.await;
                return Ok(None);
            }
        }
    }
}

impl Leadership {
    /// Resolves when the lease is lost.
    pub async fn lost(&mut self) {
        let _ = self.state.wait_for(|leader| !*leader).await;
        warn!("lost leadership");
    }

    /// Gives the lease up, so a standby takes over at once.
    pub async fn release(self) {
        drop(self.state);
        let _ = self.task.await;
    }
}
