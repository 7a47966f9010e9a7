//! `kubectl registrar`: the seeds' panels and actions (Register, Browse,
//! Add and Remove Consent, View details, Rotate, Revoke, Export and Import)
//! as a kubectl plugin. The binary is `kubectl-registrar`; kubectl finds it on
//! the PATH.
//!
//! It talks to the apiserver only, with the user's own credentials: it can do
//! nothing the user's RBAC does not allow, and it shows a client secret only
//! when that is the command's purpose (register and rotate, once; show with
//! `--reveal`).

mod apps;
mod cluster;
mod consents;
mod render;
mod transfer;

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use cluster::CliError;

const EXAMPLES: &str = "\
Examples:
  # Register a confidential app for the organization; the secret is shown once
  kubectl registrar register billing-portal -n team-a --scope Organization \\
      --redirect-uri https://billing.example.com/callback --oauth-scope invoices.read

  # The Browse panel of a namespace: its Organization and Global tabs
  kubectl registrar browse -n team-b

  # Use an app of another namespace here, then stop using it
  kubectl registrar consent add team-a/billing-portal -n team-b
  kubectl registrar consent remove team-a/billing-portal -n team-b

  # Details, rotation, revocation
  kubectl registrar show billing-portal -n team-a
  kubectl registrar rotate billing-portal -n team-a --grace 1h
  kubectl registrar revoke billing-portal -n team-a

  # Move apps to another namespace (secrets are never exported)
  kubectl registrar export --all -n team-a > apps.yaml
  kubectl registrar import apps.yaml -n team-c

Exit status: 0 on success, 1 when the command failed (the reason is on
stderr), 2 for a usage error.";

/// OAuth 2.0 app registrations, consents and credentials, from kubectl.
#[derive(Parser, Debug)]
#[command(name = "kubectl-registrar", bin_name = "kubectl registrar", version, after_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// The flags kubectl users expect on every command.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Act as this user (impersonation, like kubectl --as).
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Act as a member of this group (repeat; with --as).
    #[arg(long = "as-group", global = true, value_name = "GROUP", requires = "as_user")]
    pub as_groups: Vec<String>,
    /// The namespace (default: the context's namespace, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// How long to wait for registrar before giving up (e.g. 30s, 2m).
    #[arg(long, global = true, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// When to use colours: auto (on a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, default_value = "auto", value_name = "WHEN")]
    pub color: ColorWhen,
    /// The organization of namespaces without the registrar.dev/organization
    /// label (registrar's --default-organization).
    #[arg(long, global = true, default_value = "default", value_name = "NAME", hide_short_help = true)]
    pub default_organization: String,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

