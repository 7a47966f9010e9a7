//! The plugin in a real terminal (tmux): what a person sees. The revoke
//! confirmation refuses a wrong name and accepts the right one; register and
//! rotate show the secret once; browse renders both tabs; colours are on.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use registrar::api::AppRegistration;

use crate::support::{
    TestNamespace,
    apps::{credentials, secret_value, status},
    control_plane, eventually, install_registrar,
    operator::Operator,
};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A tmux server of its own (its own socket), with one shell. Killed when dropped.
struct Terminal {
    socket: PathBuf,
}

impl Terminal {
    fn start(kubeconfig: &Path) -> Self {
        let socket = std::env::temp_dir().join(format!("registrar-tmux-{:08x}", rand::random::<u32>()));
        let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-registrar")).parent().expect("bin dir").to_path_buf();
        let path = format!("{}:{}", plugin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let terminal = Terminal { socket };
        let shell = format!(
            "env -u NO_COLOR TERM=xterm-256color PATH='{path}' KUBECONFIG='{}' PS1='$ ' bash --norc --noprofile",
            kubeconfig.display()
        );
        terminal.tmux(&["-f", "/dev/null", "new-session", "-d", "-x", "220", "-y", "80", "-s", "plugin", &shell]);
        terminal.tmux(&["set-option", "-t", "plugin", "history-limit", "5000"]);
        terminal
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-S").arg(&self.socket).args(args).output().expect("run tmux");
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `keys` and presses Enter.
    fn type_line(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", "plugin", "-l", keys]);
        self.tmux(&["send-keys", "-t", "plugin", "Enter"]);
    }

    /// The screen and its scrollback, as text (`escapes`: with colour codes).
    fn screen(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-J", "-t", "plugin", "-S", "-5000"];
        if escapes {
            args.push("-e");
        }
        self.tmux(&args)
    }

    /// Waits until the screen shows `text` (`count` times, at least).
    async fn wait_for(&self, text: &str, count: usize) -> String {
        let what = format!("the terminal to show {text:?} {count} time(s)");
        eventually(&what, TIMEOUT, || async {
            let screen = self.screen(false);
            (screen.matches(text).count() >= count).then_some(screen)
        })
        .await
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux").arg("-S").arg(&self.socket).arg("kill-server").output();
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[tokio::test]
async fn the_plugin_in_a_real_terminal() {
    let ns = TestNamespace::labelled("term", &[("registrar.dev/organization", "terminal-tests")]).await;
    install_registrar(&ns.client).await;
    let _operator = Operator::start(&ns.name).await;
    let term = Terminal::start(control_plane().kubeconfig());
    let n = &ns.name;

    // Register: the secret once, with the warning, in colour.
    term.type_line(&format!(
        "kubectl-registrar register portal -n {n} --scope organization --redirect-uri https://portal.example.com/cb \
         --oauth-scope portal.read"
    ));
    term.wait_for("will not be shown again", 1).await;
    let app = ns.api::<AppRegistration>().get("portal").await.expect("registered");
    let id = status(&app).client_id.expect("issued");
    let first =
        secret_value(&credentials(&ns, "portal-credentials").await.expect("Secret"), "client_secret").expect("secret");
    let screen = term.screen(false);
    assert_eq!(screen.matches(&first).count(), 1, "the secret, once:\n{screen}");
    assert!(screen.contains(&id), "{screen}");
    assert!(term.screen(true).contains("\u{1b}["), "colours on a terminal");

    // Show hides it.
    term.type_line(&format!("kubectl-registrar show portal -n {n}"));
    term.wait_for("--reveal shows it", 1).await;
    assert_eq!(term.screen(false).matches(&first).count(), 1, "show does not print it again");

    // Rotate: the new secret once.
    term.type_line(&format!("kubectl-registrar rotate portal -n {n}"));
    term.wait_for("will not be shown again", 2).await;
    let second =
        secret_value(&credentials(&ns, "portal-credentials").await.expect("Secret"), "client_secret").expect("secret");
    assert_ne!(first, second);
    let screen = term.screen(false);
    assert_eq!(screen.matches(&second).count(), 1, "the new secret, once:\n{screen}");
    assert!(screen.contains("Rotated portal to secret version 2"), "{screen}");

    // Browse: both tabs.
    term.type_line(&format!("kubectl-registrar browse -n {n}"));
    let screen = term.wait_for("Use one with", 1).await;
    assert!(screen.contains("Organization (terminal-tests)") && screen.contains("Global"), "{screen}");
    assert!(screen.lines().any(|l| l.starts_with(&format!("{n}/portal"))), "{screen}");

    // Revoke: a wrong name is refused, the right one revokes.
    term.type_line(&format!("kubectl-registrar revoke portal -n {n}"));
    term.wait_for("Type the app's name (portal) to confirm:", 1).await;
    term.type_line("potral");
    term.wait_for("nothing was revoked", 1).await;
    assert!(ns.api::<AppRegistration>().get_opt("portal").await.expect("get").is_some(), "still there");
    term.type_line(&format!("kubectl-registrar revoke portal -n {n}"));
    term.wait_for("Type the app's name (portal) to confirm:", 2).await;
    term.type_line("portal");
    let screen = term.wait_for(&format!("Revoked {n}/portal"), 1).await;
    assert!(screen.contains(&id), "{screen}");
    assert!(ns.api::<AppRegistration>().get_opt("portal").await.expect("get").is_none());
    let all = term.screen(false);
    assert_eq!(all.matches(&first).count() + all.matches(&second).count(), 2, "each secret shown exactly once");
    drop(term);
    ns.delete().await;
}
