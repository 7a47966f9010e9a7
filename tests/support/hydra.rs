//! A real Ory Hydra v2.3.0 for tests: built by scripts/install-hydra.sh (or
//! the binary named by `REGISTRAR_HYDRA`), run on free loopback ports with an
//! in-memory database, always with `--sqa-opt-out`. Its state directory
//! starts with `registrar-e2e-` (the leftover check looks for it), and it runs
//! under [`super::spawn_supervised`], so it goes when the test binary goes,
//! however it ends.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use super::{STATE_DIR_PREFIX, eventually, free_port, spawn_supervised, stop_supervised};

/// A running Hydra. Stopped when dropped.
pub struct Hydra {
    binary: PathBuf,
    dir: PathBuf,
    pub public_port: u16,
    pub admin_port: u16,
    child: Option<Child>,
    http: reqwest::Client,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("REGISTRAR_HYDRA") {
        return path.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-hydra.sh");
    let out = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().expect("run install-hydra.sh");
    assert!(out.status.success(), "{} failed", script.display());
    String::from_utf8_lossy(&out.stdout).trim().into()
}

impl Hydra {
    /// Starts Hydra whose login and consent URLs point at `login_base`
    /// (`{login_base}/login`, `{login_base}/consent`).
    pub async fn start(login_base: &str) -> Self {
        Self::start_with_token_hook(login_base, None).await
    }

    /// [`Hydra::start`], with Hydra's token hook (`oauth2.token_hook`) calling
    /// `(url, bearer token)` before every token it issues.
    pub async fn start_with_token_hook(login_base: &str, token_hook: Option<(&str, &str)>) -> Self {
        let hook = match token_hook {
            Some((url, token)) => format!(
                "\n  token_hook:\n    url: \"{url}\"\n    auth:\n      type: api_key\n      config: {{ in: header, name: Authorization, value: \"Bearer {token}\" }}"
            ),
            None => String::new(),
        };
        let dir = std::env::temp_dir().join(format!("{STATE_DIR_PREFIX}hydra-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("hydra dir");
        let (public_port, admin_port) = (free_port(), free_port());
        let config = format!(
            r#"dsn: memory
serve:
  public: {{ host: 127.0.0.1, port: {public_port} }}
  admin: {{ host: 127.0.0.1, port: {admin_port} }}
urls:
  self: {{ issuer: "http://127.0.0.1:{public_port}" }}
  login: "{login_base}/login"
  consent: "{login_base}/consent"
secrets:
  system: ["{:032x}"]
oauth2:
  pkce: {{ enforced_for_public_clients: true }}{hook}
log: {{ level: warn }}
"#,
            rand::random::<u128>()
        );
        std::fs::write(dir.join("hydra.yml"), config).expect("hydra config");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http");
        let mut hydra = Hydra { binary: binary(), dir, public_port, admin_port, child: None, http };
        hydra.spawn().await;
        hydra
    }

    async fn spawn(&mut self) {
        let config = self.dir.join("hydra.yml");
        let args = [
            std::ffi::OsStr::new("serve"),
            "all".as_ref(),
            "--dev".as_ref(),
            "--sqa-opt-out".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ];
        let child = spawn_supervised(&self.binary, &args, &[], &self.dir.join("hydra.log"));
        self.child = Some(child);
        let ready = format!("{}/health/ready", self.admin_url());
        let http = self.http.clone();
        eventually("Hydra to be ready", Duration::from_secs(60), || async {
            let ok = http.get(&ready).send().await.ok()?.status().is_success();
            ok.then_some(())
        })
        .await;
    }

    /// Stops Hydra (its in-memory database is lost).
    pub fn stop(&mut self) {
        stop_supervised(&mut self.child);
    }

    /// Stops and starts Hydra on the same ports, with an empty database.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// The Hydra process's ID (not its supervising shell's).
    pub fn pid(&self) -> Option<u32> {
        let config = self.dir.join("hydra.yml").display().to_string();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?.replace('\0', " ");
            (cmdline.contains(&config) && cmdline.contains(" serve all") && !cmdline.starts_with("bash")).then_some(pid)
        })
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.public_port)
    }

    pub fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.issuer())
    }

    /// The owner an operator of the cluster of `client` gives its clients by
    /// default: `registrar:<the kube-system namespace's UID>`.
    pub async fn cluster_owner(client: &kube::Client) -> String {
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
        let uid = namespaces.get("kube-system").await.expect("the kube-system namespace").metadata.uid;
        format!("registrar:{}", uid.expect("a UID"))
    }

    /// The operator arguments that register apps at this Hydra.
    pub fn operator_args(&self, sync_interval: &str) -> Vec<String> {
        [
            "--auth-server",
            "hydra",
            "--auth-server-admin-url",
            &self.admin_url(),
            "--auth-server-issuer",
            &self.issuer(),
            "--auth-server-sync-interval",
            sync_interval,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// A client_credentials token request with HTTP Basic (form-encoded parts):
    /// the HTTP status and the JSON answer.
    pub async fn client_credentials(&self, client_id: &str, secret: &str, scope: &str) -> (u16, Value) {
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let response = self
            .http
            .post(self.token_url())
            .basic_auth(encode(client_id), Some(encode(secret)))
            .form(&[("grant_type", "client_credentials"), ("scope", scope)])
            .send()
            .await
            .expect("token request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Introspects a token at the admin API.
    pub async fn introspect(&self, token: &str) -> Value {
        let response = self
            .http
            .post(format!("{}/admin/oauth2/introspect", self.admin_url()))
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspect");
        response.json().await.expect("introspection JSON")
    }

    /// The client of that ID at the admin API (`None`: 404).
    pub async fn client(&self, client_id: &str) -> Option<Value> {
        let response =
            self.http.get(format!("{}/admin/clients/{client_id}", self.admin_url())).send().await.expect("get client");
        if response.status().as_u16() == 404 {
            return None;
        }
        assert!(response.status().is_success(), "GET client: {}", response.status());
        Some(response.json().await.expect("client JSON"))
    }

    /// Every client at the admin API with this owner (all pages).
    pub async fn clients_of(&self, owner: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}/admin/clients?owner={owner}&page_size=250", self.admin_url());
            if let Some(t) = &token {
                url.push_str(&format!("&page_token={t}"));
            }
            // A page read can time out on a loaded machine: read it again.
            let (link, page) = eventually("a page of Hydra's client list", Duration::from_secs(60), || async {
                let response = self.http.get(&url).send().await.ok()?;
                if !response.status().is_success() {
                    return None;
                }
                let link = response.headers().get("link").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let page: Vec<Value> = response.json().await.ok()?;
                Some((link, page))
            })
            .await;
            let n = page.len();
            all.extend(page);
            let next = link.split(',').find(|p| p.contains("rel=\"next\"")).and_then(|p| {
                p.split("page_token=").nth(1).map(|t| t.split(['>', '&']).next().unwrap_or_default().to_owned())
            });
            match next {
                Some(t) if n == 250 && token.as_ref() != Some(&t) => token = Some(t),
                _ => return all,
            }
        }
    }

    /// Admin API call with a JSON body (for tests that change Hydra behind
    /// registrar's back): the HTTP status.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
        let mut request = self.http.request(method, format!("{}{path}", self.admin_url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("admin call").status().as_u16()
    }
}

impl Drop for Hydra {
    fn drop(&mut self) {
        self.stop();
        // A failing test leaves Hydra's log behind, and says where.
        if std::thread::panicking() {
            eprintln!("Hydra's log kept at {}", self.dir.join("hydra.log").display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
