//! The Client ID ledger under attack, with the admission policies installed:
//! the scenarios of `support::ledger_attacks` (the bare binary runs them
//! without the policies), and the policy's own wall in front of the ledger.

use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::{Api, api::PostParams};
use registrar::api::{ClientIdEntry, Holder};
use serde_json::json;

use crate::support::{
    TestNamespace, allowed, control_plane, eventually, install_registrar,
    ledger_attacks::{self},
};

#[tokio::test]
async fn two_instances_split_by_selector_on_one_hydra() {
    install_registrar(&control_plane().client().await).await;
    ledger_attacks::two_instances_split_by_selector_on_one_hydra().await;
}

#[tokio::test]
async fn a_revoked_client_id_stays_revoked_across_restarts_and_leader_changes() {
    install_registrar(&control_plane().client().await).await;
    ledger_attacks::a_revoked_client_id_stays_revoked_across_restarts_and_leader_changes().await;
}

#[tokio::test]
async fn an_imported_foreign_hydra_client_is_never_vouched_for() {
    install_registrar(&control_plane().client().await).await;
    ledger_attacks::an_imported_foreign_hydra_client_is_never_vouched_for().await;
}

#[tokio::test]
async fn a_replaced_seal_key_costs_no_retained_client_id() {
    install_registrar(&control_plane().client().await).await;
    ledger_attacks::a_replaced_seal_key_costs_no_retained_client_id().await;
}

#[tokio::test]
async fn two_clusters_on_one_hydra_never_touch_each_others_clients() {
    install_registrar(&control_plane().client().await).await;
    ledger_attacks::two_clusters_on_one_hydra_never_touch_each_others_clients().await;
}

#[tokio::test]
async fn a_tenant_can_neither_read_nor_write_the_ledger() {
    install_registrar(&control_plane().client().await).await;
    ledger_attacks::a_tenant_can_neither_read_nor_write_the_ledger().await;
}

/// The second wall: a user whose role grants too much (every verb on the
/// ledger, but not AppRegistration status) is refused by
/// `deploy/client-id-ledger-policy.yaml`, with a message saying why.
#[tokio::test]
async fn the_policy_refuses_a_ledger_write_by_anyone_but_registrar() {
    let ns = TestNamespace::new("ledger-policy").await;
    install_registrar(&ns.client).await;
    let user = format!("overbroad-{}", ns.name);
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": user },
        "rules": [{ "apiGroups": ["registrar.dev"], "resources": ["clientidentries"], "verbs": ["*"] }]
    }))
    .expect("role");
    Api::<ClusterRole>::all(ns.client.clone()).create(&PostParams::default(), &role).await.expect("role");
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": user },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user }]
    }))
    .expect("binding");
    Api::<ClusterRoleBinding>::all(ns.client.clone()).create(&PostParams::default(), &binding).await.expect("binding");
    eventually("the over-broad role to take effect", Duration::from_secs(60), || async {
        allowed(&ns.client, &user, "registrar.dev", "clientidentries", "create").await.then_some(())
    })
    .await;
    let as_user = control_plane().client_as(&user).await;
    let entry = ClientIdEntry::active(
        &format!("forged-{:08x}", rand::random::<u32>()),
        Holder { namespace: ns.name.clone(), name: "evil".into(), uid: "00000000-0000-0000-0000-000000000000".into() },
    );
    let refused = Api::<ClientIdEntry>::all(as_user).create(&PostParams::default(), &entry).await;
    let Err(kube::Error::Api(status)) = refused else { panic!("the policy let it through: {refused:?}") };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(status.message.contains("only registrar writes"), "{}", status.message);
    let _ = Api::<ClusterRoleBinding>::all(ns.client.clone()).delete(&user, &Default::default()).await;
    let _ = Api::<ClusterRole>::all(ns.client.clone()).delete(&user, &Default::default()).await;
    ns.delete().await;
}
