//! The AppRegistration lifecycle against a real apiserver, with the registrar
//! binary running as its own process: register, show, edit, rotate, revoke,
//! drift, Registered By, quietness.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::Secret},
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use registrar::{
    api::{AppRegistration, AppRegistrationStatus, Rotation, Scope, WorkloadKind, WorkloadRef},
    credentials::{ClientSecret, verify_now},
};
use serde_json::json;

pub(crate) use crate::support::apps::*;
use crate::support::{
    TestNamespace, control_plane, eventually, gitops_apply, install_registrar,
    operator::{Operator, two_replicas},
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Sets up a namespace, registrar's CRDs and policies, and an operator for it.
async fn setup(prefix: &str) -> (TestNamespace, Operator) {
    let ns = TestNamespace::new(prefix).await;
    install_registrar(&ns.client).await;
    let operator = Operator::start(&ns.name).await;
    (ns, operator)
}

/// Re-applies the operator's own status with one field changed, under the
/// operator's field manager so ownership is unchanged: how a test back-dates time.
async fn backdate_status(ns: &TestNamespace, name: &str, change: impl FnOnce(&mut AppRegistrationStatus)) {
    let apps = ns.api::<AppRegistration>();
    let app = apps.get(name).await.expect("get app");
    let mut st = status(&app);
    change(&mut st);
    let patch = Patch::Apply(json!({
        "apiVersion": "registrar.dev/v1alpha1", "kind": "AppRegistration", "status": st
    }));
    apps.patch_status(name, &PatchParams::apply("registrar").force(), &patch).await.expect("back-date status");
}

async fn annotate(ns: &TestNamespace, name: &str, key: &str, value: &str) {
    let patch = Patch::Merge(json!({ "metadata": { "annotations": { key: value } } }));
    ns.api::<AppRegistration>().patch(name, &PatchParams::default(), &patch).await.expect("annotate");
}

#[tokio::test]
async fn confidential_app_gets_a_verifying_secret_and_the_seed_columns() {
    let (ns, operator) = setup("reg-issue").await;
    apply(&ns, &confidential("billing")).await;
    let (app, secret) = wait_issued(&ns, "billing").await;
    let plain = assert_verifies(&app, &secret);

    let st = status(&app);
    assert_eq!(st.secret_version, Some(1));
    assert_eq!(st.client_id.as_ref().map(String::len), Some(22));
    assert_eq!(st.registered_by.as_deref(), Some("registrar-test-admin"));
    let labels = secret.labels();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("registrar"));
    assert_eq!(labels.get("registrar.dev/app").map(String::as_str), Some("billing"));
    let owner = &secret.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("AppRegistration", Some(true)));
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));

    let out = control_plane().kubectl().args(["get", "appregs", "-n", &ns.name]).output().expect("kubectl");
    let table = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> =
        table.lines().next().unwrap_or_default().split("  ").filter(|s| !s.trim().is_empty()).map(str::trim).collect();
    assert_eq!(header, ["NAME", "SCOPE", "REGISTERED BY", "OWNER", "CLIENT ID", "SECRET", "PKCE", "READY", "AGE"]);
    let row = table.lines().nth(1).unwrap_or_default();
    for cell in [
        "billing",
        "Organization",
        "registrar-test-admin",
        st.client_id.as_deref().unwrap_or("?"),
        st.secret_fingerprint.as_deref().unwrap_or("?"),
        "True",
    ] {
        assert!(row.contains(cell), "row {row:?} shows {cell}");
    }
    // PKCE shows the value in effect, also when the manifest leaves it out.
    let cells: Vec<&str> = row.split_whitespace().collect();
    let pkce = header.iter().position(|h| *h == "PKCE").and_then(|i| cells.get(i));
    assert_eq!(pkce, Some(&"false"), "row {row:?}");
    // spec.scope is a selectable field.
    let out = control_plane()
        .kubectl()
        .args(["get", "appregs", "-n", &ns.name, "--field-selector", "spec.scope=Group", "-o", "name"])
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());

    wait_event(&ns, "Issued", st.client_id.as_deref().unwrap_or("?")).await;
    assert_no_leak(&ns, &operator, &[plain]).await;
    ns.delete().await;
}

#[tokio::test]
async fn public_client_secret_holds_only_the_client_id() {
    let (ns, _operator) = setup("reg-public").await;
    let mut app = confidential("spa");
    app.spec.public_client = Some(true);
    app.spec.require_pkce = Some(true);
    app.spec.redirect_uris = vec!["com.example.app:/callback".into(), "http://127.0.0.1/cb".into()];
    apply(&ns, &app).await;
    let (app, secret) = wait_issued(&ns, "spa").await;
    let st = status(&app);
    assert!(st.secret_hash.is_none() && st.secret_fingerprint.is_none());
    let keys: Vec<_> = secret.data.clone().unwrap_or_default().into_keys().collect();
    assert_eq!(keys, ["client_id"]);
    assert_eq!(secret_value(&secret, "client_id"), st.client_id);
    ns.delete().await;
}

