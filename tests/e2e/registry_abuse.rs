//! The registry API under hostile traffic: callers that hang up, floods of
//! wrong secrets, slow clients, tokens for the wrong audience, callers scoped
//! to one namespace, specs the controller rejected, certificates rotated in
//! place.

use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::PostParams;
use registrar::api::{AppRegistration, GrantType};
use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{
    TestNamespace, allowed_in,
    apps::{apply, confidential, ready_reason, secret_value, status, wait_app, wait_issued},
    eventually, free_port, install_registrar,
    operator::Operator,
    registry::{AUDIENCE, Caller, caller_token, http, registry_operator, service_account_token_for},
    tls::TestCa,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Peak resident memory of a process in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    crate::support::proc_memory_kib(pid, "VmHWM").map_or(0.0, |kib| kib as f64 / 1024.0)
}

/// 200 authentications with fresh wrong secrets, each abandoned right after
/// it is sent: the hashing pool never runs more than its workers, and memory
/// stays bounded (each argon2id hash holds 19 MiB while it runs).
#[tokio::test]
async fn callers_that_hang_up_never_run_more_hashes_than_the_workers() {
    let ns = TestNamespace::new("registry-abort").await;
    install_registrar(&ns.client).await;
    let (operator, port) = registry_operator(&["--watch-namespace", &ns.name, "--registry-hash-workers", "2"]).await;
    let caller = Caller::new(&ns, port).await;
    let mut client_ids = Vec::new();
    for i in 0..10 {
        apply(&ns, &confidential(&format!("api-{i}"))).await;
    }
    for i in 0..10 {
        let (app, secret) = wait_issued(&ns, &format!("api-{i}")).await;
        let client_id = status(&app).client_id.expect("client id");
        // One verification first, so the pool's buffers exist before measuring.
        assert_eq!(caller.authenticate(&client_id, &secret_value(&secret, "client_secret").unwrap()).await.0, 200);
        client_ids.push(client_id);
    }
    let pid = operator.pid().expect("pid");
    let before = peak_rss_mib(pid);

    let requests = (0..200).map(|i| {
        let (token, client_id) = (caller.token.clone(), client_ids[i % client_ids.len()].clone());
        async move {
            use base64::Engine;
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:wrong-{i}"));
            let request = format!(
                "POST /v1/clients/authenticate HTTP/1.1\r\nHost: registry\r\nAuthorization: Basic {basic}\r\n\
                 X-Registry-Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
            );
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
            stream.write_all(request.as_bytes()).await.expect("send");
            // Hang up at once.
        }
    });
    futures::future::join_all(requests).await;
    eventually("every hash to finish", TIMEOUT, || async {
        (operator.metric("registrar_registry_hashes_running").await == 0.0).then_some(())
    })
    .await;
    // The gauges are refreshed every second: one more tick, then read the peak.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let peak = operator.metric("registrar_registry_hashes_running_peak").await;
    let grown = peak_rss_mib(pid) - before;
    eprintln!("200 abandoned authentications: at most {peak} hashes at once, peak RSS +{grown:.1} MiB");
    assert!(peak <= 2.0, "{peak} hashes ran at once with 2 workers");
    assert!(grown < 64.0, "peak RSS grew by {grown:.1} MiB");
    ns.delete().await;
}

