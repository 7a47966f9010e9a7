//! The Client ID ledger under attack without any admission policy: the
//! scenarios of `support::ledger_attacks` hold through the ledger and RBAC
//! alone.

use crate::support::{control_plane, install_crds, ledger_attacks};

#[tokio::test]
async fn two_instances_split_by_selector_on_one_hydra() {
    install_crds(&control_plane().client().await).await;
    ledger_attacks::two_instances_split_by_selector_on_one_hydra().await;
}

#[tokio::test]
async fn a_revoked_client_id_stays_revoked_across_restarts_and_leader_changes() {
    install_crds(&control_plane().client().await).await;
    ledger_attacks::a_revoked_client_id_stays_revoked_across_restarts_and_leader_changes().await;
}

#[tokio::test]
async fn an_imported_foreign_hydra_client_is_never_vouched_for() {
    install_crds(&control_plane().client().await).await;
    ledger_attacks::an_imported_foreign_hydra_client_is_never_vouched_for().await;
}

#[tokio::test]
async fn a_replaced_seal_key_costs_no_retained_client_id() {
    install_crds(&control_plane().client().await).await;
    ledger_attacks::a_replaced_seal_key_costs_no_retained_client_id().await;
}

#[tokio::test]
async fn two_clusters_on_one_hydra_never_touch_each_others_clients() {
    install_crds(&control_plane().client().await).await;
    ledger_attacks::two_clusters_on_one_hydra_never_touch_each_others_clients().await;
}

#[tokio::test]
async fn a_tenant_can_neither_read_nor_write_the_ledger() {
    install_crds(&control_plane().client().await).await;
    ledger_attacks::a_tenant_can_neither_read_nor_write_the_ledger().await;
}