#[tokio::test]
async fn bad_specs_are_rejected_or_reported_and_issued_credentials_survive() {
    let (ns, operator) = setup("reg-invalid").await;
    let apps = ns.api::<AppRegistration>();
    let rejected = |app: AppRegistration, needle: &'static str| {
        let apps = apps.clone();
        async move {
            let err = apps.create(&PostParams::default(), &app).await.expect_err("the apiserver rejects it");
            let kube::Error::Api(status) = err else { panic!("expected an API error") };
            assert!(status.is_invalid() || status.is_forbidden(), "{status:?}");
            assert!(status.message.contains(needle), "{:?} should mention {needle:?}", status.message);
        }
    };
    let mut public_without_pkce = confidential("p1");
    public_without_pkce.spec.public_client = Some(true);
    rejected(public_without_pkce, "a public client must set requirePkce: true").await;
    let mut js = confidential("p2");
    js.spec.redirect_uris = vec!["javascript:alert(1)".into()];
    rejected(js, "forbidden scheme").await;
    let mut fragment = confidential("p3");
    fragment.spec.redirect_uris = vec!["https://app.example.com/cb#x".into()];
    rejected(fragment, "must not contain a fragment").await;
    let mut http = confidential("p4");
    http.spec.redirect_uris = vec!["http://example.com/cb".into()];
    rejected(http, "uses http on a host other than the loopback").await;

    let mut public_credentials = confidential("p5");
    public_credentials.spec.public_client = Some(true);
    public_credentials.spec.require_pkce = Some(true);
    public_credentials.spec.grant_types = Some(vec![registrar::api::GrantType::ClientCredentials]);
    rejected(public_credentials, "cannot use the client_credentials grant").await;
    let mut private_scheme = confidential("p6");
    private_scheme.spec.redirect_uris = vec!["com.example.app:/callback".into()];
    rejected(private_scheme, "allowed only for public clients").await;
    let mut userinfo = confidential("p7");
    userinfo.spec.redirect_uris = vec!["https://user@app.example.com/cb".into()];
    rejected(userinfo, "must not contain userinfo").await;
    let mut wildcard = confidential("p8");
    wildcard.spec.redirect_uris = vec!["https://*.example.com/cb".into()];
    rejected(wildcard, "must not contain a wildcard").await;
    let mut control = confidential("p9");
    control.spec.display_name = "bad\u{7}name".into();
    rejected(control, "must not contain control characters").await;
    let mut encoded = confidential("p10");
    encoded.spec.redirect_uris = vec!["https://app.example.com/cb?next=%0d%0aLocation:x".into()];
    rejected(encoded, "contains a percent-encoded control character").await;

    // Global scope outside the platform namespace: refused at admission, naming it.
    let mut global = confidential("global");
    global.spec.scope = Scope::Global;
    rejected(global, "allowed only in the platform namespace registrar-system").await;

    // An issued app hit by bad edits keeps its Client ID and secret.
    apply(&ns, &confidential("stable")).await;
    let (issued, secret) = wait_issued(&ns, "stable").await;
    let plain = assert_verifies(&issued, &secret);

    let mut scope_change = confidential("stable");
    scope_change.spec.scope = Scope::Group;
    let err = gitops_apply(&apps, &scope_change).await.expect_err("scope is immutable");
    assert!(err.to_string().contains("scope cannot be changed"), "{err}");

    let mut now_public = confidential("stable");
    now_public.spec.public_client = Some(true);
    now_public.spec.require_pkce = Some(true);
    let err = gitops_apply(&apps, &now_public).await.expect_err("publicClient is immutable");
    assert!(err.to_string().contains("publicClient cannot be changed"), "{err}");

    // Dot segments pass the apiserver's rules; the controller reports them.
    let mut dots = confidential("stable");
    dots.spec.redirect_uris = vec!["https://app.example.com/cb/../x".into()];
    apply(&ns, &dots).await;
    let reported = wait_app(&ns, "stable", "InvalidSpec", |a| {
        ready_reason(a).is_some_and(|(s, r, _)| s == "False" && r == "InvalidSpec")
    })
    .await;
    let (_, _, message) = ready_reason(&reported).expect("condition");
    assert!(message.contains("spec.redirectUris[0]"), "{message}");
    assert_eq!(status(&reported).client_id, status(&issued).client_id);
    assert_eq!(status(&reported).secret_hash, status(&issued).secret_hash);
    let after = credentials(&ns, "stable-credentials").await.expect("Secret still there");
    assert_eq!(after.resource_version(), secret.resource_version(), "the Secret was not touched");

    // Fixing the spec makes it Ready again with the same credentials.
    apply(&ns, &confidential("stable")).await;
    let fixed = wait_app(&ns, "stable", "Ready again", is_ready).await;
    assert_eq!(status(&fixed).secret_version, Some(1));
    assert_no_leak(&ns, &operator, &[plain]).await;
    ns.delete().await;
}