/// A flood of wrong secrets for one client, from the same caller: the
/// client is throttled, and another client's first correct verification still
/// succeeds within a second.
#[tokio::test]
async fn a_flood_of_wrong_secrets_for_one_client_does_not_starve_another() {
    let ns = TestNamespace::new("registry-flood").await;
    install_registrar(&ns.client).await;
    let (operator, port) = registry_operator(&["--watch-namespace", &ns.name, "--registry-hash-workers", "1"]).await;
    let caller = Caller::new(&ns, port).await;
    for name in ["victim", "bystander", "baseline"] {
        apply(&ns, &confidential(name)).await;
    }
    let (victim, _) = wait_issued(&ns, "victim").await;
    let (bystander, secret) = wait_issued(&ns, "bystander").await;
    let victim_id = status(&victim).client_id.expect("id");
    let bystander_id = status(&bystander).client_id.expect("id");
    // What a first verification costs on this machine right now, without a
    // flood (other tests may be loading it).
    let (baseline, baseline_secret) = wait_issued(&ns, "baseline").await;
    let started = Instant::now();
    let baseline_id = status(&baseline).client_id.expect("id");
    let (code, _) = caller.authenticate(&baseline_id, &secret_value(&baseline_secret, "client_secret").unwrap()).await;
    assert_eq!(code, StatusCode::OK);
    let unloaded = started.elapsed();

    let flooding = Instant::now();
    let flood = (0..8).map(|w| {
        let (caller, victim_id) = (&caller, victim_id.clone());
        async move {
            let mut answers = Vec::new();
            let mut i = 0;
            while flooding.elapsed() < Duration::from_secs(3) {
                answers.push(caller.authenticate(&victim_id, &format!("wrong-{w}-{i}")).await.0);
                i += 1;
            }
            answers
        }
    });
    let first_verification = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let (code, _) = caller.authenticate(&bystander_id, &secret_value(&secret, "client_secret").unwrap()).await;
        (code, started.elapsed())
    };
    let (answers, (code, took)) = tokio::join!(futures::future::join_all(flood), first_verification);
    let answers: Vec<StatusCode> = answers.into_iter().flatten().collect();
    let throttled = answers.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    eprintln!(
        "flood: {} wrong secrets in 3 s, {throttled} throttled; the other client's first verification took {took:?} \
         ({unloaded:?} without the flood)",
        answers.len()
    );
    assert_eq!(code, StatusCode::OK);
    assert!(took < Duration::from_secs(1) + unloaded, "{took:?}, against {unloaded:?} without the flood");
    assert!(throttled > answers.len() / 2, "{throttled} of {}", answers.len());
    assert!(operator.metric("registrar_registry_verifications_total{reason=\"throttled\"}").await > 0.0);
    let by_route = "registrar_registry_requests_total{route=\"/v1/clients/authenticate\",status=\"429\"}";
    assert!(operator.metric(by_route).await > 0.0, "requests are counted by route pattern and status");
    ns.delete().await;
}

/// Tokens are reviewed for the registry's audience: an apiserver token is no
/// good here, and a registry token is no good at the apiserver.
#[tokio::test]
async fn caller_tokens_must_be_for_the_registrys_audience() {
    let ns = TestNamespace::new("registry-aud").await;
    install_registrar(&ns.client).await;
    let (_operator, port) = registry_operator(&["--watch-namespace", &ns.name]).await;
    let allowed = Caller::new(&ns, port).await;
    apply(&ns, &confidential("api")).await;
    let (app, _) = wait_issued(&ns, "api").await;
    let client_id = status(&app).client_id.expect("id");
    assert_eq!(allowed.lookup_issued(&client_id).await.0, StatusCode::OK);

    // The same identity, with a token for the apiserver's own audience.
    let sa = format!("system:serviceaccount:{}:authz", ns.name);
    let apiserver_token = {
        use k8s_openapi::api::{
            authentication::v1::{TokenRequest, TokenRequestSpec},
            core::v1::ServiceAccount,
        };
        let request = TokenRequest { spec: Some(TokenRequestSpec::default()), ..Default::default() };
        ns.api::<ServiceAccount>()
            .create_token_request("authz", &PostParams::default(), &request)
            .await
            .expect("token")
            .status
            .and_then(|s| s.token)
            .expect("a token")
    };
    let url = format!("http://127.0.0.1:{port}/v1/clients/{client_id}");
    let answer = http().get(&url).bearer_auth(&apiserver_token).send().await.expect("get");
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{sa}'s apiserver token is refused here");

    // And the registry token at the apiserver.
    let apiserver = crate::support::control_plane().server().to_owned();
    let with_registry_token = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client")
        .get(format!("{apiserver}/api/v1/namespaces/{}/secrets", ns.name))
        .bearer_auth(&allowed.token)
        .send()
        .await
        .expect("apiserver");
    assert_eq!(with_registry_token.status(), StatusCode::UNAUTHORIZED, "a registry token is no good at the apiserver");
    ns.delete().await;
}

