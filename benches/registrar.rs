//! The benchmark harness: registrar against the limits of the machine it runs on.
//!
//!   make bench                         # BENCH_APPS=10000, writes docs/benchmarks.md
//!   BENCH_APPS=200 make bench-smoke    # what CI runs, so the harness cannot rot
//!
//! One run measures, on the project's own control plane (etcd, kube-apiserver,
//! kube-controller-manager) and a release build of the operator:
//! the ceilings (apiserver+etcd write rate and CPU per write, argon2id hash rate
//! and CPU per hash), bulk registration, steady-state latencies, a restart, the
//! operator's peak memory, consent fan-out on revocation, the registry's
//! authenticate throughput from a load generator in a separate process, and
//! the Client ID ledger at BENCH_LEDGER_ENTRIES entries (its size in etcd, and a
//! restart's time, memory and writes).
//! It prints a table; there are no timed assertions.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{
        WatchStreamExt,
        watcher::{self, watcher},
    },
};
use registrar::{
    api::{
        AppConsent, AppConsentSpec, AppRef, AppRegistration, AppRegistrationSpec, ClientIdEntry, Holder, LedgerState,
        OrganizationPolicy, PolicyKind, Scope,
    },
    credentials::{ClientSecret, HashParams, Hasher, SecretOrigin},
};
use serde_json::json;
use support::{TestNamespace, control_plane, install_registrar, operator::Operator};

const CONCURRENCY: usize = 64;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// Peak resident memory of a process in MiB, from /proc.
fn peak_rss_mib(pid: u32) -> f64 {
    support::proc_memory_kib(pid, "VmHWM").map_or(0.0, |kib| kib as f64 / 1024.0)
}

/// Resident memory of a process now, in MiB, from /proc.
fn rss_mib(pid: u32) -> f64 {
    support::proc_memory_kib(pid, "VmRSS").map_or(0.0, |kib| kib as f64 / 1024.0)
}

/// What a process's resident memory is made of now: its own (heap, stacks)
/// and its binary's pages (file-backed: shared, and given back under pressure).
fn rss_split(pid: u32) -> String {
    let mib = |field| support::proc_memory_kib(pid, field).map_or(0.0, |kib| kib as f64 / 1024.0);
    format!("{:.1} MiB own + {:.1} MiB of the binary", mib("RssAnon"), mib("RssFile"))
}

/// The PIDs of the control plane's apiserver and etcd.
fn control_plane_pids() -> Vec<u32> {
    let dir = control_plane().kubeconfig().parent().expect("state dir").display().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default().replace('\0', " ");
        if cmdline.contains(&dir) && (cmdline.contains(" kube-apiserver ") || cmdline.contains(" etcd ")) {
            pids.push(pid);
        }
    }
    pids
}