#[tokio::test]
async fn edits_update_status_and_never_touch_the_secret() {
    let (ns, _operator) = setup("reg-edit").await;
    apply(&ns, &confidential("edit")).await;
    let (before, secret) = wait_issued(&ns, "edit").await;

    let mut edited = confidential("edit");
    edited.spec.display_name = "Renamed".into();
    edited.spec.redirect_uris = vec!["https://other.example.com/cb".into(), "http://[::1]:8080/cb".into()];
    edited.spec.require_pkce = Some(true);
    edited.spec.grant_types = Some(vec![registrar::api::GrantType::AuthorizationCode]);
    edited.spec.oauth_scopes = vec!["read".into(), "write".into()];
    let applied = apply(&ns, &edited).await;
    let after = wait_app(&ns, "edit", "the edit to be observed", |a| {
        a.status.as_ref().and_then(|s| s.observed_generation) == applied.metadata.generation && is_ready(a)
    })
    .await;
    assert!(after.metadata.generation > before.metadata.generation);
    assert_eq!(status(&after).client_id, status(&before).client_id);
    assert_eq!(status(&after).secret_hash, status(&before).secret_hash);
    assert_eq!(status(&after).secret_version, Some(1));
    let secret_after = credentials(&ns, "edit-credentials").await.expect("Secret");
    assert_eq!(secret_after.resource_version(), secret.resource_version());
    ns.delete().await;
}

#[tokio::test]
async fn rotate_annotation_rotates_exactly_once_per_value() {
    let (ns, operator) = setup("reg-rotate").await;
    let mut app = confidential("rot");
    apply(&ns, &app).await;
    let (_, secret) = wait_issued(&ns, "rot").await;
    let mut seen = vec![secret_value(&secret, "client_secret").expect("secret")];

    for (value, version) in [("r1", 2), ("r2", 3)] {
        app.metadata.annotations = Some(BTreeMap::from([("registrar.dev/rotate".to_string(), value.to_string())]));
        apply(&ns, &app).await;
        let rotated = wait_app(&ns, "rot", &format!("rotation {value}"), |a| {
            status(a).last_handled_rotate.as_deref() == Some(value)
        })
        .await;
        let st = status(&rotated);
        assert_eq!(st.secret_version, Some(version));
        assert!(st.previous_secret_hash.is_none(), "gracePeriod 0: the old hash leaves status at once");
        let (rotated, secret) = wait_issued(&ns, "rot").await;
        let plain = assert_verifies(&rotated, &secret);
        let old = ClientSecret::from_bytes(seen.last().expect("old").as_bytes()).expect("utf-8");
        assert!(!verify_now(&old, st.secret_hash.as_deref().expect("hash")).expect("hash"));
        seen.push(plain);
        wait_event(&ns, "Rotated", &format!("version {version}")).await;
    }

    // Re-applying the same manifest rotates nothing.
    let reconciles = operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await;
    apply(&ns, &app).await;
    annotate(&ns, "rot", "e2e.registrar.dev/touch", "1").await;
    eventually("a reconcile after the re-apply", TIMEOUT, || async {
        (operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await > reconciles)
            .then_some(())
    })
    .await;
    let app_now = ns.api::<AppRegistration>().get("rot").await.expect("get");
    assert_eq!(status(&app_now).secret_version, Some(3));
    assert_eq!(operator.metric("registrar_secret_mints_total{reason=\"RotateRequested\"}").await, 2.0);
    assert_no_leak(&ns, &operator, &seen).await;
    ns.delete().await;
}

#[tokio::test]
async fn grace_period_keeps_the_previous_secret_until_it_expires() {
    let (ns, _operator) = setup("reg-grace").await;
    let mut app = confidential("grace");
    app.spec.rotation = Some(Rotation { grace_period: Some("1m".parse().expect("duration")), interval: None });
    apply(&ns, &app).await;
    let (_, secret) = wait_issued(&ns, "grace").await;
    let old =
        ClientSecret::from_bytes(secret_value(&secret, "client_secret").expect("secret").as_bytes()).expect("utf-8");

    annotate(&ns, "grace", "registrar.dev/rotate", "g1").await;
    let rotated = wait_app(&ns, "grace", "the rotation", |a| status(a).secret_version == Some(2)).await;
    let st = status(&rotated);
    let previous = st.previous_secret_hash.clone().expect("previousSecretHash during the grace period");
    assert!(verify_now(&old, &previous).expect("hash"), "the old secret verifies during the grace period");
    let (rotated, new_secret) = wait_issued(&ns, "grace").await;
    assert_verifies(&rotated, &new_secret);
    let expires = st.previous_secret_expires_at.clone().expect("expiry").0;
    let left = expires.duration_since(Timestamp::now()).as_secs();
    assert!((30..=61).contains(&left), "expires about a minute after the rotation ({left}s left)");

    // Back-date the expiry instead of waiting a minute.
    backdate_status(&ns, "grace", |s| {
        s.previous_secret_expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(Timestamp::now().as_second() - 1).expect("time"),
        ));
    })
    .await;
    let expired =
        wait_app(&ns, "grace", "the previous hash to expire", |a| status(a).previous_secret_hash.is_none()).await;
    assert!(status(&expired).previous_secret_expires_at.is_none());
    assert_eq!(status(&expired).secret_version, Some(2));
    ns.delete().await;
}