/// A caller bound to the registry in namespace A (a RoleBinding) looks up,
/// authenticates and checks A's clients only, and reads A's catalog only; a
/// ClusterRoleBinding reaches every namespace.
#[tokio::test]
async fn a_caller_bound_in_one_namespace_reaches_that_namespaces_clients_only() {
    let a = TestNamespace::new("registry-ns-a").await;
    install_registrar(&a.client).await;
    let b = TestNamespace::new("registry-ns-b").await;
    // Both namespaces, and nothing of the other tests running alongside.
    let run = format!("{:08x}", rand::random::<u32>());
    let (_operator, port) = registry_operator(&["--selector", &format!("e2e.registrar.dev/run={run}")]).await;
    for ns in [&a, &b] {
        let mut app = confidential("api");
        app.metadata.labels = Some([("e2e.registrar.dev/run".to_string(), run.clone())].into());
        app.spec.scope = registrar::api::Scope::Group;
        apply(ns, &app).await;
    }
    let (app_a, secret_a) = wait_issued(&a, "api").await;
    let (app_b, secret_b) = wait_issued(&b, "api").await;
    let (id_a, id_b) = (status(&app_a).client_id.expect("id"), status(&app_b).client_id.expect("id"));

    // A Role-scoped caller: the registry's ClusterRole, bound in A only.
    let token = caller_bound_in(&a).await;
    let scoped = Caller { base: format!("http://127.0.0.1:{port}"), token, http: http() };
    let secret = |s: &k8s_openapi::api::core::v1::Secret| secret_value(s, "client_secret").expect("secret");
    assert_eq!(scoped.lookup(&id_a).await.0, StatusCode::OK);
    assert_eq!(scoped.lookup(&id_b).await.0, StatusCode::FORBIDDEN);
    assert_eq!(scoped.authenticate(&id_a, &secret(&secret_a)).await.0, StatusCode::OK);
    assert_eq!(scoped.authenticate(&id_b, &secret(&secret_b)).await.0, StatusCode::FORBIDDEN);
    let check = |id: &str| {
        let (scoped, id) = (&scoped, id.to_owned());
        async move {
            scoped
                .http
                .post(format!("{}/v1/clients/{id}/authorize-check", scoped.base))
                .bearer_auth(&scoped.token)
                .json(&json!({ "redirect_uri": "https://app.example.com/callback", "group": "x" }))
                .send()
                .await
                .expect("check")
                .status()
        }
    };
    assert_eq!(check(&id_a).await, StatusCode::OK);
    assert_eq!(check(&id_b).await, StatusCode::FORBIDDEN);
    let catalog = |ns: &str| {
        let (scoped, ns) = (&scoped, ns.to_owned());
        async move {
            scoped
                .http
                .get(format!("{}/v1/catalog?namespace={ns}", scoped.base))
                .bearer_auth(&scoped.token)
                .send()
                .await
                .expect("catalog")
                .status()
        }
    };
    assert_eq!(catalog(&a.name).await, StatusCode::OK);
    assert_eq!(catalog(&b.name).await, StatusCode::FORBIDDEN);

    // A cluster-wide caller reaches both.
    let everywhere = Caller::new(&b, port).await;
    assert_eq!(everywhere.lookup(&id_a).await.0, StatusCode::OK);
    assert_eq!(everywhere.lookup(&id_b).await.0, StatusCode::OK);
    a.delete().await;
    b.delete().await;
}

