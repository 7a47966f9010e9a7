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

/// An upgrade from a registrar without the ledger: every issued app enters it
/// on the first start — a Ready app and one whose spec turned invalid alike
/// (it is still served its accepted spec, so it keeps its Client ID) — as
/// does a retention sealed on its Secret, one create each; the retained
/// Client ID authenticates; a restart afterwards writes nothing.
#[tokio::test]
async fn apps_and_retentions_from_before_the_ledger_enter_it_once() {
    use k8s_openapi::{ByteString, api::core::v1::Secret};
    use kube::api::{DeleteParams, ObjectMeta};
    use registrar::{
        api::{LedgerState, entry_name},
        credentials::{ClientSecret, retention::Retention, seal::SealKey},
    };

    use crate::support::{
        OPERATOR_NAMESPACE,
        apps::{apply, confidential, ready_reason, status, wait_app, wait_issued},
        registry::{Caller, registry_operator},
    };

    let ns = TestNamespace::new("upgrade").await;
    install_registrar(&ns.client).await;
    // A seal key of its own: the operators of other tests (which watch every
    // namespace) must not be the ones to find the retention below.
    let key_secret = format!("upgrade-key-{:08x}", rand::random::<u32>());
    let key = SealKey::load_or_create(&ns.client, OPERATOR_NAMESPACE, &key_secret).await.expect("the seal key");
    let (mut operator, port) =
        registry_operator(&["--watch-namespace", &ns.name, "--seal-key-secret", &key_secret]).await;
    apply(&ns, &confidential("ready")).await;
    apply(&ns, &confidential("broken")).await;
    let (ready, _) = wait_issued(&ns, "ready").await;
    let (broken, _) = wait_issued(&ns, "broken").await;
    let mut invalid = confidential("broken");
    invalid.spec.redirect_uris = vec!["https://app.example.com/cb/../admin".into()];
    apply(&ns, &invalid).await;
    wait_app(&ns, "broken", "InvalidSpec", |a| ready_reason(a).is_some_and(|(_, r, _)| r == "InvalidSpec")).await;
    operator.kill();

    // What a registrar before the ledger leaves: no entries, and a retention
    // sealed on its Secret.
    let ledger: Api<ClientIdEntry> = Api::all(ns.client.clone());
    let ids: Vec<String> = [&ready, &broken].iter().map(|a| status(a).client_id.expect("issued")).collect();
    for id in &ids {
        ledger.delete(&entry_name(id), &DeleteParams::default()).await.expect("forget the entry");
    }
    let legacy_id = format!("legacy-{:08x}", rand::random::<u32>());
    let legacy_secret = ClientSecret::mint();
    let hash = registrar::credentials::hash_now(&legacy_secret).expect("hash");
    let retention = Retention { client_id: legacy_id.clone(), secret_hash: Some(hash) };
    let retained = Secret {
        metadata: ObjectMeta {
            name: Some("legacy-credentials".into()),
            labels: Some([("registrar.dev/app".to_string(), "legacy".to_string())].into()),
            annotations: Some(retention.annotations(&ns.name, "legacy-credentials", "legacy", &key)),
            ..Default::default()
        },
        data: Some(
            [
                ("client_id".to_string(), ByteString(legacy_id.clone().into_bytes())),
                ("client_secret".to_string(), ByteString(legacy_secret.expose().as_bytes().to_vec())),
            ]
            .into(),
        ),
        ..Default::default()
    };
    ns.api::<Secret>().create(&PostParams::default(), &retained).await.expect("the retained Secret");

    operator.restart().await;
    eventually("every app and the retention to enter the ledger", Duration::from_secs(60), || async {
        let mut states = Vec::new();
        for id in ids.iter().chain([&legacy_id]) {
            states.push(ledger.get_opt(&entry_name(id)).await.ok()??.spec.state);
        }
        (states == [LedgerState::Active, LedgerState::Active, LedgerState::Retained]).then_some(())
    })
    .await;
    let caller = Caller::new(&ns, port).await;
    let (code, answer) = eventually("the retained Client ID to authenticate", Duration::from_secs(60), || async {
        let answer = caller.authenticate(&legacy_id, legacy_secret.expose()).await;
        answer.0.is_success().then_some(answer)
    })
    .await;
    assert!(code.is_success() && answer["state"] == json!("retained"), "{answer}");
    eventually("both apps looked at", Duration::from_secs(60), || async {
        let reconciled = operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await;
        (reconciled >= 2.0).then_some(())
    })
    .await;
    assert_eq!(operator.writes().await, 3.0, "one create per Client ID, nothing else");
    let broken = ns.api::<registrar::api::AppRegistration>().get("broken").await.expect("broken");
    assert_eq!(ready_reason(&broken).map(|r| r.1).as_deref(), Some("InvalidSpec"), "still only InvalidSpec");

    operator.restart().await;
    eventually("both apps looked at again", Duration::from_secs(60), || async {
        let reconciled = operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await;
        (reconciled >= 2.0).then_some(())
    })
    .await;
    assert_eq!(operator.writes().await, 0.0, "a restart afterwards writes nothing");
    let _ = ledger.delete(&entry_name(&legacy_id), &DeleteParams::default()).await;
    let _ = kube::Api::<Secret>::namespaced(ns.client.clone(), OPERATOR_NAMESPACE)
        .delete(&key_secret, &DeleteParams::default())
        .await;
    ns.delete().await;
}