fn control_plane_cpu() -> f64 {
    control_plane_pids().into_iter().map(cpu_seconds).sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms_f(seconds: f64) -> String {
    format!("{:.2} ms", seconds * 1000.0)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Report {
    rows: Vec<(String, String, String)>,
}

impl Report {
    fn row(&mut self, what: impl Into<String>, value: impl Into<String>, target: impl Into<String>) {
        let (what, value, target) = (what.into(), value.into(), target.into());
        println!("{what:<58} {value:>18}   {target}");
        self.rows.push((what, value, target));
    }
}

fn app(name: &str) -> AppRegistration {
    AppRegistration::new(
        name,
        AppRegistrationSpec {
            display_name: format!("Bench {name}"),
            scope: Scope::Organization,
            redirect_uris: vec!["https://bench.example.com/cb".into()],
            oauth_scopes: vec!["read".into()],
            ..Default::default()
        },
    )
}

async fn apply_app(api: &Api<AppRegistration>, app: &AppRegistration) {
    support::gitops_apply(api, app).await.expect("apply app");
}

fn is_ready(app: &AppRegistration) -> bool {
    app.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Counts, from one watch, the objects in each class (`classify`), and resolves
/// once a class has `target` of them. A watch costs the apiserver one event per
/// change, and one watch serves every class; polling lists of thousands of
/// objects would load the apiserver being measured.
struct Counter {
    counts: tokio::sync::watch::Receiver<BTreeMap<&'static str, usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Counter {
    /// Counts the objects for which `matches` holds.
    fn start<K>(api: Api<K>, matches: impl Fn(&K) -> bool + Send + 'static) -> Self
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
        K::DynamicType: Default,
    {
        Self::classify(api, move |obj| matches(obj).then_some(MATCHING))
    }

    /// Counts the objects of each class `classify` puts them in (`None`: none).
    fn classify<K>(api: Api<K>, classify: impl Fn(&K) -> Option<&'static str> + Send + 'static) -> Self
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
        K::DynamicType: Default,
    {
        let (tx, counts) = tokio::sync::watch::channel(BTreeMap::new());
        let task = tokio::spawn(async move {
            let mut class_of = std::collections::HashMap::new();
            let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => match classify(&obj) {
                        Some(class) => class_of.insert(obj.name_any(), class),
                        None => class_of.remove(&obj.name_any()),
                    },
                    Ok(watcher::Event::Delete(obj)) => class_of.remove(&obj.name_any()),
                    Ok(watcher::Event::Init) => {
                        class_of.clear();
                        None
                    }
                    Ok(watcher::Event::InitDone) | Err(_) => None,
                };
                let mut counts = BTreeMap::new();
                for class in class_of.values() {
                    *counts.entry(*class).or_insert(0) += 1;
                }
                tx.send_replace(counts);
            }
        });
        Counter { counts, task }
    }

    async fn reached(&mut self, what: &str, target: usize, timeout: Duration) {
        self.reached_in(MATCHING, what, target, timeout).await;
    }

    async fn reached_in(&mut self, class: &str, what: &str, target: usize, timeout: Duration) {
        tokio::time::timeout(timeout, self.counts.wait_for(|counts| counts.get(class).copied().unwrap_or(0) >= target))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .expect("the watch ended");
    }
}

/// The class of [`Counter::start`]'s matching objects.
const MATCHING: &str = "matching";

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `check` every `every` until it holds. Checks that list many objects
/// poll slowly, so that the harness does not load the apiserver it measures.
async fn wait_until<F, Fut>(what: &str, timeout: Duration, every: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

const FAST: Duration = Duration::from_millis(10);
const SLOW: Duration = Duration::from_millis(500);

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--load-generator") {
        load_generator(&args[2..]).await;
        return;
    }
    let apps_n = env_usize("BENCH_APPS", 10_000);
    let secrets_n = env_usize("BENCH_SECRETS", apps_n);
    let steady_n = env_usize("BENCH_STEADY", 200.min(apps_n));
    let consents_n = env_usize("BENCH_CONSENTS", 1_000.min(apps_n));
    // BENCH_LEDGER_ENTRIES (default 100,000): the ledger's size at that many entries.
    let registry_seconds = env_usize("BENCH_REGISTRY_SECONDS", 5);
    // Other knobs: BENCH_OPERATOR_ARGS (extra operator flags), BENCH_BULK_ONLY=1
    // (stop after the bulk phase, its memory and a restart's: tuning runs), BENCH_REPORT (write the table there).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = Report { rows: Vec::new() };
    println!("registrar benchmark: {apps_n} apps, {secrets_n} unrelated Secrets, {cores} cores");

    let admin = control_plane().client().await;
    install_registrar(&admin).await;

    // === ceilings === (hashing first, while the control plane is idle: right
    // after 10,000 writes the apiserver and etcd are still busy for a while)
    let hasher = Hasher::new(HashParams::default(), cores).expect("hasher");
    let secret = ClientSecret::mint();
    // Hashes per second on every core at once, for a secret of this origin.
    let measure = |origin: SecretOrigin| {
        let (hasher, secret) = (hasher.clone(), secret.clone());
        async move {
            let window = Duration::from_secs(if origin == SecretOrigin::Minted { 2 } else { 5 });
            let started = Instant::now();
            let mut hashes = 0usize;
            while started.elapsed() < window {
                let batch: Vec<_> = (0..cores * 8).map(|_| hasher.hash(&secret, origin)).collect();
                hashes += futures::future::join_all(batch).await.len();
            }
            let seconds = started.elapsed().as_secs_f64();
            (hashes as f64 / seconds, seconds * cores as f64 / hashes as f64)
        }
    };
    // What mints and first verifications cost: registrar's own secrets.
    let (hash_rate, cpu_per_hash) = measure(SecretOrigin::Minted).await;
    let m = HashParams::MINTED;
    report.row(
        format!(
            "argon2id hash rate on {cores} cores, minted secrets (m={},t={},p={})",
            m.memory_kib, m.iterations, m.parallelism
        ),
        format!("{hash_rate:.0} /s"),
        "ceiling",
    );
    let (chosen_rate, cpu_per_chosen) = measure(SecretOrigin::Chosen).await;
    let p = HashParams::default();
    report.row(
        format!(
            "argon2id hash rate on {cores} cores, chosen secrets (m={},t={},p={})",
            p.memory_kib, p.iterations, p.parallelism
        ),
        format!("{chosen_rate:.0} /s ({:.1} ms CPU each)", cpu_per_chosen * 1000.0),
        "ceiling",
    );
    report.row("CPU per minted hash", format!("{:.3} ms", cpu_per_hash * 1000.0), "ceiling (target < 0.5 ms)");
    let noise = TestNamespace::new("bench-noise").await;
    let secrets = noise.api::<Secret>();
    let cpu_before = control_plane_cpu();
    let started = Instant::now();
    stream::iter(0..secrets_n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let secrets = secrets.clone();
            async move {
                let s = Secret {
                    metadata: ObjectMeta { name: Some(format!("noise-{i}")), ..Default::default() },
                    string_data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
                    ..Default::default()
                };
                secrets.create(&PostParams::default(), &s).await.expect("create Secret");
            }
        })
        .await;
    let write_seconds = started.elapsed().as_secs_f64();
    let write_rate = secrets_n as f64 / write_seconds;
    let cpu_per_write = (control_plane_cpu() - cpu_before) / secrets_n as f64;
    report.row("apiserver+etcd write rate (plain Secrets, 64 in flight)", format!("{write_rate:.0} /s"), "ceiling");
    report.row("apiserver+etcd CPU per write", format!("{:.2} ms", cpu_per_write * 1000.0), "ceiling");

    // === what each kind of write costs the apiserver and etcd (for the profile) ===
    let costs = write_costs(env_usize("BENCH_COST_SAMPLES", 1_000.min(apps_n))).await;
    report.row("apiserver+etcd CPU per AppRegistration create (SSA)", ms_f(costs.create), "profile");
    report.row("apiserver+etcd CPU per AppRegistration metadata patch", ms_f(costs.patch), "profile");
    report.row("apiserver+etcd CPU per AppRegistration status apply (SSA)", ms_f(costs.status), "profile");
    report.row("apiserver+etcd CPU per Client ID ledger claim (create)", ms_f(costs.claim), "profile");

    // === bulk ===
    let ns = TestNamespace::new("bench-apps").await;
    let registry_port = support::free_port();
    let registry_addr = format!("127.0.0.1:{registry_port}");
    // BENCH_OPERATOR_ARGS: extra operator flags, for tuning runs (e.g. "--concurrency 64").
    let extra = std::env::var("BENCH_OPERATOR_ARGS").unwrap_or_default();
    let mut operator_args =
        vec!["--watch-namespace", &ns.name, "--registry-addr", &registry_addr, "--registry-insecure-http"];
    operator_args.extend(extra.split_whitespace());
    let mut operator = Operator::start_with(&operator_args).await;
    // Resident memory with its caches synced and no app yet (the unrelated
    // Secrets are not cached): the base the per-app cost is measured from.
    let rss_without_apps = operator.pid().map_or(0.0, rss_mib);
    let apps = ns.api::<AppRegistration>();
    let mut ready = Counter::start(apps.clone(), is_ready);
    let operator_cpu_before = operator.pid().map_or(0.0, cpu_seconds);
    let control_plane_cpu_before = control_plane_cpu();
    let started = Instant::now();
    stream::iter(0..apps_n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let apps = apps.clone();
            async move { apply_app(&apps, &app(&format!("app-{i}"))).await }
        })
        .await;
    ready.reached("every app Ready", apps_n, Duration::from_secs(3600)).await;
    drop(ready);
    let bulk = started.elapsed().as_secs_f64();
    let operator_cpu = operator.pid().map_or(0.0, cpu_seconds) - operator_cpu_before;
    let control_plane_cpu = control_plane_cpu() - control_plane_cpu_before;
    let writes_per_app = operator.writes().await / apps_n as f64;
    let combined = apps_n as f64 * (writes_per_app * cpu_per_write + cpu_per_hash) / cores as f64;
    let limit = combined.max(apps_n as f64 * writes_per_app / write_rate).max(apps_n as f64 / hash_rate);
    report.row(
        "operator writes per app (ledger claim, Secret, status, Event; finalizer if no policy)",
        format!("{writes_per_app:.2}"),
        "input",
    );
    report.row(
        format!("limit for {apps_n} apps = max(N*(w*cpu_w + cpu_h)/cores, ceilings)"),
        format!("{limit:.1} s"),
        "input",
    );
    report.row(format!("bulk: {apps_n} apps applied (SSA, 64 in flight) to all Ready"), format!("{bulk:.1} s"), "");
    report.row(
        "bulk time / limit",
        format!("{:.2}", bulk / limit),
        if bulk / limit <= 1.3 { "≤ 1.3: met" } else { "≤ 1.3: MISSED" },
    );
    report.row(
        "bulk: CPU of the operator, per app",
        format!("{:.1} ms", operator_cpu * 1000.0 / apps_n as f64),
        "profile",
    );
    report.row(
        "bulk: CPU of apiserver+etcd, per app",
        format!("{:.1} ms", control_plane_cpu * 1000.0 / apps_n as f64),
        "profile",
    );
    // The same formula with every request an app costs priced as measured above:
    // the create, the ledger claim, the status apply, and the Secret and Event
    // writes at the plain write price (the finalizer patch too, when the
    // operator had to make it).
    let finalizer_patches = (writes_per_app - 4.0).max(0.0);
    let priced = costs.create
        + costs.claim
        + costs.status
        + finalizer_patches * costs.patch
        + 2.0 * cpu_per_write
        + cpu_per_hash;
    report.row(
        "limit with measured write prices = N*(create + claim + status + Secret + Event + hash)/cores",
        format!("{:.1} s", apps_n as f64 * priced / cores as f64),
        "profile",
    );
    report.row(
        "bulk: CPU used of all cores",
        format!("{:.0} %", (operator_cpu + control_plane_cpu) * 100.0 / (bulk * cores as f64)),
        "profile",
    );
    let sample = apps.get("app-0").await.expect("app-0");
    let creds = ns.api::<Secret>().get("app-0-credentials").await.expect("Secret");
    let creds_object = creds.clone();
    let plain = ClientSecret::from_bytes(&creds.data.expect("data")["client_secret"].0).expect("utf-8");
    assert!(
        registrar::credentials::verify_now(
            &plain,
            sample.status.as_ref().and_then(|s| s.secret_hash.as_deref()).expect("hash")
        )
        .expect("hash")
    );

    // The same requests without the operator: what the apiserver alone needs.
    let replay_samples = env_usize("BENCH_COST_SAMPLES", 1_000.min(apps_n));
    let replayed = apps_n as f64 * replay(replay_samples, &sample, &creds_object).await;
    report.row(
        format!("limit replayed = the operator's requests for {replay_samples} apps sent by the harness, × N/{replay_samples}"),
        format!("{replayed:.1} s"),
        "input",
    );
    report.row(
        "bulk time / limit replayed",
        format!("{:.2}", bulk / replayed),
        if bulk / replayed <= 1.2 { "≤ 1.2: met" } else { "≤ 1.2: MISSED" },
    );

    if std::env::var("BENCH_BULK_ONLY").is_ok_and(|v| v == "1") {
        // A tuning run: the ceilings, the bulk, and the memory it left and a restart's.
        let rss = operator.pid().map_or(0.0, peak_rss_mib);
        let rss_now = operator.pid().map_or(0.0, rss_mib);
        let per_app_kib = (rss_now - rss_without_apps) * 1024.0 / apps_n.max(1) as f64;
        report.row("operator peak RSS", format!("{rss:.1} MiB"), "profile");
        report.row(
            "operator memory per app",
            format!("{per_app_kib:.1} KiB ({rss_without_apps:.1} → {rss_now:.1} MiB)"),
            "profile",
        );
        report.row("operator RSS now", operator.pid().map_or_else(String::new, rss_split), "profile");
        operator.restart().await;
        wait_until("every app reconciled again", Duration::from_secs(3600), SLOW, || {
            let operator = &operator;
            async move {
                operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await
                    >= apps_n as f64
            }
        })
        .await;
        let restarted_rss = operator.pid().map_or(0.0, peak_rss_mib);
        report.row("restart: peak RSS", format!("{restarted_rss:.1} MiB"), "profile");
        drop(operator);
        ns.delete().await;
        noise.delete().await;
        return;
    }

    // === steady state ===
    let secrets_api = ns.api::<Secret>();
    let mut create_latency = Vec::new();
    for i in 0..steady_n {
        let name = format!("steady-{i}");
        let started = Instant::now();
        apply_app(&apps, &app(&name)).await;
        let secret_name = format!("{name}-credentials");
        wait_until("the Secret", Duration::from_secs(60), FAST, || {
            let secrets_api = secrets_api.clone();
            let secret_name = secret_name.clone();
            async move { secrets_api.get_opt(&secret_name).await.ok().flatten().is_some() }
        })
        .await;
        create_latency.push(started.elapsed());
    }
    create_latency.sort();
    let p50 = percentile(&create_latency, 0.5);
    let p99 = percentile(&create_latency, 0.99);
    report.row(
        format!("apply → Secret present, {steady_n} one at a time, p50"),
        ms(p50),
        if p50 < Duration::from_millis(100) { "< 100 ms: met" } else { "< 100 ms: MISSED" },
    );
    report.row(
        "apply → Secret present, p99",
        ms(p99),
        if p99 < Duration::from_millis(250) { "< 250 ms: met" } else { "< 250 ms: MISSED" },
    );
    let mut rotate_latency = Vec::new();
    for i in 0..steady_n {
        let name = format!("steady-{i}");
        let started = Instant::now();
        let patch = Patch::Merge(json!({ "metadata": { "annotations": { "registrar.dev/rotate": "bench" } } }));
        apps.patch(&name, &PatchParams::default(), &patch).await.expect("rotate");
        wait_until("the rotation", Duration::from_secs(60), FAST, || {
            let (apps, secrets_api, name) = (apps.clone(), secrets_api.clone(), name.clone());
            async move {
                let status_done = apps.get(&name).await.ok().and_then(|a| a.status?.secret_version) == Some(2);
                let secret_done = secrets_api.get(&format!("{name}-credentials")).await.ok().is_some_and(|s| {
                    s.annotations().get("registrar.dev/secret-version").map(String::as_str) == Some("2")
                });
                status_done && secret_done
            }
        })
        .await;
        rotate_latency.push(started.elapsed());
    }
    rotate_latency.sort();
    let p50 = percentile(&rotate_latency, 0.5);
    let p99 = percentile(&rotate_latency, 0.99);
    report.row(
        "annotate-rotate → new Secret and status, p50",
        ms(p50),
        if p50 < Duration::from_millis(100) { "< 100 ms: met" } else { "< 100 ms: MISSED" },
    );
    report.row(
        "annotate-rotate → new Secret and status, p99",
        ms(p99),
        if p99 < Duration::from_millis(250) { "< 250 ms: met" } else { "< 250 ms: MISSED" },
    );

    // === memory ===
    let rss = operator.pid().map_or(0.0, peak_rss_mib);
    report.row(
        format!("operator peak RSS ({} apps, {secrets_n} unrelated Secrets)", apps_n + steady_n),
        format!("{rss:.1} MiB"),
        if rss < 48.0 { "< 48 MiB: met" } else { "< 48 MiB: MISSED" },
    );
    let rss_now = operator.pid().map_or(0.0, rss_mib);
    let per_app_kib = (rss_now - rss_without_apps) * 1024.0 / (apps_n + steady_n).max(1) as f64;
    report.row(
        "operator memory per app (RSS now − RSS before the first app, per app)",
        format!("{per_app_kib:.1} KiB ({rss_without_apps:.1} → {rss_now:.1} MiB)"),
        "profile",
    );
    report.row("operator RSS now", operator.pid().map_or_else(String::new, rss_split), "profile");
    report.row(
        "Secrets in the operator's cache",
        format!("{}", operator.metric("registrar_cached_secrets").await),
        "only registrar's",
    );

    // === registry ===
    let registry_token = support::registry::caller_token(&ns, "bench", true).await;
    let client_id = sample.status.as_ref().and_then(|s| s.client_id.clone()).expect("client id");
    // First verifications of distinct apps' right secrets: every one needs argon2id.
    let needed = ((hash_rate * registry_seconds as f64 * 2.0) as usize).min(apps_n);
    let reserved = (needed / 4).min(100);
    let pairs = first_verifications(&ns, 0..needed - reserved).await;
    let flood_pairs = first_verifications(&ns, needed - reserved..needed).await;
    let generate = |args: Vec<String>| {
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args(["--load-generator", &format!("http://{registry_addr}"), &registry_token])
            .args([registry_seconds.to_string()])
            .args(args)
            .output()
            .expect("load generator");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        serde_json::from_str::<serde_json::Value>(text.trim()).unwrap_or(json!({}))
    };
    let cached = generate(vec!["cached".into(), client_id.clone(), plain.expose().to_owned()]);
    report.row(
        "registry authenticate (cached), verified answers",
        format!("{:.0} /s", cached["rate"].as_f64().unwrap_or(0.0)),
        "",
    );
    report.row(
        "registry authenticate (cached), p99",
        format!("{:.1} ms", cached["p99_ms"].as_f64().unwrap_or(0.0)),
        "",
    );
    let uncached = generate(vec!["uncached".into(), pairs.display().to_string()]);
    let uncached_rate = uncached["rate"].as_f64().unwrap_or(0.0);
    report.row("registry authenticate (first verifications), verified", format!("{uncached_rate:.0} /s"), "");
    report.row(
        "registry: first verifications / hash ceiling",
        format!("{:.2}", uncached_rate / hash_rate),
        if uncached_rate / hash_rate >= 0.9 { "≥ 0.9: met" } else { "≥ 0.9: MISSED" },
    );
    report.row(
        "registry authenticate (first verifications), p99 / shed",
        format!("{:.1} ms / {}", uncached["p99_ms"].as_f64().unwrap_or(0.0), uncached["shed"].as_u64().unwrap_or(0)),
        "",
    );
    // A flood of wrong secrets for one client, while other clients verify for the first time.
    let flood = generate(vec!["flood".into(), client_id.clone(), flood_pairs.display().to_string()]);
    report.row(
        "registry under a wrong-secret flood for one client: flood answers (throttled)",
        format!(
            "{:.0} /s ({:.0} %)",
            flood["flood_rate"].as_f64().unwrap_or(0.0),
            flood["throttled_share"].as_f64().unwrap_or(0.0) * 100.0
        ),
        "",
    );
    report.row(
        "  …meanwhile other clients' first verifications, p50 / p99",
        format!("{:.1} / {:.1} ms", flood["p50_ms"].as_f64().unwrap_or(0.0), flood["p99_ms"].as_f64().unwrap_or(0.0)),
        if flood["p99_ms"].as_f64().unwrap_or(f64::MAX) < 1000.0 { "< 1 s: met" } else { "< 1 s: MISSED" },
    );
    let _ = std::fs::remove_file(&pairs);
    let _ = std::fs::remove_file(&flood_pairs);
    chosen_flood(&mut report, registry_seconds, 300.min(apps_n)).await;

    // === restart ===
    let total = apps_n + steady_n;
    let started = Instant::now();
    operator.restart().await;
    let synced = started.elapsed();
    wait_until("every app reconciled again", Duration::from_secs(3600), SLOW, || {
        let operator = &operator;
        async move {
            operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await >= total as f64
        }
    })
    .await;
    let settled = started.elapsed();
    let restarted_rss = operator.pid().map_or(0.0, peak_rss_mib);
    report.row(format!("restart with {total} apps: caches synced"), format!("{:.1} s", synced.as_secs_f64()), "");
    report.row("restart: every app reconciled", format!("{:.1} s", settled.as_secs_f64()), "");
    report.row(
        "restart: peak RSS of the new process (caches, no hashing)",
        format!("{restarted_rss:.1} MiB"),
        if restarted_rss < 40.0 { "< 40 MiB: met" } else { "< 40 MiB: MISSED" },
    );
    let writes = operator.writes().await;
    report.row(
        "restart: write requests by the new process",
        format!("{writes}"),
        if writes == 0.0 { "0: met" } else { "0: MISSED" },
    );

    // === consent fan-out: Unrestricted, then under a Restricted policy ===
    let ceiling = consent_status_ceiling(consents_n).await;
    report.row(
        format!("apiserver+etcd: {consents_n} AppConsent status writes (SSA, 16 in flight) sent by the harness"),
        format!("{:.2} s ({:.2} ms CPU each)", ceiling.seconds, ceiling.cpu_per_write * 1000.0),
        "ceiling",
    );
    let mut consumers = Vec::new();
    for restricted in [false, true] {
        consumers.extend(consent_fanout(&mut report, consents_n, restricted, ceiling.seconds).await);
    }

    hydra_scenario(&mut report, env_usize("BENCH_HYDRA_APPS", 1_000.min(apps_n)), cpu_per_write, cpu_per_hash).await;

    // === the Client ID ledger at scale: its size, and a restart with it ===
    // Last: the tombstones stay (deleting 90,000 objects outlasts a request),
    // and the control plane goes with the run.
    ledger_at_scale(&mut report, &mut operator, env_usize("BENCH_LEDGER_ENTRIES", 100_000), total).await;

    let mut table = String::new();
    let _ = writeln!(table, "| measurement | value | target |\n| --- | --- | --- |");
    for (what, value, target) in &report.rows {
        let _ = writeln!(table, "| {what} | {value} | {target} |");
    }
    if let Ok(path) = std::env::var("BENCH_REPORT") {
        std::fs::write(&path, &table).expect("write the report");
        println!("wrote {path}");
    }
    drop(operator);
    for n in consumers.into_iter().chain([ns, noise]) {
        n.delete().await;
    }
}