/// An edit the controller rejects (InvalidSpec) changes nothing the registry
/// serves: it keeps answering with the last accepted spec until it is fixed.
#[tokio::test]
async fn the_registry_serves_the_last_accepted_spec() {
    let ns = TestNamespace::new("registry-accepted").await;
    install_registrar(&ns.client).await;
    let (_operator, port) = registry_operator(&["--watch-namespace", &ns.name]).await;
    let caller = Caller::new(&ns, port).await;
    let mut app = confidential("api");
    app.spec.grant_types = Some(vec![GrantType::AuthorizationCode]);
    apply(&ns, &app).await;
    let (issued, _) = wait_issued(&ns, "api").await;
    let id = status(&issued).client_id.expect("id");

    let mut bad = app.clone();
    bad.spec.redirect_uris = vec!["https://app.example.com/callback/../admin".into()];
    bad.spec.display_name = "Renamed while invalid".into();
    apply(&ns, &bad).await;
    wait_app(&ns, "api", "InvalidSpec", |a: &AppRegistration| {
        ready_reason(a).is_some_and(|(_, r, _)| r == "InvalidSpec")
    })
    .await;
    let (code, view) = caller.lookup(&id).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(view["redirectUris"], json!(["https://app.example.com/callback"]), "{view}");
    assert_eq!(view["displayName"], json!("App api"));
    assert_eq!(view["servedGeneration"], json!(1));
    let check = |uri: &str| caller.authorize(&id, json!({ "redirect_uri": uri, "group": ns.name, "scope": "read" }));
    assert_eq!(check("https://app.example.com/callback").await["allowed"], json!(true));
    assert_eq!(check("https://app.example.com/callback/../admin").await["reason"], json!("redirect_mismatch"));

    apply(&ns, &app).await;
    wait_app(&ns, "api", "fixed", |a: &AppRegistration| ready_reason(a).is_some_and(|(s, _, _)| s == "True")).await;
    // The registry reads the operator's cache, which may be a moment behind the apiserver.
    eventually("the fixed spec to be served", TIMEOUT, || async {
        (caller.lookup(&id).await.1["servedGeneration"] == json!(3)).then_some(())
    })
    .await;
    ns.delete().await;
}

/// Slow clients cannot hold the server: a request's headers must arrive
/// within the deadline, and connections beyond the limit are closed at once.
#[tokio::test]
async fn slow_clients_cannot_hold_the_server() {
    let ns = TestNamespace::new("registry-slow").await;
    install_registrar(&ns.client).await;
    let (operator, port) = registry_operator(&[
        "--watch-namespace",
        &ns.name,
        "--registry-max-connections",
        "4",
        "--registry-header-read-timeout",
        "1s",
    ])
    .await;
    let caller = Caller::new(&ns, port).await;
    // Four connections that never finish their headers.
    let mut slow = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.write_all(b"GET /v1/catalog?namespace=x HTTP/1.1\r\nHost: registry\r\n").await.expect("send");
        slow.push(stream);
    }
    eventually("the four slow connections to be held", TIMEOUT, || async {
        (operator.metric("registrar_registry_connections").await == 4.0).then_some(())
    })
    .await;
    // A fifth is closed at once.
    let mut fifth = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let _ = fifth.write_all(b"GET /v1/catalog?namespace=x HTTP/1.1\r\nHost: registry\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), fifth.read(&mut buf)).await.expect("closed, not hanging");
    assert!(matches!(read, Ok(0) | Err(_)), "the fifth connection is refused: {read:?}");
    assert_eq!(operator.metric("registrar_registry_connections_refused_total").await, 1.0);
    // The slow ones are closed once their headers are late.
    for stream in &mut slow {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
        assert!(read.is_ok(), "a slow connection was held open past the header deadline");
    }
    drop(slow);
    let answer = eventually("the registry to answer again", TIMEOUT, || async {
        let (code, _) = caller.lookup("nobody").await;
        (code == StatusCode::NOT_FOUND).then_some(code)
    })
    .await;
    assert_eq!(answer, StatusCode::NOT_FOUND);
    ns.delete().await;
}

