//! Real reverse proxies in front of a test upstream, authenticating clients
//! through registrar's forward-auth endpoint: nginx (`auth_request`) and Caddy
//! (`forward_auth`), from Debian's packages unpacked by
//! scripts/install-proxies.sh, on loopback, under [`super::spawn_supervised`].

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{STATE_DIR_PREFIX, eventually, free_port, spawn_supervised, stop_supervised};

/// Where the proxies were unpacked (`usr/sbin/nginx`, `usr/bin/caddy`).
fn root() -> PathBuf {
    if let Some(path) = std::env::var_os("REGISTRAR_PROXIES") {
        return path.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-proxies.sh");
    let out = Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().expect("run install-proxies.sh");
    assert!(out.status.success(), "{} failed", script.display());
    String::from_utf8_lossy(&out.stdout).trim().into()
}

/// The kinds of proxy.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Nginx,
    Caddy,
}

/// A running proxy on `port`. Stopped when dropped.
pub struct Proxy {
    pub kind: Kind,
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Proxy {
    /// Starts a proxy in front of `upstream` (a loopback port) that asks the
    /// registry on `registry` (a loopback port, plain HTTP) about each request's
    /// Basic client credentials, as the caller with bearer `token`, and passes
    /// `X-Client-Id` and `X-Client-Namespace` on to the upstream.
    pub async fn start(kind: Kind, registry: u16, token: &str, upstream: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("{STATE_DIR_PREFIX}{kind:?}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(dir.join("tmp")).expect("proxy dir");
        let port = free_port();
        let root = root();
        let log = dir.join("proxy.log");
        let child = match kind {
            Kind::Nginx => {
                let d = dir.display();
                let config = format!(
                    r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      auth_request /_registrar;
      auth_request_set $client_id $upstream_http_x_client_id;
      auth_request_set $client_namespace $upstream_http_x_client_namespace;
      proxy_set_header X-Client-Id $client_id;
      proxy_set_header X-Client-Namespace $client_namespace;
      proxy_pass http://127.0.0.1:{upstream};
    }}
    location = /_registrar {{
      internal;
      proxy_pass http://127.0.0.1:{registry}/v1/forward-auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Registry-Authorization "Bearer {token}";
    }}
  }}
}}
"#
                );
                std::fs::write(dir.join("nginx.conf"), config).expect("nginx.conf");
                let (prefix, conf) = (dir.clone(), dir.join("nginx.conf"));
                let args = [
                    "-p".as_ref(),
                    prefix.as_os_str(),
                    "-c".as_ref(),
                    conf.as_os_str(),
                    "-g".as_ref(),
                    "daemon off;".as_ref(),
                ];
                spawn_supervised(&root.join("usr/sbin/nginx"), &args, &[], &log)
            }
            Kind::Caddy => {
                let config = format!(
                    r#"{{
  admin off
  auto_https off
}}
http://127.0.0.1:{port} {{
  bind 127.0.0.1
  forward_auth 127.0.0.1:{registry} {{
    uri /v1/forward-auth
    header_up X-Registry-Authorization "Bearer {token}"
    copy_headers X-Client-Id X-Client-Namespace
  }}
  reverse_proxy 127.0.0.1:{upstream}
}}
"#
                );
                std::fs::write(dir.join("Caddyfile"), config).expect("Caddyfile");
                let conf = dir.join("Caddyfile");
                let args =
                    ["run".as_ref(), "--config".as_ref(), conf.as_os_str(), "--adapter".as_ref(), "caddyfile".as_ref()];
                let home = dir.as_os_str();
                let env = [("HOME", home), ("XDG_CONFIG_HOME", home), ("XDG_DATA_HOME", home)];
                spawn_supervised(&root.join("usr/bin/caddy"), &args, &env, &log)
            }
        };
        let proxy = Proxy { kind, port, dir, child: Some(child) };
        eventually(&format!("{kind:?} to listen"), Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
        })
        .await;
        proxy
    }

    /// The proxy's log, for failures.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        format!("{}{}", read("proxy.log"), read("error.log"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        stop_supervised(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