/// One app with `n` consents from one namespace: the time for all of them to
/// turn AppRevoked when the app is deleted. `restricted`: under a Restricted
/// policy of their organization (the default one) that allowlists the app
/// (auto-approval off, so every consent goes through the allowlist), with the
/// allowlist entry removed (all NotAllowlisted) and restored (all Granted)
/// first.
async fn consent_fanout(report: &mut Report, n: usize, restricted: bool, ceiling: f64) -> [TestNamespace; 2] {
    let name = if restricted { "fanout-restricted" } else { "fanout" };
    let label = ("bench.registrar.dev/fanout".to_string(), "yes".to_string());
    let labels = BTreeMap::from([label.clone()]);
    // The app lives where the bulk operator does not look: one operator per app
    // (two would take turns rewriting its status).
    let home = TestNamespace::new("bench-fanout-app").await;
    let (apps, app_ns) = (&home.api::<AppRegistration>(), home.name.as_str());
    let consumers = TestNamespace::new("bench-consumers").await;
    let consent_args = std::env::var("BENCH_FANOUT_ARGS").unwrap_or_default();
    let mut args = vec!["--selector", "bench.registrar.dev/fanout=yes"];
    args.extend(consent_args.split_whitespace());
    let consent_operator = Operator::start_with(&args).await;
    let mut fanned = app(name);
    fanned.metadata.labels = Some(labels.clone());
    apply_app(apps, &fanned).await;
    wait_until(&format!("{name} Ready"), Duration::from_secs(60), FAST, || {
        let apps = apps.clone();
        async move { apps.get(name).await.ok().is_some_and(|a| is_ready(&a)) }
    })
    .await;
    let policies: Api<OrganizationPolicy> = Api::all(consumers.client.clone());
    let entry = json!([{ "app": { "namespace": app_ns, "name": name }, "scopes": ["read"] }]);
    let policy = |allowlist: serde_json::Value| {
        json!({
            "apiVersion": "registrar.dev/v1alpha1", "kind": "OrganizationPolicy",
            "metadata": { "name": "default", "labels": { "bench.registrar.dev/fanout": "yes" } },
            "spec": { "policy": "Restricted", "autoApproveInternal": false, "allowlist": allowlist }
        })
    };
    let apply_policy = |allowlist: serde_json::Value| {
        let (policies, body) = (policies.clone(), policy(allowlist));
        async move {
            policies
                .patch("default", &PatchParams::apply("bench").force(), &Patch::Apply(body))
                .await
                .expect("apply the policy");
        }
    };
    if restricted {
        apply_policy(entry.clone()).await;
        wait_until("the policy in force", Duration::from_secs(60), FAST, || {
            let policies = policies.clone();
            async move {
                policies.get("default").await.ok().and_then(|p| p.status).and_then(|s| s.policy)
                    == Some(PolicyKind::Restricted)
            }
        })
        .await;
    }
    let consent_api = consumers.api::<AppConsent>();
    // One watch counts the consents by the reason of their Granted condition.
    let mut consents = Counter::classify(consent_api.clone(), |c: &AppConsent| {
        let reason = c.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Granted")?.reason.as_str();
        ["Granted", "NotAllowlisted", "AppRevoked"].into_iter().find(|r| *r == reason)
    });
    let started = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let (consent_api, labels, app_ns) = (consent_api.clone(), labels.clone(), app_ns.to_owned());
            async move {
                let consent = AppConsent {
                    metadata: ObjectMeta { name: Some(format!("c-{i}")), labels: Some(labels), ..Default::default() },
                    spec: AppConsentSpec {
                        app_ref: AppRef { namespace: app_ns, name: name.into() },
                        oauth_scopes: None,
                    },
                    status: None,
                };
                consent_api.create(&PostParams::default(), &consent).await.expect("consent");
            }
        })
        .await;
    consents.reached_in("Granted", "every consent Granted", n, Duration::from_secs(600)).await;
    let policy_words = if restricted { ", Restricted policy" } else { "" };
    report.row(
        format!("{n} consents created (64 in flight) → all Granted{policy_words}"),
        format!("{:.2} s", started.elapsed().as_secs_f64()),
        "",
    );
    if !restricted {
        // A rotation changes nothing consents read: none of them is reconciled
        // and the operator writes only the app's Secret, status and Event.
        // First let the grants' own bookkeeping (consent and app status, Events) settle.
        let (consents_before, writes_before) = quiet(&consent_operator).await;
        let rotate = json!({ "metadata": { "annotations": { "registrar.dev/rotate": "bench" } } });
        apps.patch(name, &PatchParams::default(), &Patch::Merge(rotate)).await.expect("rotate");
        wait_until("the rotation", Duration::from_secs(60), FAST, || {
            let apps = apps.clone();
            async move {
                apps.get(name).await.ok().and_then(|a| a.status).and_then(|s| s.last_handled_rotate).as_deref()
                    == Some("bench")
            }
        })
        .await;
        // A settle window for anything the rotation might still fan out.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let consents = consent_operator.metric(CONSENT_RECONCILES).await - consents_before;
        let writes = consent_operator.writes().await - writes_before;
        report.row(
            format!("rotate an app with {n} consents → consent reconciliations / operator writes"),
            format!("{consents:.0} / {writes:.0}"),
            if consents == 0.0 && writes <= 3.0 { "0 / ≤ 3: met" } else { "0 / ≤ 3: MISSED" },
        );
    }
    if restricted {
        quiet(&consent_operator).await;
        let started = Instant::now();
        apply_policy(json!([])).await;
        consents.reached_in("NotAllowlisted", "every consent NotAllowlisted", n, Duration::from_secs(600)).await;
        report.row(
            format!("Restricted: allowlist entry removed → all {n} NotAllowlisted"),
            format!("{:.2} s", started.elapsed().as_secs_f64()),
            "",
        );
        quiet(&consent_operator).await;
        let started = Instant::now();
        apply_policy(entry).await;
        consents.reached_in("Granted", "every consent Granted again", n, Duration::from_secs(600)).await;
        report.row(
            format!("Restricted: allowlist entry restored → all {n} Granted"),
            format!("{:.2} s", started.elapsed().as_secs_f64()),
            "",
        );
    }
    // The Events of the step before are out before the clock starts.
    let writes_before = quiet(&consent_operator).await.1;
    let operator_cpu_before = consent_operator.pid().map_or(0.0, cpu_seconds);
    let control_plane_cpu_before = control_plane_cpu();
    let mut revoked_events = Counter::start(consumers.api::<k8s_openapi::api::events::v1::Event>(), |e| {
        e.reason.as_deref() == Some("AppRevoked")
    });
    let started = Instant::now();
    apps.delete(name, &DeleteParams::default()).await.expect("delete the app");
    consents.reached_in("AppRevoked", "every consent AppRevoked", n, Duration::from_secs(600)).await;
    let revocation = started.elapsed().as_secs_f64();
    let target = if restricted {
        ""
    } else if revocation <= 1.5 {
        "≤ 1.5 s: met"
    } else {
        "≤ 1.5 s: MISSED"
    };
    report.row(
        format!("delete an app with {n} consents → all AppRevoked{policy_words}"),
        format!("{revocation:.2} s"),
        target,
    );
    report.row(
        format!("  …revocation / {n} status writes sent by the harness{policy_words}"),
        format!("{:.2}", revocation / ceiling),
        "profile",
    );
    // Each consent's Event follows once the statuses have settled.
    revoked_events.reached("every AppRevoked Event", n, Duration::from_secs(600)).await;
    report.row(
        format!("  …and all {n} AppRevoked Events published{policy_words}"),
        format!("{:.2} s", started.elapsed().as_secs_f64()),
        "",
    );
    let per_consent = |total: f64| total * 1000.0 / n.max(1) as f64;
    report.row(
        format!("  …per consent: operator writes, CPU of the operator / of apiserver+etcd{policy_words}"),
        format!(
            "{:.2}, {:.2} / {:.2} ms",
            (consent_operator.writes().await - writes_before) / n.max(1) as f64,
            per_consent(consent_operator.pid().map_or(0.0, cpu_seconds) - operator_cpu_before),
            per_consent(control_plane_cpu() - control_plane_cpu_before),
        ),
        "profile",
    );
    if restricted {
        let _ = policies.delete("default", &DeleteParams::default()).await;
    }
    drop(consent_operator);
    [consumers, home]
}