/// A certificate and key replaced in place under a running operator (as
/// cert-manager rotates a mounted Secret) are served without a restart.
#[tokio::test]
async fn the_registry_reloads_its_certificate_when_the_files_change() {
    let ns = TestNamespace::new("registry-reload").await;
    install_registrar(&ns.client).await;
    let dir = tempdir("registry-reload");
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let first = TestCa::new("first");
    first.issue(&cert, &key);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _operator = Operator::start_with(&[
        "--watch-namespace",
        &ns.name,
        "--registry-addr",
        &addr,
        "--registry-tls-cert",
        &cert.display().to_string(),
        "--registry-tls-key",
        &key.display().to_string(),
    ])
    .await;
    let token = caller_token(&ns, "authz", true).await;
    let url = format!("https://127.0.0.1:{port}/v1/clients/nobody");
    let answers = |ca: &TestCa| {
        let client = ca.client();
        let (url, token) = (url.clone(), token.clone());
        async move { client.get(&url).bearer_auth(&token).send().await.ok().map(|r| r.status()) }
    };
    let status = eventually("the first certificate to be served", TIMEOUT, || answers(&first)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let second = TestCa::new("second");
    second.issue(&cert, &key);
    let rotated = Instant::now();
    eventually("the second certificate to be served", TIMEOUT, || answers(&second)).await;
    eprintln!("a replaced certificate was served {:?} after the files changed", rotated.elapsed());
    assert_eq!(answers(&first).await, None, "the first CA no longer verifies the registry");
    let _ = std::fs::remove_dir_all(&dir);
    ns.delete().await;
}

fn tempdir(prefix: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{:08x}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// No oracle: a caller allowed in namespace A only, and a caller allowed
/// nowhere, get the same answers — status and body — for a Client ID held in
/// namespace B, a revoked one and one that never existed, from every endpoint
/// that takes a Client ID. A caller allowed everywhere gets the true answers.
#[tokio::test]
async fn callers_learn_nothing_of_client_ids_outside_their_namespaces() {
    let a = TestNamespace::new("oracle-a").await;
    install_registrar(&a.client).await;
    let b = TestNamespace::new("oracle-b").await;
    let run = format!("{:08x}", rand::random::<u32>());
    let (_operator, port) = registry_operator(&["--selector", &format!("e2e.registrar.dev/run={run}")]).await;
    let labelled = |name: &str| {
        let mut app = confidential(name);
        app.metadata.labels = Some([("e2e.registrar.dev/run".to_string(), run.clone())].into());
        app
    };
    apply(&b, &labelled("held")).await;
    apply(&b, &labelled("gone")).await;
    let (held, _) = wait_issued(&b, "held").await;
    let (gone, _) = wait_issued(&b, "gone").await;
    let (held, revoked) = (status(&held).client_id.expect("id"), status(&gone).client_id.expect("id"));
    b.api::<AppRegistration>().delete("gone", &Default::default()).await.expect("delete");
    let everywhere = Caller::new(&b, port).await;
    eventually("the revocation to reach the registry", TIMEOUT, || async {
        (everywhere.lookup(&revoked).await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    let unknown = format!("never-issued-{run}");

    // Scoped to A (the registry's ClusterRole bound there), and allowed nowhere.
    let scoped_token = caller_bound_in(&a).await;
    let base = format!("http://127.0.0.1:{port}");
    let scoped = Caller { base: base.clone(), token: scoped_token, http: http() };
    let nowhere = Caller { base, token: service_account_token_for(&a, "nobody", Some(AUDIENCE)).await, http: http() };

    // Every endpoint that takes a Client ID, as (status, body).
    let answers = |caller: &Caller, id: &str| {
        let (caller, id) = (caller.clone(), id.to_owned());
        async move {
            let body = |r: reqwest::Response| async move { (r.status(), r.text().await.unwrap_or_default()) };
            let lookup = caller.http.get(format!("{}/v1/clients/{id}", caller.base)).bearer_auth(&caller.token);
            let authenticate = caller
                .http
                .post(format!("{}/v1/clients/authenticate", caller.base))
                .header("x-registry-authorization", format!("Bearer {}", caller.token))
                .basic_auth(&id, Some("some-secret-0123456789abcdef0123456789"));
            let check = caller
                .http
                .post(format!("{}/v1/clients/{id}/authorize-check", caller.base))
                .bearer_auth(&caller.token)
                .json(&json!({ "redirect_uri": "https://app.example.com/callback", "group": "x" }));
            let hook =
                caller.http.post(format!("{}/v1/hooks/hydra/token", caller.base)).bearer_auth(&caller.token).json(
                    &json!({ "session": { "extra": { "registrar_group": "x" } }, "request": { "client_id": id } }),
                );
            let forward = caller
                .http
                .get(format!("{}/v1/forward-auth", caller.base))
                .header("x-registry-authorization", format!("Bearer {}", caller.token))
                .basic_auth(&id, Some("some-secret-0123456789abcdef0123456789"));
            let mut all = Vec::new();
            for request in [lookup, authenticate, check, hook, forward] {
                all.push(body(request.send().await.expect("request")).await);
            }
            all
        }
    };
    for (who, caller) in [("a caller of namespace A", &scoped), ("a caller allowed nowhere", &nowhere)] {
        let of_held = answers(caller, &held).await;
        assert!(of_held.iter().all(|(s, _)| *s == StatusCode::FORBIDDEN), "{who}: {of_held:?}");
        assert_eq!(answers(caller, &revoked).await, of_held, "{who}: a revoked Client ID reads as a held one");
        assert_eq!(answers(caller, &unknown).await, of_held, "{who}: an unknown Client ID reads as a held one");
    }
    // Allowed everywhere: the true answers.
    let true_answers = answers(&everywhere, &unknown).await;
    assert_eq!(true_answers[0].0, StatusCode::NOT_FOUND, "{true_answers:?}");
    assert_eq!(true_answers[3].0, StatusCode::NO_CONTENT, "the hook passes a client that is not registrar's");
    let revoked_answers = answers(&everywhere, &revoked).await;
    assert!(revoked_answers[2].1.contains("revoked") && revoked_answers[3].0 == StatusCode::FORBIDDEN);
    a.delete().await;
    b.delete().await;
}

/// 300 requests with random bearer tokens from one address cost the apiserver
/// a bounded number of TokenReviews (a burst of 10, then 2 a second); the rest
/// are turned away with 429 and Retry-After.
#[tokio::test]
async fn random_tokens_cannot_make_the_registry_flood_the_apiserver() {
    let ns = TestNamespace::new("registry-tokens").await;
    install_registrar(&ns.client).await;
    let (operator, port) = registry_operator(&["--watch-namespace", &ns.name]).await;
    let http = http();
    let reviews = || operator.metric("registrar_registry_tokenreview_seconds_count");
    let before = reviews().await;
    let started = Instant::now();
    let mut answers = Vec::new();
    for batch in 0..30 {
        let requests = (0..10).map(|i| {
            let token = format!("random-{batch}-{i}-{:016x}", rand::random::<u64>());
            let http = http.clone();
            async move {
                let response = http
                    .get(format!("http://127.0.0.1:{port}/v1/clients/anything"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("request");
                (response.status(), response.headers().contains_key("retry-after"))
            }
        });
        answers.extend(futures::future::join_all(requests).await);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let made = reviews().await - before;
    eprintln!("300 random tokens in {elapsed:.2} s: {made} TokenReviews");
    assert!(made <= 10.0 + 2.0 * elapsed + 2.0, "{made} TokenReviews in {elapsed:.2} s");
    assert!(answers.iter().all(|(s, _)| [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(s)));
    assert!(answers.iter().filter(|(s, retry)| *s == StatusCode::TOO_MANY_REQUESTS && *retry).count() >= 200);
    assert!(operator.metric("registrar_registry_callers_throttled_total").await >= 200.0);
    ns.delete().await;
}

/// A token of ServiceAccount `as-a` in `ns`, bound there (a RoleBinding) to the
/// registry's ClusterRole: a caller allowed in that namespace only.
async fn caller_bound_in(ns: &TestNamespace) -> String {
    let role = format!("registry-{}", ns.name);
    let cluster_role: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(json!({
        "metadata": { "name": role },
        "rules": [{ "apiGroups": ["registrar.dev"], "resources": ["registry"], "verbs": ["get", "create"] }]
    }))
    .expect("role");
    kube::Api::<k8s_openapi::api::rbac::v1::ClusterRole>::all(ns.client.clone())
        .create(&PostParams::default(), &cluster_role)
        .await
        .expect("ClusterRole");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "as-a" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
        "subjects": [{ "kind": "ServiceAccount", "name": "as-a", "namespace": ns.name }]
    }))
    .expect("binding");
    ns.api::<RoleBinding>().create(&PostParams::default(), &binding).await.expect("RoleBinding");
    let token = service_account_token_for(ns, "as-a", Some(AUDIENCE)).await;
    let user = format!("system:serviceaccount:{}:as-a", ns.name);
    eventually("the RoleBinding to take effect", TIMEOUT, || async {
        allowed_in(&ns.client, Some(&ns.name), &user, "registrar.dev", "registry", "create").await.then_some(())
    })
    .await;
    token
}