#[tokio::test]
async fn interval_rotates_on_schedule_and_restarts_workloads() {
    let (ns, _operator) = setup("reg-interval").await;
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "api" },
        "spec": {
            "selector": { "matchLabels": { "app": "api" } },
            "template": {
                "metadata": { "labels": { "app": "api" } },
                "spec": { "containers": [{ "name": "api", "image": "registry.invalid/api:1" }] }
            }
        }
    }))
    .expect("deployment");
    ns.api::<Deployment>().create(&PostParams::default(), &deployment).await.expect("create deployment");

    let mut app = confidential("sched");
    app.spec.rotation = Some(Rotation { grace_period: None, interval: Some("1h".parse().expect("duration")) });
    app.spec.restart_on_rotate = vec![WorkloadRef { kind: WorkloadKind::Deployment, name: "api".into() }];
    apply(&ns, &app).await;
    wait_issued(&ns, "sched").await;

    backdate_status(&ns, "sched", |s| {
        s.last_rotated_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(Timestamp::now().as_second() - 2 * 3600).expect("time"),
        ));
    })
    .await;
    let rotated = wait_app(&ns, "sched", "the scheduled rotation", |a| status(a).secret_version == Some(2)).await;
    assert!(
        status(&rotated).last_rotated_at.expect("lastRotatedAt").0
            > Timestamp::now().checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(600)).expect("time")
    );
    let (rotated, secret) = wait_issued(&ns, "sched").await;
    assert_verifies(&rotated, &secret);
    let rolled = ns.api::<Deployment>().get("api").await.expect("deployment");
    let template_annotations =
        rolled.spec.and_then(|s| s.template.metadata).and_then(|m| m.annotations).unwrap_or_default();
    assert_eq!(template_annotations.get("registrar.dev/secret-version").map(String::as_str), Some("2"));
    wait_event(&ns, "Rotated", "on schedule").await;
    ns.delete().await;
}