const CONSENT_RECONCILES: &str = "registrar_reconciliations_total{controller=\"appconsent\"}";

/// Waits until the operator is quiet, its consent reconciliations and writes
/// (the Events that follow the statuses among them) unchanged for two seconds
/// (a minute at most); returns them.
async fn quiet(operator: &Operator) -> (f64, f64) {
    let mut last = (f64::NAN, f64::NAN);
    let started = Instant::now();
    loop {
        let now = (operator.metric(CONSENT_RECONCILES).await, operator.writes().await);
        if now == last || started.elapsed() > Duration::from_secs(60) {
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// N apps registered at a real Ory Hydra: Hydra's own ceiling (clients created
/// directly at its admin API), the bulk to all Ready (Ready means registered),
/// against a limit with Hydra's CPU in it; then Hydra restarted empty, and the
/// namespace deleted.
async fn hydra_scenario(report: &mut Report, n: usize, cpu_per_write: f64, cpu_per_hash: f64) {
    use support::hydra::Hydra;
    if n == 0 {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut hydra = Hydra::start("http://127.0.0.1:1").await;
    let pid = hydra.pid().expect("Hydra's pid");

    // Hydra's ceiling: clients created at its admin API, 64 in flight.
    let samples = n.min(500);
    let http = reqwest::Client::new();
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    stream::iter(0..samples)
        .for_each_concurrent(CONCURRENCY, |i| {
            let (http, url) = (http.clone(), format!("{}/admin/clients", hydra.admin_url()));
            async move {
                let body = json!({
                    "client_id": format!("ceiling-{i}"), "client_secret": ClientSecret::mint().expose(),
                    "owner": "bench-ceiling", "grant_types": ["client_credentials"], "scope": "read",
                });
                let status = http.post(url).json(&body).send().await.expect("create client").status();
                assert!(status.is_success(), "{status}");
            }
        })
        .await;
    let hydra_rate = samples as f64 / started.elapsed().as_secs_f64();
    let hydra_cpu_per_client = (cpu_seconds(pid) - cpu_before) / samples as f64;
    report.row("Hydra: client create rate (admin API, 64 in flight)", format!("{hydra_rate:.0} /s"), "ceiling");
    report.row("Hydra: CPU per client create (pbkdf2 secret hash)", ms_f(hydra_cpu_per_client), "ceiling");

    let ns = TestNamespace::new("bench-hydra").await;
    let mut args = vec!["--watch-namespace".to_string(), ns.name.clone()];
    args.extend(hydra.operator_args("5s"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let operator = Operator::start_with(&args).await;
    let owner = Hydra::cluster_owner(&ns.client).await;
    let apps = ns.api::<AppRegistration>();
    let mut ready = Counter::start(apps.clone(), is_ready);
    let (operator_cpu, cp_cpu, hydra_cpu) =
        (operator.pid().map_or(0.0, cpu_seconds), control_plane_cpu(), cpu_seconds(pid));
    let started = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let apps = apps.clone();
            async move { apply_app(&apps, &app(&format!("h-{i}"))).await }
        })
        .await;
    ready.reached("every app Ready (registered at Hydra)", n, Duration::from_secs(3600)).await;
    drop(ready);
    let bulk = started.elapsed().as_secs_f64();
    let used = (
        operator.pid().map_or(0.0, cpu_seconds) - operator_cpu,
        control_plane_cpu() - cp_cpu,
        cpu_seconds(pid) - hydra_cpu,
    );
    let writes_per_app = operator.writes().await / n as f64;
    let limit = (n as f64 * (writes_per_app * cpu_per_write + cpu_per_hash + hydra_cpu_per_client) / cores as f64)
        .max(n as f64 / hydra_rate);
    report.row(
        format!("Hydra: limit for {n} apps = max(N*(w*cpu_w + cpu_h + cpu_hydra)/cores, N/Hydra rate)"),
        format!("{limit:.1} s"),
        "input",
    );
    report.row(format!("Hydra: bulk, {n} apps applied to all Ready and registered"), format!("{bulk:.1} s"), "");
    report.row(
        "Hydra: bulk time / limit",
        format!("{:.2}", bulk / limit),
        if bulk / limit <= 1.3 { "≤ 1.3: met" } else { "≤ 1.3: MISSED" },
    );
    report.row(
        "Hydra: bulk CPU per app, operator / apiserver+etcd / Hydra",
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            used.0 * 1000.0 / n as f64,
            used.1 * 1000.0 / n as f64,
            used.2 * 1000.0 / n as f64
        ),
        "profile",
    );

    // Hydra restarted with its in-memory database empty.
    hydra.restart().await;
    let started = Instant::now();
    wait_until("every client back at Hydra", Duration::from_secs(3600), SLOW, || {
        let (hydra, owner) = (&hydra, &owner);
        async move { hydra.clients_of(owner).await.len() >= n }
    })
    .await;
    report.row(
        format!("Hydra restarted empty: all {n} clients back (comparison every 5 s)"),
        format!("{:.1} s", started.elapsed().as_secs_f64()),
        "",
    );
    let started = Instant::now();
    ns.delete_as_a_user().await;
    wait_until("no client left at Hydra", Duration::from_secs(600), SLOW, || {
        let (hydra, owner) = (&hydra, &owner);
        async move { hydra.clients_of(owner).await.is_empty() }
    })
    .await;
    report.row(
        format!("Hydra: namespace {} with {n} apps deleted → no client left", ns.name),
        format!("{:.1} s", started.elapsed().as_secs_f64()),
        "",
    );
    drop(operator);
    ns.delete().await;
}

/// apiserver+etcd CPU seconds per request, by kind of AppRegistration write.
struct WriteCosts {
    create: f64,
    patch: f64,
    status: f64,
    /// A Client ID's claim: the create of its ledger entry.
    claim: f64,
}

/// The requests the operator made for each app of the bulk, replayed by the
/// harness for `n` apps (64 apps in flight, each app's requests in order, in a
/// namespace no operator watches): the app applied, a SubjectAccessReview (the
/// owner check), the Client ID's ledger entry created, its Secret created and
/// its status applied as the operator wrote them for `sample`, and an Event.
/// Returns the seconds per app: what the apiserver alone needs, with no
/// operator logic between the requests.
async fn replay(n: usize, sample: &AppRegistration, secret: &Secret) -> f64 {
    use k8s_openapi::api::{
        authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
        events::v1::Event,
    };
    let scratch = TestNamespace::new("bench-replay").await;
    let (apps, secrets, events) = (scratch.api::<AppRegistration>(), scratch.api::<Secret>(), scratch.api::<Event>());
    let admin = control_plane().client().await;
    let reviews: Api<SubjectAccessReview> = Api::all(admin.clone());
    let ledger: Api<ClientIdEntry> = Api::all(admin);
    let status = serde_json::to_value(&sample.status).expect("status");
    let run = format!("{:08x}", rand::random::<u32>());
    let started = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let (apps, secrets, events, reviews, ledger, status, run) =
                (apps.clone(), secrets.clone(), events.clone(), reviews.clone(), ledger.clone(), status.clone(), &run);
            async move {
                let name = format!("replay-{i}");
                let applied = support::gitops_apply(&apps, &app(&name)).await.expect("apply");
                let review = SubjectAccessReview {
                    spec: SubjectAccessReviewSpec {
                        user: Some("bench".into()),
                        resource_attributes: Some(ResourceAttributes {
                            namespace: applied.namespace(),
                            verb: Some("update".into()),
                            group: Some("registrar.dev".into()),
                            resource: Some("appregistrations".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                reviews.create(&PostParams::default(), &review).await.expect("review");
                let client_id = format!("replay-{run}-{i}");
                ledger
                    .create(&PostParams::default(), &claim(&client_id, &applied, LedgerState::Active))
                    .await
                    .expect("claim");
                let mut status = status;
                status["clientId"] = json!(client_id);
                let patch = json!({
                    "apiVersion": "registrar.dev/v1alpha1", "kind": "AppRegistration",
                    "metadata": { "resourceVersion": applied.resource_version() },
                    "status": status,
                });
                apps.patch_status(&name, &PatchParams::apply("bench").force(), &Patch::Apply(patch))
                    .await
                    .expect("status");
                let mut copy = secret.clone();
                copy.metadata = ObjectMeta {
                    name: Some(format!("{name}-credentials")),
                    labels: secret.metadata.labels.clone(),
                    annotations: secret.metadata.annotations.clone(),
                    owner_references: Some(vec![applied.controller_owner_ref(&()).expect("owner")]),
                    ..Default::default()
                };
                secrets.create(&PostParams::default(), &copy).await.expect("Secret");
                let event = Event {
                    metadata: ObjectMeta {
                        name: Some(format!("{name}.{:016x}", rand::random::<u64>())),
                        ..Default::default()
                    },
                    event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                        k8s_openapi::jiff::Timestamp::now(),
                    )),
                    action: Some("Mint".into()),
                    reason: Some("Issued".into()),
                    note: Some("replayed".into()),
                    type_: Some("Normal".into()),
                    reporting_controller: Some("bench".into()),
                    reporting_instance: Some("bench".into()),
                    regarding: Some(applied.object_ref(&())),
                    ..Default::default()
                };
                events.create(&PostParams::default(), &event).await.expect("Event");
            }
        })
        .await;
    let per_app = started.elapsed().as_secs_f64() / n.max(1) as f64;
    release_and_delete(&apps, n, "replay").await;
    delete_entries(&ledger, BENCH_LABEL).await;
    scratch.delete().await;
    per_app
}

/// The label on the ledger entries the harness writes itself, so it can take them away.
const BENCH_LABEL: &str = "bench.registrar.dev/ledger";

/// A ledger entry of `client_id` in `state`, held by `app`, as registrar
/// writes it (plus the harness's label).
fn claim(client_id: &str, app: &AppRegistration, state: LedgerState) -> ClientIdEntry {
    let holder = Holder {
        namespace: app.namespace().unwrap_or_default(),
        name: app.name_any(),
        uid: app.uid().unwrap_or_default(),
    };
    let mut entry = ClientIdEntry::active(client_id, holder);
    entry.spec.state = state;
    entry.labels_mut().insert(BENCH_LABEL.into(), "yes".into());
    entry
}

/// Deletes every ledger entry carrying `label`.
async fn delete_entries(ledger: &Api<ClientIdEntry>, label: &str) {
    let params = kube::api::ListParams::default().labels(label);
    ledger.delete_collection(&DeleteParams::default(), &params).await.expect("delete ledger entries");
}

/// The time and the apiserver+etcd CPU per write of N AppConsent status writes.
struct ConsentCeiling {
    seconds: f64,
    cpu_per_write: f64,
}

/// What `n` AppConsent status writes cost the apiserver and etcd when the
/// harness sends them as the consent controller would (server-side apply with
/// the resourceVersion read, 16 in flight: its default concurrency), with two
/// watches open as during a revocation (the operator's and the harness's), on
/// consents no operator watches: the floor of a revocation's time.
async fn consent_status_ceiling(n: usize) -> ConsentCeiling {
    const OPERATOR_CONCURRENCY: usize = 16;
    let scratch = TestNamespace::new("bench-consent-ceiling").await;
    let api = scratch.api::<AppConsent>();
    let _watches = [Counter::start(api.clone(), |_: &AppConsent| true), Counter::start(api.clone(), |_| true)];
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let api = api.clone();
            async move {
                let consent = AppConsent::new(
                    &format!("c-{i}"),
                    AppConsentSpec {
                        app_ref: AppRef { namespace: "elsewhere".into(), name: "app".into() },
                        oauth_scopes: None,
                    },
                );
                api.create(&PostParams::default(), &consent).await.expect("consent");
            }
        })
        .await;
    // The status of a grant, then of a revocation: the second round is timed.
    // The operator reads from its cache: one list here, before each round.
    let write_all = |reason: &'static str| {
        let api = api.clone();
        async move {
            let read: BTreeMap<String, Option<String>> = api
                .list(&Default::default())
                .await
                .expect("list the consents")
                .items
                .into_iter()
                .map(|c| (c.name_any(), c.metadata.resource_version))
                .collect();
            let (read, started, cpu_before) = (&read, Instant::now(), control_plane_cpu());
            stream::iter(0..n)
                .for_each_concurrent(OPERATOR_CONCURRENCY, |i| {
                    let api = api.clone();
                    async move {
                        let name = format!("c-{i}");
                        let status = json!({
                            "app": "elsewhere/app", "clientId": "0pHLX-mChJuzd0Jiaqh5sA", "displayName": "Bench app",
                            "grantedScopes": ["read"], "observedGeneration": 1,
                            "conditions": [{
                                "type": "Granted", "status": if reason == "Granted" { "True" } else { "False" },
                                "reason": reason, "observedGeneration": 1,
                                "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
                                "message": format!("{reason}: AppRegistration elsewhere/app (Client ID 0pHLX-mChJuzd0Jiaqh5sA)"),
                            }]
                        });
                        let body = json!({
                            "apiVersion": "registrar.dev/v1alpha1", "kind": "AppConsent",
                            "metadata": { "resourceVersion": read.get(&name) }, "status": status,
                        });
                        api.patch_status(&name, &PatchParams::apply("registrar").force(), &Patch::Apply(body))
                            .await
                            .expect("status");
                    }
                })
                .await;
            ConsentCeiling {
                seconds: started.elapsed().as_secs_f64(),
                cpu_per_write: (control_plane_cpu() - cpu_before) / n.max(1) as f64,
            }
        }
    };
    write_all("Granted").await;
    let ceiling = write_all("AppRevoked").await;
    scratch.delete().await;
    ceiling
}

/// Prices the AppRegistration writes an app costs, with `n` of each (64 in
/// flight) in a namespace no operator watches: a server-side-apply create, a
/// metadata patch (what adding the finalizer costs), and a status apply.
async fn write_costs(n: usize) -> WriteCosts {
    let scratch = TestNamespace::new("bench-costs").await;
    let apps = scratch.api::<AppRegistration>();
    let price = |what: &'static str| {
        let apps = apps.clone();
        async move {
            let before = control_plane_cpu();
            stream::iter(0..n)
                .for_each_concurrent(CONCURRENCY, |i| {
                    let apps = apps.clone();
                    async move {
                        let name = format!("cost-{i}");
                        let params = PatchParams::apply("bench").force();
                        match what {
                            "create" => apply_app(&apps, &app(&name)).await,
                            "patch" => {
                                let patch =
                                    json!({ "metadata": { "labels": { "bench.registrar.dev/priced": "yes" } } });
                                apps.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await.expect("patch");
                            }
                            _ => {
                                let status = json!({
                                    "apiVersion": "registrar.dev/v1alpha1", "kind": "AppRegistration",
                                    "status": { "clientId": format!("client-{i}"), "secretVersion": 1 }
                                });
                                apps.patch_status(&name, &params, &Patch::Apply(status)).await.expect("status");
                            }
                        }
                    }
                })
                .await;
            (control_plane_cpu() - before) / n as f64
        }
    };
    let (create, patch, status) = (price("create").await, price("patch").await, price("status").await);
    // A claim per app: the create of a ledger entry.
    let ledger: Api<ClientIdEntry> = Api::all(control_plane().client().await);
    let sample = apps.get("cost-0").await.expect("cost-0");
    let run = format!("{:08x}", rand::random::<u32>());
    let before = control_plane_cpu();
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let (ledger, sample, run) = (ledger.clone(), &sample, &run);
            async move {
                let entry = claim(&format!("cost-{run}-{i}"), sample, LedgerState::Active);
                ledger.create(&PostParams::default(), &entry).await.expect("claim");
            }
        })
        .await;
    let claim = (control_plane_cpu() - before) / n as f64;
    delete_entries(&ledger, BENCH_LABEL).await;
    release_and_delete(&apps, n, "cost").await;
    scratch.delete().await;
    WriteCosts { create, patch, status, claim }
}