/// How a command prints what it shows.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Yaml,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Register an app: creates the AppRegistration, waits for registrar to
    /// issue it, and shows the Client ID and the Client Secret once.
    #[command(after_help = "Examples:
  kubectl registrar register billing-portal -n team-a --scope Organization \\
      --redirect-uri https://billing.example.com/callback --oauth-scope invoices.read
  kubectl registrar register spa -n team-a --public --pkce --redirect-uri https://spa.example.com/cb
  kubectl registrar register reports -n team-a --grant-type client_credentials --dry-run -o yaml")]
    Register(apps::RegisterArgs),
    /// The Browse panel of a namespace: the apps of its organization and the
    /// Global apps, with whether this namespace consented.
    #[command(after_help = "Examples:
  kubectl registrar browse -n team-b
  kubectl registrar browse -n team-b -o json")]
    Browse(apps::BrowseArgs),
    /// Add or remove this namespace's consent to an app of another namespace.
    #[command(subcommand)]
    Consent(consents::ConsentCommand),
    /// The details of an app; the client secret only with --reveal.
    #[command(after_help = "Examples:
  kubectl registrar show billing-portal -n team-a
  kubectl registrar show billing-portal -n team-a --reveal")]
    Show(apps::ShowArgs),
    /// Rotate an app's secret: waits for the new version and shows it once.
    #[command(after_help = "Examples:
  kubectl registrar rotate billing-portal -n team-a
  kubectl registrar rotate billing-portal -n team-a --grace 1h --no-show")]
    Rotate(apps::RotateArgs),
    /// Revoke an app: deletes it after you type its name, and waits until its
    /// Secret is gone and its consents are revoked.
    #[command(after_help = "Examples:
  kubectl registrar revoke billing-portal -n team-a
  kubectl registrar revoke billing-portal -n team-a --yes")]
    Revoke(apps::RevokeArgs),
    /// Export apps as re-appliable manifests: status, server-set metadata and
    /// every secret stripped.
    #[command(after_help = "Examples:
  kubectl registrar export billing-portal -n team-a > billing-portal.yaml
  kubectl registrar export --all -A -o json > apps.json")]
    Export(transfer::ExportArgs),
    /// Import an export (server-side apply): reports what was created and
    /// what existed; new apps get new secrets.
    #[command(after_help = "Examples:
  kubectl registrar import apps.yaml -n team-c
  kubectl registrar export --all -n team-a | kubectl registrar import - -n team-c")]
    Import(transfer::ImportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Examples:
  source <(kubectl-registrar completion bash)
  kubectl-registrar completion zsh > \"${fpath[1]}/_kubectl-registrar\"")]
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    render::init_colors(cli.global.color);
    if let Command::Completion { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "kubectl-registrar", &mut std::io::stdout());
        return Ok(());
    }
    // A dry run needs no cluster.
    if let Command::Register(args) = &cli.command
        && args.dry_run
    {
        return apps::print_dry_run(args, cli.global.namespace.as_deref().unwrap_or("default"));
    }
    let target = cluster::Target::connect(&cli.global).await?;
    match cli.command {
        Command::Register(args) => apps::register(&target, args).await,
        Command::Browse(args) => apps::browse(&target, args).await,
        Command::Consent(command) => consents::run(&target, command).await,
        Command::Show(args) => apps::show(&target, args).await,
        Command::Rotate(args) => apps::rotate(&target, args).await,
        Command::Revoke(args) => apps::revoke(&target, args).await,
        Command::Export(args) => transfer::export(&target, args).await,
        Command::Import(args) => transfer::import(&target, args).await,
        Command::Completion { .. } => Ok(()),
    }
}

/// Prints an error as kubectl does: `error: ...` on stderr.
pub fn report(error: &CliError) {
    render::note(&format!("{} {error}", render::paint(render::BAD, "error:")));
}

/// `30s`, `5m`, `1h30m`, `2h`: Kubernetes-style durations.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed: kube::core::Duration =
        text.parse().map_err(|e| format!("{text:?} is not a duration like 30s or 5m: {e}"))?;
    if parsed.is_negative() {
        return Err(format!("{text:?} must not be negative"));
    }
    Ok(parsed.into())
}

/// `KEY=VALUE`, as kubectl's --label.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("a label is KEY=VALUE, not {text:?}")),
    }
}

/// An app named on the command line: `NAME` (in the namespace of -n) or
/// `NAMESPACE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppName {
    pub namespace: Option<String>,
    pub name: String,
}

impl std::str::FromStr for AppName {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once('/') {
            None if !text.is_empty() => Ok(AppName { namespace: None, name: text.to_owned() }),
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(AppName { namespace: Some(ns.to_owned()), name: name.to_owned() })
            }
            _ => Err(format!("an app is NAME or NAMESPACE/NAME, not {text:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn apps_are_named_with_or_without_their_namespace() {
        assert_eq!("billing".parse(), Ok(AppName { namespace: None, name: "billing".into() }));
        assert_eq!("team-a/billing".parse(), Ok(AppName { namespace: Some("team-a".into()), name: "billing".into() }));
        for bad in ["", "/billing", "team-a/", "a/b/c"] {
            assert!(bad.parse::<AppName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_are_kubernetes_style() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5m").is_err());
    }

    #[test]
    fn completion_scripts_know_every_command() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "kubectl-registrar", &mut script);
            let script = String::from_utf8(script).expect("utf-8");
            for command in ["register", "browse", "consent", "show", "rotate", "revoke", "export", "import"] {
                assert!(script.contains(command), "{shell}: {command}");
            }
        }
    }

    #[test]
    fn global_flags_go_anywhere_like_kubectl() {
        let cli = Cli::try_parse_from(["kubectl-registrar", "show", "billing", "-n", "team-a", "--context", "prod"])
            .expect("parses");
        assert_eq!(cli.global.namespace.as_deref(), Some("team-a"));
        assert_eq!(cli.global.context.as_deref(), Some("prod"));
    }
}