#[tokio::test]
async fn deleting_the_app_revokes_it_and_a_new_app_gets_a_new_client_id() {
    let (ns, mut operator) = setup("reg-revoke").await;
    apply(&ns, &confidential("gone")).await;
    let (first, _) = wait_issued(&ns, "gone").await;
    assert!(first.finalizers().contains(&"registrar.dev/revoke".to_string()));

    let apps = ns.api::<AppRegistration>();
    apps.delete("gone", &DeleteParams::default()).await.expect("delete");
    eventually("the app and its Secret to be gone", TIMEOUT, || async {
        let app_gone = apps.get_opt("gone").await.ok()?.is_none();
        let secret_gone = credentials(&ns, "gone-credentials").await.is_none();
        (app_gone && secret_gone).then_some(())
    })
    .await;

    apply(&ns, &confidential("gone")).await;
    let (second, _) = wait_issued(&ns, "gone").await;
    assert_ne!(status(&second).client_id, status(&first).client_id);

    // Deleting while the operator is down completes when it returns.
    operator.kill();
    apps.delete("gone", &DeleteParams::default()).await.expect("delete");
    let pending = apps.get("gone").await.expect("held by the finalizer");
    assert!(pending.metadata.deletion_timestamp.is_some());
    operator.restart().await;
    eventually("deletion to complete after the restart", TIMEOUT, || async {
        let app_gone = apps.get_opt("gone").await.ok()?.is_none();
        let secret_gone = credentials(&ns, "gone-credentials").await.is_none();
        (app_gone && secret_gone).then_some(())
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn drift_is_repaired_with_warning_events() {
    let (ns, operator) = setup("reg-drift").await;
    let secrets = ns.api::<Secret>();
    apply(&ns, &confidential("drift")).await;
    let (app, secret) = wait_issued(&ns, "drift").await;
    let mut seen = vec![assert_verifies(&app, &secret)];
    let client_id = status(&app).client_id;

    // Deleted Secret: re-minted, with a Warning.
    secrets.delete("drift-credentials", &DeleteParams::default()).await.expect("delete Secret");
    wait_app(&ns, "drift", "a re-mint after deletion", |a| status(a).secret_version == Some(2)).await;
    let (app, secret) = wait_issued(&ns, "drift").await;
    seen.push(assert_verifies(&app, &secret));
    assert_eq!(status(&app).client_id, client_id);
    let event = wait_event(&ns, "SecretRecreated", "drift-credentials").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    // Altered client secret: re-minted, with a Warning.
    let tampered = "tampered-value-that-does-not-verify";
    let patch = Patch::Merge(json!({ "stringData": { "client_secret": tampered } }));
    secrets.patch("drift-credentials", &PatchParams::default(), &patch).await.expect("alter Secret");
    wait_app(&ns, "drift", "a re-mint after tampering", |a| status(a).secret_version == Some(3)).await;
    let (app, secret) = wait_issued(&ns, "drift").await;
    seen.push(assert_verifies(&app, &secret));
    assert_eq!(status(&app).client_id, client_id);
    let event = wait_event(&ns, "SecretReminted", "drift-credentials").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));

    // Label drift: repaired without a new secret.
    let patch = Patch::Merge(json!({ "metadata": { "labels": { "app.kubernetes.io/managed-by": null } } }));
    secrets.patch("drift-credentials", &PatchParams::default(), &patch).await.expect("drop label");
    eventually("the label to be restored", TIMEOUT, || async {
        let s = credentials(&ns, "drift-credentials").await?;
        s.labels().contains_key("app.kubernetes.io/managed-by").then_some(())
    })
    .await;
    let app_now = ns.api::<AppRegistration>().get("drift").await.expect("get");
    assert_eq!(status(&app_now).secret_version, Some(3));
    assert_no_leak(&ns, &operator, &seen).await;
    ns.delete().await;
}

/// Labels and annotations of `spec.secret` follow the spec both ways: added
/// ones appear, dropped ones are removed from the Secret (also those its first
/// create wrote), while labels others put on the Secret stay; no new secret.
#[tokio::test]
async fn secret_labels_and_annotations_follow_the_spec_and_leave_others_alone() {
    let (ns, _operator) = setup("reg-extras").await;
    let secrets = ns.api::<Secret>();
    let with = |labels: &[(&str, &str)], annotations: &[(&str, &str)]| {
        let mut app = confidential("extras");
        let template = app.spec.secret.get_or_insert_with(Default::default);
        template.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        template.annotations = annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        app
    };
    apply(&ns, &with(&[("team", "a"), ("tier", "gold")], &[("note", "x")])).await;
    wait_issued(&ns, "extras").await;
    let patch = Patch::Merge(json!({ "metadata": { "labels": { "backup": "daily" } } }));
    secrets.patch("extras-credentials", &PatchParams::default(), &patch).await.expect("someone else's label");

    apply(&ns, &with(&[("team", "b")], &[])).await;
    let secret = eventually("the dropped keys to go", TIMEOUT, || async {
        let s = credentials(&ns, "extras-credentials").await?;
        let gone = !s.labels().contains_key("tier") && !s.annotations().contains_key("note");
        (gone && s.labels().get("team").map(String::as_str) == Some("b")).then_some(s)
    })
    .await;
    assert_eq!(secret.labels().get("backup").map(String::as_str), Some("daily"), "others' labels stay");
    apply(&ns, &with(&[], &[])).await;
    let secret = eventually("every extra to go", TIMEOUT, || async {
        let s = credentials(&ns, "extras-credentials").await?;
        (!s.labels().contains_key("team") && !s.annotations().contains_key("registrar.dev/extra-keys")).then_some(s)
    })
    .await;
    assert_eq!(secret.labels().get("backup").map(String::as_str), Some("daily"));
    let app = ns.api::<AppRegistration>().get("extras").await.expect("get");
    assert_eq!(status(&app).secret_version, Some(1), "metadata changes never re-mint");
    ns.delete().await;
}

#[tokio::test]
async fn a_foreign_secret_is_never_overwritten() {
    let (ns, _operator) = setup("reg-conflict").await;
    let foreign = Secret {
        metadata: ObjectMeta { name: Some("taken-credentials".into()), ..Default::default() },
        string_data: Some(BTreeMap::from([("keep".to_string(), "me".to_string())])),
        ..Default::default()
    };
    let created = ns.api::<Secret>().create(&PostParams::default(), &foreign).await.expect("create foreign Secret");
    apply(&ns, &confidential("taken")).await;
    let app = wait_app(&ns, "taken", "SecretConflict", |a| {
        ready_reason(a).is_some_and(|(s, r, _)| s == "False" && r == "SecretConflict")
    })
    .await;
    assert!(ready_reason(&app).expect("condition").2.contains("taken-credentials"));
    let after = credentials(&ns, "taken-credentials").await.expect("still there");
    assert_eq!(after.resource_version(), created.resource_version(), "left untouched");
    wait_event(&ns, "SecretConflict", "taken-credentials").await;
    ns.delete().await;
}

#[tokio::test]
async fn registered_by_is_set_at_creation_and_survives_gitops_reapply() {
    let (ns, _operator) = setup("reg-by").await;
    // Created through impersonation as alice, like a GitOps tool's identity.
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(control_plane().kubeconfig()).expect("kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("config");
    config.auth_info.impersonate = Some("alice".into());
    config.auth_info.impersonate_groups = Some(vec!["system:masters".into()]);
    let alice = kube::Client::try_from(config).expect("client");
    let mut app = confidential("mine");
    app.metadata.annotations = Some(BTreeMap::from([
        ("registrar.dev/registered-by".to_string(), "forged".to_string()),
        ("registrar.dev/registered-by-groups".to_string(), "forged-group".to_string()),
    ]));
    gitops_apply(&Api::namespaced(alice, &ns.name), &app).await.expect("apply as alice");
    let issued = wait_app(&ns, "mine", "Registered By", |a| status(a).registered_by.is_some()).await;
    assert_eq!(
        status(&issued).registered_by.as_deref(),
        Some("alice"),
        "set from the requesting user, not the manifest"
    );
    let groups = |a: &AppRegistration| a.annotations().get("registrar.dev/registered-by-groups").cloned();
    assert_eq!(
        groups(&issued).as_deref(),
        Some("system:masters,system:authenticated"),
        "alice's groups, not the manifest's"
    );
    // Alice owns it: with her groups she may manage it (no transfer).
    let owner = status(&issued).owner.expect("an owner");
    assert_eq!((owner.name.as_str(), owner.reason.as_str()), ("alice", "Registered"));

    // A GitOps re-apply of a manifest that does not mention them keeps them.
    apply(&ns, &confidential("mine")).await;
    let app = ns.api::<AppRegistration>().get("mine").await.expect("get");
    assert_eq!(app.annotations().get("registrar.dev/registered-by").map(String::as_str), Some("alice"));
    assert_eq!(groups(&app).as_deref(), Some("system:masters,system:authenticated"));
    assert_eq!(status(&app).registered_by.as_deref(), Some("alice"));

    // Changing either is refused.
    for (key, value) in
        [("registrar.dev/registered-by", "mallory"), ("registrar.dev/registered-by-groups", "system:masters")]
    {
        let patch = Patch::Merge(json!({ "metadata": { "annotations": { key: value } } }));
        let err =
            ns.api::<AppRegistration>().patch("mine", &PatchParams::default(), &patch).await.expect_err("immutable");
        assert!(err.to_string().contains("cannot be changed"), "{key}: {err}");
    }
    ns.delete().await;
}

/// The revoke finalizer comes with the object (deploy/revoke-finalizer-policy.yaml),
/// so issuing an app costs the operator exactly four writes — the Client ID's
/// claim in the ledger, the Secret, the status and the Issued Event — and a
/// GitOps re-apply that does not mention the finalizer keeps it.
#[tokio::test]
async fn the_finalizer_is_set_at_creation_so_issuing_costs_four_writes() {
    let (ns, operator) = setup("reg-fin").await;
    let created = apply(&ns, &confidential("fin")).await;
    assert_eq!(created.finalizers(), ["registrar.dev/revoke"], "set by admission, before the operator acts");
    wait_issued(&ns, "fin").await;
    wait_event(&ns, "Issued", "Issued Client ID").await;
    let requests: Vec<String> =
        operator.metrics().await.lines().filter(|l| l.starts_with("registrar_kube_re")).map(str::to_owned).collect();
    assert_eq!(operator.writes().await, 4.0, "claim, Secret, status and Event; no finalizer patch: {requests:?}");

    let reapplied = apply(&ns, &confidential("fin")).await;
    assert_eq!(reapplied.finalizers(), ["registrar.dev/revoke"], "a re-apply without it keeps it");

    // Deleting still revokes: the policy leaves an object being deleted alone.
    ns.api::<AppRegistration>().delete("fin", &DeleteParams::default()).await.expect("delete");
    eventually("the app and its Secret to be gone", TIMEOUT, || async {
        let app_gone = ns.api::<AppRegistration>().get_opt("fin").await.ok()?.is_none();
        let secret_gone = credentials(&ns, "fin-credentials").await.is_none();
        (app_gone && secret_gone).then_some(())
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn an_unchanged_ready_app_costs_no_writes_and_unrelated_secrets_are_not_cached() {
    let (ns, operator) = setup("reg-quiet").await;
    for i in 0..5 {
        let unrelated = Secret {
            metadata: ObjectMeta { name: Some(format!("unrelated-{i}")), ..Default::default() },
            string_data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
            ..Default::default()
        };
        ns.api::<Secret>().create(&PostParams::default(), &unrelated).await.expect("create Secret");
    }
    apply(&ns, &confidential("quiet")).await;
    wait_issued(&ns, "quiet").await;
    // Let the reconciles triggered by registrar's own writes settle: two
    // readings half a second apart agree.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut previous = (
        operator.writes().await,
        operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await,
    );
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = (
            operator.writes().await,
            operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await,
        );
        if now == previous {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the operator did not settle");
        previous = now;
    }

    let writes = operator.writes().await;
    let reconciles = operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await;
    annotate(&ns, "quiet", "e2e.registrar.dev/touch", "1").await;
    eventually("a reconcile of the touched app", TIMEOUT, || async {
        (operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await > reconciles)
            .then_some(())
    })
    .await;
    assert_eq!(operator.writes().await, writes, "reconciling an unchanged Ready app made a write request");
    assert_eq!(operator.metric("registrar_cached_secrets").await, 1.0, "only registrar's Secret is cached");
    ns.delete().await;
}

/// SIGKILL the operator at random moments during 50 concurrent rotations and
/// restart it: every app ends Ready with exactly one rotation, every Secret
/// verifies, no Client ID changed, no duplicate Secret exists.
#[tokio::test]
async fn sigkill_during_concurrent_rotations_loses_nothing() {
    const APPS: usize = 50;
    let (ns, mut operator) = setup("reg-crash").await;
    let names: Vec<String> = (0..APPS).map(|i| format!("crash-{i:02}")).collect();
    let ns_ref = &ns;
    futures::future::join_all(names.iter().map(|n| async move { apply(ns_ref, &confidential(n)).await })).await;
    let issued = futures::future::join_all(names.iter().map(|n| wait_issued(&ns, n))).await;
    let client_ids: Vec<Option<String>> = issued.iter().map(|(a, _)| status(a).client_id).collect();

    futures::future::join_all(names.iter().map(|n| annotate(&ns, n, "registrar.dev/rotate", "crash-1"))).await;
    // Kill after a random number of rotations of this process, four times over.
    for _ in 0..4 {
        let after = 1.0 + f64::from(rand::random::<u8>() % 12);
        let mints = "registrar_secret_mints_total{reason=\"RotateRequested\"}";
        let waited = tokio::time::timeout(Duration::from_secs(10), async {
            while operator.metric(mints).await < after {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let done = operator.metric(mints).await;
        operator.restart().await;
        eprintln!("killed the operator after {done} rotations (aimed at {after})");
        if waited.is_err() {
            break; // every rotation is done: nothing left to interrupt
        }
    }

    for (name, client_id) in names.iter().zip(&client_ids) {
        let app = wait_app(&ns, name, &format!("{name} to finish its rotation"), |a| {
            is_ready(a) && status(a).last_handled_rotate.as_deref() == Some("crash-1")
        })
        .await;
        assert_eq!(&status(&app).client_id, client_id, "{name}: the Client ID never changes");
        assert_eq!(status(&app).secret_version, Some(2), "{name}: one request, one rotation");
        let (app, secret) = wait_issued(&ns, name).await;
        assert_verifies(&app, &secret);
    }
    let secrets = ns.api::<Secret>().list(&ListParams::default().labels("registrar.dev/app")).await.expect("list");
    let mut owners: Vec<String> = secrets.items.iter().map(|s| s.labels()["registrar.dev/app"].clone()).collect();
    owners.sort();
    assert_eq!(owners, names, "exactly one Secret per app");
    ns.delete().await;
}

/// What README.md and the quickstart show works as shown.
#[tokio::test]
async fn examples_become_ready() {
    let (ns, _operator) = setup("reg-examples").await;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let out = control_plane().kubectl().args(["apply", "-n", &ns.name, "-f"]).arg(&examples).output().expect("kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in ["billing-portal", "desktop-app", "reports-worker"] {
        wait_app(&ns, name, &format!("example {name} to be Ready"), is_ready).await;
    }
    let worker = credentials(&ns, "reports-oauth").await.expect("custom Secret name");
    let mut keys: Vec<_> = worker.data.clone().unwrap_or_default().into_keys().collect();
    keys.sort();
    assert_eq!(keys, ["OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET"]);
    assert_eq!(worker.labels().get("team").map(String::as_str), Some("reporting"));
    ns.delete().await;
}

/// Two replicas with leader election: only the leader reconciles; killing it
/// hands over within the lease duration, and a rotation requested during the
/// failover happens exactly once.
#[tokio::test]
async fn killing_the_leader_hands_over_and_rotates_exactly_once() {
    const LEASE_SECONDS: u64 = 4;
    let ns = TestNamespace::new("reg-leader").await;
    install_registrar(&ns.client).await;
    let (mut replicas, leader) = two_replicas(&ns, LEASE_SECONDS).await;
    apply(&ns, &confidential("ha")).await;
    wait_issued(&ns, "ha").await;
    assert_eq!(
        replicas[1 - leader].metric("registrar_reconciliations_total{controller=\"appregistration\"}").await,
        0.0,
        "the standby does not reconcile"
    );

    annotate(&ns, "ha", "registrar.dev/rotate", "failover-1").await;
    replicas[leader].kill();
    let killed_at = tokio::time::Instant::now();
    let standby = &replicas[1 - leader];
    eventually("the standby to take over", Duration::from_secs(LEASE_SECONDS + 10), || async {
        (standby.metric("registrar_leader").await == 1.0).then_some(())
    })
    .await;
    eprintln!("leadership handed over {:?} after the leader was killed (lease {LEASE_SECONDS}s)", killed_at.elapsed());
    let rotated = wait_app(&ns, "ha", "the rotation requested during failover", |a| {
        status(a).last_handled_rotate.as_deref() == Some("failover-1")
    })
    .await;
    assert_eq!(status(&rotated).secret_version, Some(2), "one request, one rotation");
    let (rotated, secret) = wait_issued(&ns, "ha").await;
    assert_verifies(&rotated, &secret);

    // The killed replica comes back as a standby.
    replicas[leader].restart().await;
    assert_eq!(replicas[leader].metric("registrar_leader").await, 0.0);
    ns.delete().await;
}

/// A stop as Kubernetes does it (SIGTERM) ends a leader watching one namespace
/// promptly and cleanly: it gives the lease back, and the standby takes over.
/// (A namespaced operator once waited forever for the OrganizationPolicy
/// requests to end, which end only after it stops: it was killed at the end of
/// the grace period, and the lease ran out instead of being released.)
#[tokio::test]
async fn a_stopped_leader_exits_at_once_and_gives_the_lease_back() {
    let ns = TestNamespace::new("reg-stop").await;
    install_registrar(&ns.client).await;
    let (mut replicas, leader) = two_replicas(&ns, 15).await;
    apply(&ns, &confidential("stop")).await;
    wait_issued(&ns, "stop").await;

    let exit = replicas[leader].terminate(Duration::from_secs(10)).await;
    assert!(exit.success(), "the leader exited with {exit}");
    assert!(replicas[leader].log().contains("released the leader lease"), "the lease was not given back");
    let standby = &replicas[1 - leader];
    eventually("the standby to take over", TIMEOUT, || async {
        (standby.metric("registrar_leader").await == 1.0).then_some(())
    })
    .await;
    ns.delete().await;
}

/// A standby keeps its caches (and the registry it serves) current however
/// many changes it sees: with 4,200 Secrets pointing at an app — each a
/// reconcile request for that app — before the replicas start, both become
/// ready, and the standby still sees an app issued afterwards. (A standby once
/// queued a request for every change to a controller it does not run; past
/// 4,096 the queue was full and its watches stopped: it never became ready, or
/// froze its caches at the 4,096th change.)
#[tokio::test]
async fn a_standby_keeps_its_caches_current_however_many_changes_it_sees() {
    use futures::StreamExt;
    const CHANGES: usize = 4_200;
    let ns = TestNamespace::new("reg-standby").await;
    install_registrar(&ns.client).await;
    let owner = apply(&ns, &confidential("owner")).await;
    let owner_uid = owner.uid().expect("a UID");
    let secrets = ns.api::<Secret>();
    futures::stream::iter(0..CHANGES)
        .map(|i| {
            let secrets = secrets.clone();
            let secret: Secret = serde_json::from_value(json!({
                "metadata": {
                    "name": format!("change-{i}"),
                    "labels": { "registrar.dev/app": "owner" },
                    "ownerReferences": [{
                        "apiVersion": "registrar.dev/v1alpha1", "kind": "AppRegistration", "name": "owner",
                        "uid": owner_uid, "controller": true
                    }]
                }
            }))
            .expect("a Secret");
            async move { secrets.create(&PostParams::default(), &secret).await.expect("create a Secret") }
        })
        .buffer_unordered(64)
        .for_each(|_| async {})
        .await;

    // Both replicas become ready (Operator::start_with waits for it).
    let (replicas, leader) = two_replicas(&ns, 15).await;
    wait_issued(&ns, "owner").await;
    apply(&ns, &confidential("late")).await;
    wait_issued(&ns, "late").await;
    let standby = &replicas[1 - leader];
    eventually("the standby to see both apps Ready", TIMEOUT, || async {
        (standby.metric("registrar_apps{ready=\"True\"}").await == 2.0).then_some(())
    })
    .await;
    assert_eq!(
        standby.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await,
        0.0,
        "the standby does not reconcile"
    );
    ns.delete().await;
}

/// An upgrade: the CRDs re-applied and the operator restarted. Nothing rotates
/// and nothing is written.
#[tokio::test]
async fn reapplying_crds_and_restarting_the_operator_writes_nothing() {
    let (ns, mut operator) = setup("reg-upgrade").await;
    let names: Vec<String> = (0..5).map(|i| format!("keep-{i}")).collect();
    let mut before = Vec::new();
    for name in &names {
        apply(&ns, &confidential(name)).await;
    }
    for name in &names {
        let (app, secret) = wait_issued(&ns, name).await;
        before.push((status(&app), secret.resource_version()));
    }

    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let out = control_plane()
        .kubectl()
        .args(["apply", "--server-side", "--field-manager=upgrade", "--force-conflicts", "-f"])
        .arg(&crds)
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    operator.restart().await;
    eventually("every app to be reconciled by the new process", TIMEOUT, || async {
        (operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await >= names.len() as f64)
            .then_some(())
    })
    .await;

    assert_eq!(operator.writes().await, 0.0, "the restarted operator made write requests");
    assert_eq!(operator.metric("registrar_secret_mints_total{reason=\"RotateRequested\"}").await, 0.0);
    for (name, (status_before, rv_before)) in names.iter().zip(before) {
        let app = ns.api::<AppRegistration>().get(name).await.expect("get");
        assert_eq!(status(&app), status_before, "{name}: status unchanged");
        let secret = credentials(&ns, &format!("{name}-credentials")).await.expect("Secret");
        assert_eq!(secret.resource_version(), rv_before, "{name}: Secret untouched");
    }
    ns.delete().await;
}

/// The resync pass (here every second) reconciles every app again, a safety
/// net for a lost reconcile, and writes nothing when nothing drifted.
#[tokio::test]
async fn the_resync_pass_reconciles_everything_and_writes_nothing() {
    let ns = TestNamespace::new("resync").await;
    install_registrar(&ns.client).await;
    let operator = Operator::start_with(&["--watch-namespace", &ns.name, "--resync-interval", "1s"]).await;
    for name in ["one", "two", "three"] {
        apply(&ns, &confidential(name)).await;
    }
    for name in ["one", "two", "three"] {
        wait_issued(&ns, name).await;
    }
    let reconciles = || operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}");
    // Past the writes of the first mints (their own reconciles included).
    let settled = eventually("a resync pass after the mints", TIMEOUT, || async {
        let (writes, before) = (operator.writes().await, reconciles().await);
        eventually("a pass", TIMEOUT, || async { (reconciles().await >= before + 3.0).then_some(()) }).await;
        (operator.writes().await == writes).then_some(writes)
    })
    .await;
    let before = reconciles().await;
    eventually("three more passes", TIMEOUT, || async { (reconciles().await >= before + 9.0).then_some(()) }).await;
    assert_eq!(operator.writes().await, settled, "passes over apps that did not drift write nothing");
    ns.delete().await;
}