/// Deletes the apps `{prefix}-0..n`, then releases the revoke finalizer the
/// admission policy added (it is left alone on objects being deleted) so that
/// they can go.
async fn release_and_delete(apps: &Api<AppRegistration>, n: usize, prefix: &str) {
    apps.delete_collection(&DeleteParams::default(), &Default::default()).await.expect("delete");
    let release = json!([{ "op": "remove", "path": "/metadata/finalizers" }]);
    stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let (apps, release) = (apps.clone(), release.clone());
            async move {
                let patch = Patch::<()>::Json(serde_json::from_value(release).expect("patch"));
                let _ = apps.patch(&format!("{prefix}-{i}"), &PatchParams::default(), &patch).await;
            }
        })
        .await;
}

/// Client IDs and right secrets of the bulk apps `range`, in a file for the
/// load generator (`client_id secret` per line).
async fn first_verifications(ns: &TestNamespace, range: std::ops::Range<usize>) -> std::path::PathBuf {
    let secrets = ns.api::<Secret>();
    let mut lines = String::new();
    for i in range {
        let Ok(secret) = secrets.get(&format!("app-{i}-credentials")).await else { continue };
        let data = secret.data.unwrap_or_default();
        let value = |k: &str| data.get(k).map(|b| String::from_utf8_lossy(&b.0).into_owned()).unwrap_or_default();
        let _ = writeln!(lines, "{} {}", value("client_id"), value("client_secret"));
    }
    let path = std::env::temp_dir().join(format!("registrar-bench-pairs-{:08x}", rand::random::<u32>()));
    std::fs::write(&path, lines).expect("write pairs");
    path
}

