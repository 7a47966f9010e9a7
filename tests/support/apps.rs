//! Helpers for AppRegistrations in tests: a sample app, GitOps-style apply,
//! waiting for Ready and for the credentials, Events, and what must never leak.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Secret};
use kube::{ResourceExt, api::ListParams};
use registrar::{
    api::{AppRegistration, AppRegistrationSpec, AppRegistrationStatus, Scope},
    credentials::{ClientSecret, verify_now},
};

use super::{TestNamespace, eventually, gitops_apply, operator::Operator};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A confidential Organization app with one redirect URI and one API scope.
pub fn confidential(name: &str) -> AppRegistration {
    AppRegistration::new(
        name,
        AppRegistrationSpec {
            display_name: format!("App {name}"),
            scope: Scope::Organization,
            redirect_uris: vec!["https://app.example.com/callback".into()],
            oauth_scopes: vec!["read".into()],
            ..Default::default()
        },
    )
}

pub async fn apply(ns: &TestNamespace, app: &AppRegistration) -> AppRegistration {
    gitops_apply(&ns.api(), app).await.unwrap_or_else(|e| panic!("apply {}: {e}", app.name_any()))
}

/// Waits until the app is Ready for its current generation and `check` holds.
pub async fn wait_app(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    check: impl Fn(&AppRegistration) -> bool,
) -> AppRegistration {
    let apps = ns.api::<AppRegistration>();
    eventually(what, TIMEOUT, || async {
        let app = apps.get(name).await.ok()?;
        let status = app.status.as_ref()?;
        (status.observed_generation == app.metadata.generation && check(&app)).then_some(app)
    })
    .await
}

pub fn ready_reason(app: &AppRegistration) -> Option<(String, String, String)> {
    let c = app.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub fn is_ready(app: &AppRegistration) -> bool {
    ready_reason(app).is_some_and(|(s, _, _)| s == "True")
}

pub fn status(app: &AppRegistration) -> AppRegistrationStatus {
    app.status.clone().unwrap_or_default()
}

pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

pub async fn credentials(ns: &TestNamespace, name: &str) -> Option<Secret> {
    ns.api::<Secret>().get_opt(name).await.expect("get Secret")
}

/// Asserts the Secret's client secret verifies against status and returns it.
pub fn assert_verifies(app: &AppRegistration, secret: &Secret) -> String {
    let st = status(app);
    assert_eq!(secret_value(secret, "client_id"), st.client_id, "Client ID in the Secret equals status");
    let plain = secret_value(secret, "client_secret").expect("client_secret key");
    let hash = st.secret_hash.expect("secretHash");
    let plain_secret = ClientSecret::from_bytes(plain.as_bytes()).expect("utf-8");
    assert!(
        verify_now(&plain_secret, &hash).expect("valid hash"),
        "the Secret's secret verifies against status.secretHash"
    );
    // Keyed (an HMAC under registrar's key): 8 hex digits, not the plain SHA-256's.
    let fingerprint = st.secret_fingerprint.expect("a fingerprint");
    assert!(fingerprint.len() == 8 && fingerprint.chars().all(|c| c.is_ascii_hexdigit()), "{fingerprint}");
    assert_ne!(fingerprint, plain_secret.plain_fingerprint(), "the fingerprint is keyed");
    plain
}

pub async fn wait_issued(ns: &TestNamespace, name: &str) -> (AppRegistration, Secret) {
    let app = wait_app(ns, name, &format!("{name} to be Ready"), is_ready).await;
    let secret = eventually("the credentials Secret", TIMEOUT, || async {
        let s = credentials(ns, &format!("{name}-credentials")).await?;
        let version = s.annotations().get("registrar.dev/secret-version").cloned();
        (version == status(&app).secret_version.map(|v| v.to_string())).then_some(s)
    })
    .await;
    (app, secret)
}

pub async fn events(ns: &TestNamespace) -> Vec<Event> {
    ns.api::<Event>().list(&ListParams::default()).await.expect("list events").items
}

pub async fn wait_event(ns: &TestNamespace, reason: &str, note_contains: &str) -> Event {
    let what = format!("a {reason} Event mentioning {note_contains:?} (events so far: {:?})", event_summary(ns).await);
    eventually(&what, TIMEOUT, || async {
        events(ns).await.into_iter().find(|e| {
            e.reason.as_deref() == Some(reason) && e.message.as_deref().unwrap_or_default().contains(note_contains)
        })
    })
    .await
}

pub async fn event_summary(ns: &TestNamespace) -> Vec<String> {
    events(ns)
        .await
        .into_iter()
        .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// No secret a test saw minted appears in the operator's log, in any Event or
/// in any AppRegistration's status.
pub async fn assert_no_leak(ns: &TestNamespace, operator: &Operator, secrets: &[String]) {
    let log = operator.log();
    let events = serde_json::to_string(&events(ns).await).expect("serialize events");
    let apps =
        serde_json::to_string(&ns.api::<AppRegistration>().list(&ListParams::default()).await.expect("list").items)
            .expect("serialize apps");
    for (i, s) in secrets.iter().enumerate() {
        assert!(!log.contains(s.as_str()), "secret #{i} appears in the operator log");
        assert!(!events.contains(s.as_str()), "secret #{i} appears in an Event");
        assert!(!apps.contains(s.as_str()), "secret #{i} appears in an AppRegistration");
    }
    assert!(!log.is_empty(), "the operator log was captured");
}
