//! Tenants are adversaries, and registrar holds its ground without any
//! admission policy: a namespace editor who forges a Secret that claims to be
//! registrar's — owner reference, labels, a version ahead of status, another
//! tenant's Client ID — gets nothing adopted, and cannot take over, or get a
//! second app to carry, another namespace's Client ID.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use registrar::{
    api::{AppRegistration, AppRegistrationStatus},
    credentials::ClientSecret,
};
use serde_json::json;

use crate::support::{
    apps::{confidential, credentials, ready_reason, secret_value, status, wait_app, wait_event, wait_issued},
    eventually, gitops_apply,
    tenants::{Tenants, forged_secret, replace_secret},
};

const TIMEOUT: Duration = Duration::from_secs(60);
const ATTACKER_SECRET: &str = "the-attackers-own-chosen-client-secret-0001";

/// The attack, as a user holding only `edit` in A: a hand-made Secret
/// blocks app `evil` (SecretConflict), then is replaced in one update by one
/// that claims to be registrar's, carrying B's Client ID and a secret of the
/// attacker's choice. registrar adopts nothing, B keeps working, and `evil`
/// gets credentials of its own with a Warning naming what happened.
#[tokio::test]
async fn a_forged_secret_never_takes_over_another_namespaces_client_id() {
    let t = Tenants::new("hijack").await;
    let secrets: Api<Secret> = Api::namespaced(t.mallory.clone(), &t.a.name);
    let apps: Api<AppRegistration> = Api::namespaced(t.mallory.clone(), &t.a.name);

    let squatter: Secret = serde_json::from_value(json!({
        "metadata": { "name": "evil-credentials" }, "stringData": { "note": "mine" }
    }))
    .expect("secret");
    secrets.create(&PostParams::default(), &squatter).await.expect("mallory creates a Secret");
    gitops_apply(&apps, &t.labelled(confidential("evil"))).await.expect("mallory applies an app");
    let evil = wait_app(&t.a, "evil", "SecretConflict", |a| {
        ready_reason(a).is_some_and(|(s, r, _)| s == "False" && r == "SecretConflict")
    })
    .await;
    assert_eq!(status(&evil).client_id, None, "nothing is minted while the name is taken");

    let forged = forged_secret("evil-credentials", &evil, 1, &t.victim_client_id, ATTACKER_SECRET);
    replace_secret(&t.mallory, &t.a.name, &forged).await.expect("without the policy, mallory may write it");

    let evil = wait_app(&t.a, "evil", "evil to be issued credentials of its own", |a| {
        ready_reason(a).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    let own = status(&evil).client_id.expect("a Client ID");
    assert_ne!(own, t.victim_client_id, "a Secret never sets an app's Client ID");
    let event = wait_event(&t.a, "SecretUntrusted", "evil-credentials").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let note = event.message.unwrap_or_default();
    assert!(note.contains("did not write") && note.contains(&own), "{note}");
    let (_, secret) = wait_issued(&t.a, "evil").await;
    assert_eq!(secret_value(&secret, "client_id").as_deref(), Some(own.as_str()));
    assert!(
        secret_value(&secret, "client_secret").as_deref() != Some(ATTACKER_SECRET),
        "the attacker's secret was issued"
    );

    t.assert_victim_intact(ATTACKER_SECRET).await;
    let b_app = t.b.api::<AppRegistration>().get("billing").await.expect("B's app");
    assert_eq!(status(&b_app).client_id.as_deref(), Some(t.victim_client_id.as_str()));
    assert_eq!(status(&b_app).secret_version, Some(1), "nothing of B's changed");

    // Deleting A's app revokes A's Client ID, never B's.
    apps.delete("evil", &DeleteParams::default()).await.expect("mallory deletes her app");
    let revoked = wait_event(&t.a, "Revoked", "revoked").await;
    let note = revoked.message.unwrap_or_default();
    assert!(note.contains(&own) && !note.contains(&t.victim_client_id), "{note}");
    t.assert_victim_intact(ATTACKER_SECRET).await;
    t.delete().await;
}

/// The variants: a forged Secret for an app before its first mint, for an app
/// whose spec is invalid, and a version bump of an issued app's own Secret.
/// Each is re-minted (or refused), never adopted.
#[tokio::test]
async fn forged_secrets_are_reminted_or_refused_never_adopted() {
    let t = Tenants::new("forge").await;
    let apps: Api<AppRegistration> = Api::namespaced(t.mallory.clone(), &t.a.name);

    // Before its first mint: the app is not yet managed (no run label) while
    // the forged Secret is put in place; then it is.
    let fresh = gitops_apply(&apps, &confidential("fresh")).await.expect("apply");
    let forged = forged_secret("fresh-credentials", &fresh, 1, &t.victim_client_id, ATTACKER_SECRET);
    replace_secret(&t.mallory, &t.a.name, &forged).await.expect("forge");
    gitops_apply(&apps, &t.labelled(confidential("fresh"))).await.expect("label");
    let (app, secret) = wait_issued(&t.a, "fresh").await;
    let id = status(&app).client_id.expect("a Client ID");
    assert_ne!(id, t.victim_client_id);
    assert_eq!(status(&app).secret_version, Some(1), "the forged version counts for nothing");
    assert!(
        secret_value(&secret, "client_secret").as_deref() != Some(ATTACKER_SECRET),
        "the attacker's secret was issued"
    );

    // An app whose spec the controller rejects: nothing is adopted or issued;
    // once the spec is fixed it gets a Client ID of its own.
    let mut invalid = t.labelled(confidential("broken"));
    invalid.spec.redirect_uris = vec!["https://app.example.com/cb/../admin".into()];
    let broken = gitops_apply(&apps, &invalid).await.expect("apply");
    wait_app(&t.a, "broken", "InvalidSpec", |a| ready_reason(a).is_some_and(|(_, r, _)| r == "InvalidSpec")).await;
    let forged = forged_secret("broken-credentials", &broken, 7, &t.victim_client_id, ATTACKER_SECRET);
    // Counted before the forge: the reconcile it triggers may finish before
    // the next line runs.
    let reconciles = t.operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await;
    replace_secret(&t.mallory, &t.a.name, &forged).await.expect("forge");
    eventually("the forged Secret to be looked at", TIMEOUT, || async {
        (t.operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await > reconciles)
            .then_some(())
    })
    .await;
    let still = apps.get("broken").await.expect("get");
    assert_eq!(ready_reason(&still).map(|r| r.1).as_deref(), Some("InvalidSpec"));
    assert_eq!(status(&still).client_id, None, "an InvalidSpec app adopts nothing");
    gitops_apply(&apps, &t.labelled(confidential("broken"))).await.expect("fix the spec");
    let (fixed, _) = wait_issued(&t.a, "broken").await;
    assert_ne!(status(&fixed).client_id.as_deref(), Some(t.victim_client_id.as_str()));
    assert_eq!(status(&fixed).secret_version, Some(1), "nothing of the forged version 7 was taken");

    // An issued app's own Secret with its version bumped and a chosen secret:
    // re-minted, the Client ID kept, the chosen secret refused.
    gitops_apply(&apps, &t.labelled(confidential("bumped"))).await.expect("apply");
    let (bumped, _) = wait_issued(&t.a, "bumped").await;
    let own = status(&bumped).client_id.expect("a Client ID");
    let forged = forged_secret("bumped-credentials", &bumped, 2, &own, ATTACKER_SECRET);
    replace_secret(&t.mallory, &t.a.name, &forged).await.expect("forge");
    let reminted = wait_app(&t.a, "bumped", "a re-mint", |a| {
        status(a).secret_version == Some(2) && ready_reason(a).is_some_and(|(s, _, _)| s == "True")
    })
    .await;
    assert_eq!(status(&reminted).client_id.as_deref(), Some(own.as_str()), "the Client ID never changes");
    let (_, secret) = wait_issued(&t.a, "bumped").await;
    let reissued = secret_value(&secret, "client_secret").expect("a secret");
    assert!(reissued != ATTACKER_SECRET, "the attacker's secret was issued");
    // The registry reads the operator's caches, a moment behind the apiserver.
    eventually("the re-minted secret to authenticate", TIMEOUT, || async {
        t.authenticates(&own, &reissued).await.then_some(())
    })
    .await;
    assert!(!t.authenticates(&own, ATTACKER_SECRET).await, "the chosen secret is refused");
    wait_event(&t.a, "SecretUntrusted", "bumped-credentials").await;

    t.assert_victim_intact(ATTACKER_SECRET).await;
    t.delete().await;
}

/// A second AppRegistration whose status names another app's Client ID (a
/// restore from backup, or whoever may write status) is refused with
/// ClientIdConflict; the original keeps working, also across a restart, and
/// deleting the second app revokes nothing of the original's.
#[tokio::test]
async fn a_second_app_naming_a_held_client_id_is_refused() {
    let mut t = Tenants::new("dup").await;
    let apps = t.a.api::<AppRegistration>();
    gitops_apply(&apps, &t.labelled(confidential("copy"))).await.expect("apply");
    wait_issued(&t.a, "copy").await;
    let stolen = AppRegistrationStatus {
        client_id: Some(t.victim_client_id.clone()),
        secret_hash: Some(
            registrar::credentials::hash_now(&ClientSecret::from_bytes(ATTACKER_SECRET.as_bytes()).expect("utf-8"))
                .expect("hash"),
        ),
        secret_version: Some(1),
        ..Default::default()
    };
    let patch = Patch::Apply(json!({
        "apiVersion": "registrar.dev/v1alpha1", "kind": "AppRegistration", "status": stolen
    }));
    apps.patch_status("copy", &PatchParams::apply("restore-tool").force(), &patch).await.expect("write status");

    let refused =
        |a: &AppRegistration| ready_reason(a).is_some_and(|(s, r, _)| s == "False" && r == "ClientIdConflict");
    let copy = wait_app(&t.a, "copy", "ClientIdConflict", refused).await;
    let message = ready_reason(&copy).expect("condition").2;
    assert!(message.contains(&t.victim_client_id) && !message.contains(&t.b.name), "{message}");
    wait_event(&t.a, "ClientIdConflict", "another AppRegistration").await;
    t.assert_victim_intact(ATTACKER_SECRET).await;
    let secret = credentials(&t.a, "copy-credentials").await.expect("copy's Secret is left alone");
    assert_ne!(secret_value(&secret, "client_id").as_deref(), Some(t.victim_client_id.as_str()));

    // A restarted operator picks the same holder.
    t.operator.restart().await;
    wait_app(&t.a, "copy", "ClientIdConflict after a restart", refused).await;
    t.assert_victim_intact(ATTACKER_SECRET).await;

    apps.delete("copy", &DeleteParams::default()).await.expect("delete");
    eventually("copy to be gone", TIMEOUT, || async { apps.get_opt("copy").await.ok()?.is_none().then_some(()) }).await;
    t.assert_victim_intact(ATTACKER_SECRET).await;
    let b_app = t.b.api::<AppRegistration>().get("billing").await.expect("B's app");
    assert!(ready_reason(&b_app).is_some_and(|(s, _, _)| s == "True"));
    assert_eq!(b_app.finalizers(), ["registrar.dev/revoke"]);
    t.delete().await;
}

/// Without the policies mallory also labels 60 Secrets as registrar's, each
/// with 240 KB of annotations, beside 60 such apps and consents: the operator
/// grows by less than 2 MiB.
#[tokio::test]
async fn annotations_of_a_tenant_do_not_grow_the_operators_memory() {
    let t = Tenants::new("stuffed").await;
    crate::support::memory_attacks::annotations_of_a_tenant_do_not_grow_the_operator(&t, true).await;
    t.delete().await;
}

/// Without the policies the CRD still refuses `system:` owners and owner
/// names with control characters.
#[tokio::test]
async fn unreal_owners_are_refused_by_the_crd() {
    let t = Tenants::new("owners").await;
    crate::support::tenants::unreal_owners_are_refused(&t).await;
    t.delete().await;
}

/// Without any admission policy, a tenant who may write its consents' status
/// gains nothing at a switch to Restricted: a consent granted before is kept
/// (its record sealed by registrar), one created after is refused, and the
/// kept consent's record copied onto it, or one made up, grants nothing and
/// is removed.
#[tokio::test]
async fn a_tenant_cannot_write_itself_a_kept_consent() {
    use k8s_openapi::api::{
        core::v1::Namespace,
        rbac::v1::{Role, RoleBinding},
    };
    use registrar::api::{
        AppConsent, AppConsentSpec, AppRef, ConsentGrant, OrganizationPolicy, OrganizationPolicySpec, PolicyKind,
    };

    use crate::support::{control_plane, tenants::RUN_LABEL};

    let t = Tenants::new("kept").await;
    let org = format!("kept-{}", t.run);
    let admin = control_plane().client().await;
    // A and B in an organization of their own, which will not auto-approve
    // its internal apps (B's billing): a consent needs an allowlist entry, or
    // to have been granted before the switch.
    let label = Patch::Merge(json!({ "metadata": { "labels": { "registrar.dev/organization": org } } }));
    for ns in [&t.a.name, &t.b.name] {
        Api::<Namespace>::all(admin.clone()).patch(ns, &PatchParams::default(), &label).await.expect("label");
    }
    // mallory may write her consents' status too.
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "consent-status" },
        "rules": [{ "apiGroups": ["registrar.dev"], "resources": ["appconsents/status"], "verbs": ["get", "patch", "update"] }]
    }))
    .expect("role");
    t.a.api::<Role>().create(&PostParams::default(), &role).await.expect("Role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "mallory-consent-status" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "consent-status" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": crate::support::tenants::MALLORY }]
    }))
    .expect("binding");
    t.a.api::<RoleBinding>().create(&PostParams::default(), &binding).await.expect("RoleBinding");
    eventually("mallory's status role to take effect", TIMEOUT, || async {
        let ns = Some(t.a.name.as_str());
        let mallory = crate::support::tenants::MALLORY;
        crate::support::allowed_in(&t.a.client, ns, mallory, "registrar.dev", "appconsents/status", "patch")
            .await
            .then_some(())
    })
    .await;

    let consents: Api<AppConsent> = Api::namespaced(t.mallory.clone(), &t.a.name);
    let consent = |name: &str| AppConsent {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            labels: Some([(RUN_LABEL.to_string(), t.run.clone())].into()),
            ..Default::default()
        },
        spec: AppConsentSpec {
            app_ref: AppRef { namespace: t.b.name.clone(), name: "billing".into() },
            oauth_scopes: None,
        },
        status: None,
    };
    let reason_of = |c: &AppConsent| {
        let s = c.status.as_ref()?;
        (s.observed_generation == c.metadata.generation).then_some(())?;
        s.conditions.iter().find(|c| c.type_ == "Granted").map(|c| c.reason.clone())
    };
    consents.create(&PostParams::default(), &consent("early")).await.expect("early");
    let record = eventually("the early consent granted, with its record", TIMEOUT, || async {
        let c = consents.get("early").await.ok()?;
        (reason_of(&c)? == "Granted").then_some(())?;
        c.status?.grant
    })
    .await;

    let policies: Api<OrganizationPolicy> = Api::all(admin.clone());
    let policy = OrganizationPolicy {
        metadata: kube::api::ObjectMeta {
            name: Some(org.clone()),
            labels: Some([(RUN_LABEL.to_string(), t.run.clone())].into()),
            ..Default::default()
        },
        spec: OrganizationPolicySpec {
            policy: Some(PolicyKind::Restricted),
            auto_approve_internal: Some(false),
            ..Default::default()
        },
        status: None,
    };
    policies.create(&PostParams::default(), &policy).await.expect("Restricted");
    let in_force = eventually("Restricted in force", TIMEOUT, || async {
        let p = policies.get(&org).await.ok()?;
        (p.status.as_ref()?.policy == Some(PolicyKind::Restricted)).then_some(p)
    })
    .await;
    assert_eq!(in_force.status.expect("status").grandfathered_count, 1);

    consents.create(&PostParams::default(), &consent("late")).await.expect("late");
    let refused = |what: &'static str| {
        let consents = consents.clone();
        async move {
            eventually(what, TIMEOUT, || async {
                let c = consents.get("late").await.ok()?;
                (reason_of(&c)? == "NotAllowlisted" && c.status?.grant.is_none()).then_some(())
            })
            .await;
        }
    };
    refused("the late consent to be refused").await;
    let client_id = record.client_id.clone();
    let forge = |grant: &ConsentGrant| {
        Patch::Merge(json!({ "status": {
            "clientId": client_id, "grantedScopes": record.scopes, "grant": grant,
            "conditions": [{ "type": "Granted", "status": "True", "reason": "Granted", "message": "forged",
                             "lastTransitionTime": "2020-01-01T00:00:00Z" }],
        } }))
    };
    consents.patch_status("late", &PatchParams::default(), &forge(&record)).await.expect("copy the record");
    refused("a copied record to grant nothing").await;
    let made_up = ConsentGrant { seal: "v1.made-up".into(), ..record.clone() };
    consents.patch_status("late", &PatchParams::default(), &forge(&made_up)).await.expect("make one up");
    refused("a made-up record to grant nothing").await;
    let early = consents.get("early").await.expect("early");
    assert_eq!(reason_of(&early).as_deref(), Some("Granted"), "the kept consent stays granted");
    assert_eq!(early.status.and_then(|s| s.grant), Some(record));

    let _ = policies.delete(&org, &DeleteParams::default()).await;
    t.delete().await;
}