/// One tenant floods wrong secrets over its 20 apps with chosen secrets (the
/// expensive argon2id, to defeat per-client budgets), through the same caller
/// (a shared proxy) that verifies `others` apps of another namespace for the
/// first time, one every few milliseconds: the per-namespace budget keeps the
/// other tenant's p99 under 100 ms. Its own operator (cluster-wide, selected
/// by a label) and namespaces; gone when it returns.
async fn chosen_flood(report: &mut Report, seconds: usize, others: usize) {
    const TENANT_APPS: usize = 20;
    let run = format!("{:08x}", rand::random::<u32>());
    let label = "bench.registrar.dev/flood";
    let tenant = TestNamespace::new("bench-flood-tenant").await;
    let other = TestNamespace::new("bench-flood-other").await;
    let selector = format!("{label}={run}");
    let (operator, port) = support::registry::registry_operator(&["--selector", &selector]).await;
    let labels = BTreeMap::from([(label.to_string(), run.clone())]);
    let app = |name: String, source: Option<String>| AppRegistration {
        metadata: ObjectMeta { name: Some(name.clone()), labels: Some(labels.clone()), ..Default::default() },
        spec: AppRegistrationSpec {
            display_name: name,
            redirect_uris: vec!["https://app.example.com/callback".into()],
            secret: source.map(|name| registrar::api::SecretTemplate {
                source_ref: Some(registrar::api::SecretSourceRef { name, key: None }),
                ..Default::default()
            }),
            ..Default::default()
        },
        status: None,
    };
    for i in 0..TENANT_APPS {
        let value: String = (0..32).map(|_| char::from(b'a' + rand::random::<u8>() % 26)).collect();
        let source = Secret {
            metadata: ObjectMeta { name: Some(format!("chosen-{i}")), ..Default::default() },
            string_data: Some(BTreeMap::from([("client_secret".to_string(), value)])),
            ..Default::default()
        };
        tenant.api::<Secret>().create(&PostParams::default(), &source).await.expect("source");
        let chosen = app(format!("chosen-{i}"), Some(format!("chosen-{i}")));
        tenant.api::<AppRegistration>().create(&PostParams::default(), &chosen).await.expect("tenant app");
    }
    stream::iter(0..others)
        .for_each_concurrent(CONCURRENCY, |i| {
            let (apps, app) = (other.api::<AppRegistration>(), app(format!("app-{i}"), None));
            async move {
                apps.create(&PostParams::default(), &app).await.expect("app");
            }
        })
        .await;
    let mut issued = Counter::start(tenant.api::<AppRegistration>(), is_ready);
    issued.reached("the tenant's apps to be issued", TENANT_APPS, Duration::from_secs(300)).await;
    let mut issued = Counter::start(other.api::<AppRegistration>(), is_ready);
    issued.reached("the other tenant's apps to be issued", others, Duration::from_secs(300)).await;
    let ids: Vec<String> = tenant
        .api::<AppRegistration>()
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|a| a.status?.client_id)
        .collect();
    let ids_file = std::env::temp_dir().join(format!("registrar-bench-ids-{run}"));
    std::fs::write(&ids_file, ids.join("\n")).expect("write ids");
    let pairs = first_verifications(&other, 0..others).await;
    let token = support::registry::caller_token(&other, "proxy", true).await;
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--load-generator", &format!("http://127.0.0.1:{port}"), &token, &seconds.to_string()])
        .args(["flood-many", &ids_file.display().to_string(), &pairs.display().to_string()])
        .output()
        .expect("load generator");
    let flood: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap_or(json!({}));
    report.row(
        format!("registry under one tenant's wrong-secret flood over its {TENANT_APPS} chosen-secret apps: answers (throttled)"),
        format!(
            "{:.0} /s ({:.0} %)",
            flood["flood_rate"].as_f64().unwrap_or(0.0),
            flood["throttled_share"].as_f64().unwrap_or(0.0) * 100.0
        ),
        "",
    );
    let p99 = flood["p99_ms"].as_f64().unwrap_or(f64::MAX);
    report.row(
        format!(
            "  …meanwhile another tenant's first verifications ({} of them), p50 / p99",
            flood["verified"].as_u64().unwrap_or(0)
        ),
        format!("{:.1} / {p99:.1} ms", flood["p50_ms"].as_f64().unwrap_or(0.0)),
        if p99 < 100.0 { "< 100 ms: met" } else { "< 100 ms: MISSED" },
    );
    let _ = std::fs::remove_file(&ids_file);
    let _ = std::fs::remove_file(&pairs);
    drop(operator);
    tenant.delete().await;
    other.delete().await;
}

/// The load generator, run as a separate process, with 16 connections for
/// `SECONDS`, printing one JSON line. Modes:
/// - `cached ID SECRET`: the same right credentials over and over;
/// - `uncached FILE`: each `client_id secret` line of FILE once (a first
///   verification each, so every one needs argon2id);
/// - `flood ID FILE`: 8 connections send fresh wrong secrets for ID while one
///   verifies FILE's clients for the first time, one after another;
/// - `flood-many IDS FILE`: 8 connections send fresh wrong secrets for the
///   Client IDs of IDS (one a line) in turn, while one verifies FILE's
///   clients for the first time, spread over the whole run.
async fn load_generator(args: &[String]) {
    let [base, token, seconds, mode, rest @ ..] = args else {
        eprintln!(
            "usage: --load-generator BASE TOKEN SECONDS cached ID SECRET | uncached FILE | flood ID FILE | flood-many \
             IDS FILE"
        );
        return;
    };
    let duration = Duration::from_secs(seconds.parse().unwrap_or(5));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let authenticate = |id: String, secret: String| {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        async move {
            let started = Instant::now();
            let status = http
                .post(format!("{base}/v1/clients/authenticate"))
                .header("x-registry-authorization", format!("Bearer {token}"))
                .basic_auth(&id, Some(secret))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            (status, started.elapsed())
        }
    };
    let read_pairs = |path: &str| -> Vec<(String, String)> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
            .collect()
    };
    let started = Instant::now();
    match (mode.as_str(), rest) {
        ("cached", [id, secret]) => {
            let workers = (0..16).map(|_| async {
                let mut latencies = Vec::new();
                while started.elapsed() < duration {
                    let (status, took) = authenticate(id.clone(), secret.clone()).await;
                    if status == 200 {
                        latencies.push(took);
                    }
                }
                latencies
            });
            let mut latencies: Vec<Duration> = futures::future::join_all(workers).await.into_iter().flatten().collect();
            latencies.sort();
            let rate = latencies.len() as f64 / started.elapsed().as_secs_f64();
            println!("{}", json!({ "rate": rate, "p99_ms": percentile(&latencies, 0.99).as_secs_f64() * 1000.0 }));
        }
        ("uncached", [file]) => {
            let pairs = read_pairs(file);
            let next = std::sync::atomic::AtomicUsize::new(0);
            let workers = (0..16).map(|_| async {
                let (mut latencies, mut shed) = (Vec::new(), 0u64);
                while started.elapsed() < duration {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((id, secret)) = pairs.get(i) else { break };
                    match authenticate(id.clone(), secret.clone()).await {
                        (200, took) => latencies.push(took),
                        (429, _) => shed += 1,
                        _ => {}
                    }
                }
                (latencies, shed)
            });
            let results = futures::future::join_all(workers).await;
            let elapsed = started.elapsed().as_secs_f64();
            let shed: u64 = results.iter().map(|(_, s)| s).sum();
            let mut latencies: Vec<Duration> = results.into_iter().flat_map(|(l, _)| l).collect();
            latencies.sort();
            let rate = latencies.len() as f64 / elapsed;
            let p99 = percentile(&latencies, 0.99).as_secs_f64() * 1000.0;
            println!("{}", json!({ "rate": rate, "p99_ms": p99, "shed": shed, "pairs": pairs.len() }));
        }
        ("flood" | "flood-many", [target, file]) => {
            let many = mode == "flood-many";
            let ids: Vec<String> = if many {
                std::fs::read_to_string(target).unwrap_or_default().lines().map(String::from).collect()
            } else {
                vec![target.clone()]
            };
            let pairs = read_pairs(file);
            let (ids, pad) = (&ids, if many { format!("-{}", "x".repeat(24)) } else { String::new() });
            let pad = &pad;
            let flooders = (0..8).map(|w| async move {
                let (mut answers, mut throttled, mut i) = (0u64, 0u64, 0usize);
                while started.elapsed() < duration && !ids.is_empty() {
                    let id = ids[(w + i * 8) % ids.len()].clone();
                    let (status, _) = authenticate(id, format!("wrong-{w}-{i}{pad}")).await;
                    i += 1;
                    answers += 1;
                    throttled += u64::from(status == 429);
                }
                (answers, throttled)
            });
            // Clients nobody verified yet (each needs argon2id): one after
            // another, or (flood-many) spread over the run.
            let mut tick =
                many.then(|| tokio::time::interval(duration / u32::try_from(pairs.len().max(1)).unwrap_or(u32::MAX)));
            let verifier = async {
                let mut latencies = Vec::new();
                for (id, secret) in &pairs {
                    if let Some(tick) = &mut tick {
                        tick.tick().await;
                    }
                    if started.elapsed() >= duration {
                        break;
                    }
                    let (status, took) = authenticate(id.clone(), secret.clone()).await;
                    if status == 200 {
                        latencies.push(took);
                    }
                }
                latencies
            };
            let (flooded, mut latencies) = tokio::join!(futures::future::join_all(flooders), verifier);
            latencies.sort();
            let (answers, throttled) = flooded.iter().fold((0, 0), |(a, t), (x, y)| (a + x, t + y));
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "{}",
                json!({
                    "flood_rate": answers as f64 / elapsed,
                    "throttled_share": if answers == 0 { 0.0 } else { throttled as f64 / answers as f64 },
                    "verified": latencies.len(),
                    "p50_ms": percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
                    "p99_ms": percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
                })
            );
        }
        _ => eprintln!("unknown load generator mode {mode}"),
    }
}

/// The Client ID ledger at `target` entries: the bulk's Active ones, and
/// Revoked tombstones written by the harness as registrar leaves them (held by
/// an app long gone) up to `target`. Measures what the entries take as stored
/// (each object's JSON, managed fields included: what etcd keeps of it), the
/// growth of etcd's database, and a restart of the operator with them: the
/// time to sync, its peak memory, and its writes (none). The tombstones stay
/// (deleting 90,000 objects outlasts a request): this runs last.
async fn ledger_at_scale(report: &mut Report, operator: &mut Operator, target: usize, apps: usize) {
    let admin = control_plane().client().await;
    let ledger: Api<ClientIdEntry> = Api::all(admin.clone());
    let existing = list_entries(&ledger).await.len();
    let to_create = target.saturating_sub(existing);
    let etcd_before = etcd_bytes(&admin).await;
    let gone = {
        let mut app = app("long-gone");
        app.metadata.namespace = Some("bench-gone".into());
        app.metadata.uid = Some("00000000-0000-4000-8000-000000000000".into());
        app
    };
    let run = format!("{:08x}", rand::random::<u32>());
    let started = Instant::now();
    stream::iter(0..to_create)
        .for_each_concurrent(CONCURRENCY, |i| {
            let (ledger, gone, run) = (ledger.clone(), &gone, &run);
            async move {
                let client_id = registrar::credentials::mint_client_id();
                let mut tombstone = claim(&client_id, gone, LedgerState::Revoked);
                tombstone.spec.holder.name = format!("gone-{run}-{i}");
                // As registrar writes it: no label.
                tombstone.metadata.labels = None;
                ledger.create(&PostParams::default(), &tombstone).await.expect("tombstone");
            }
        })
        .await;
    let created_in = started.elapsed().as_secs_f64();
    let entries = list_entries(&ledger).await;
    let etcd_after = etcd_bytes(&admin).await;
    let mut sizes: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    for entry in &entries {
        let size = serde_json::to_vec(entry).map_or(0, |json| json.len());
        let slot = sizes.entry(entry.spec.state.as_str()).or_default();
        slot.0 += 1;
        slot.1 += size;
    }
    let total: usize = sizes.values().map(|(_, bytes)| bytes).sum();
    let breakdown: Vec<String> =
        sizes.iter().map(|(state, (n, bytes))| format!("{n} {state}, {} B each", bytes / (*n).max(1))).collect();
    report.row(
        format!("ledger: {} entries as stored (JSON with managed fields)", entries.len()),
        format!("{:.1} MiB ({})", total as f64 / (1024.0 * 1024.0), breakdown.join("; ")),
        "profile",
    );
    if let (Some(before), Some(after)) = (etcd_before, etcd_after) {
        report.row(
            format!("ledger: etcd database growth for {to_create} tombstones"),
            format!(
                "{:.1} MiB ({:.0} B each)",
                (after - before) / (1024.0 * 1024.0),
                (after - before) / to_create.max(1) as f64
            ),
            "profile",
        );
    }
    report.row(
        format!("ledger: {to_create} tombstones written by the harness (64 in flight)"),
        format!("{created_in:.1} s"),
        "profile",
    );

    // A restart with every entry in the ledger.
    let started = Instant::now();
    operator.restart().await;
    let synced = started.elapsed();
    wait_until("every app reconciled again", Duration::from_secs(3600), SLOW, || async {
        operator.metric("registrar_reconciliations_total{controller=\"appregistration\"}").await >= apps as f64
    })
    .await;
    let rss = operator.pid().map_or(0.0, peak_rss_mib);
    let writes = operator.writes().await;
    report.row(
        format!("restart with {} ledger entries: caches synced", entries.len()),
        format!("{:.1} s", synced.as_secs_f64()),
        "",
    );
    report.row(format!("restart with {} ledger entries: peak RSS", entries.len()), format!("{rss:.1} MiB"), "profile");
    report.row(
        format!("restart with {} ledger entries: write requests", entries.len()),
        format!("{writes}"),
        if writes == 0.0 { "0: met" } else { "0: MISSED" },
    );
}

/// Every ledger entry, page by page.
async fn list_entries(ledger: &Api<ClientIdEntry>) -> Vec<ClientIdEntry> {
    let mut entries = Vec::new();
    let mut params = kube::api::ListParams::default().limit(500);
    loop {
        let page = ledger.list(&params).await.expect("list the ledger");
        entries.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return entries,
        }
    }
}

/// The size of etcd's database as the apiserver reports it
/// (`apiserver_storage_size_bytes`), if it does.
async fn etcd_bytes(client: &kube::Client) -> Option<f64> {
    let request = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = client.request_text(request).await.ok()?;
    let sizes: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("apiserver_storage_size_bytes"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!sizes.is_empty()).then(|| sizes.iter().sum())
}
