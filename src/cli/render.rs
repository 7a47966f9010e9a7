//! What the plugin prints: tables like kubectl's, details as aligned fields,
//! colours only on a terminal, a spinner while it waits.

use std::io::Write;

use anstyle::{AnsiColor, Style};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::{CliError, ColorWhen, Format};

pub const BOLD: Style = Style::new().bold();
pub const GOOD: Style = AnsiColor::Green.on_default();
pub const WARN: Style = AnsiColor::Yellow.on_default().bold();
pub const BAD: Style = AnsiColor::Red.on_default();
pub const DIM: Style = Style::new().dimmed();

/// Sets when colours are written; `auto` follows the terminal and NO_COLOR.
pub fn init_colors(when: ColorWhen) {
    let choice = match when {
        ColorWhen::Auto => anstream::ColorChoice::Auto,
        ColorWhen::Always => anstream::ColorChoice::Always,
        ColorWhen::Never => anstream::ColorChoice::Never,
    };
    choice.write_global();
}

/// `text` in `style` (stripped again by anstream off a terminal).
pub fn paint(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// Prints to stdout, colours stripped when it is not a terminal.
pub fn out(text: &str) {
    let mut stdout = anstream::stdout();
    let _ = writeln!(stdout, "{text}");
}

/// Prints to stderr, colours stripped when it is not a terminal.
pub fn note(text: &str) {
    let mut stderr = anstream::stderr();
    let _ = writeln!(stderr, "{text}");
}

/// A spinner on stderr while the plugin waits; invisible off a terminal.
pub fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(format!("waiting for {what}"));
    bar.enable_steady_tick(std::time::Duration::from_millis(100));
    bar
}

/// Rows under a header, columns padded to their widest cell, as kubectl prints.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(visible_width(cell));
            }
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            text.push_str(&cell);
            if i < last {
                let pad = widths[i] - visible_width(&cell) + 3;
                text.push_str(&" ".repeat(pad));
            }
        }
        text
    };
    let mut lines = vec![line(header.iter().map(|h| (*h).to_owned()).collect())];
    lines.extend(rows.iter().map(|r| line(r.clone())));
    lines.join("\n")
}

/// The width a cell takes on screen: without colour codes.
fn visible_width(text: &str) -> usize {
    anstream::adapter::strip_str(text).to_string().chars().count()
}

/// `label: value` lines, labels aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(label, value)| format!("{:<width$} {value}", format!("{label}:"), width = width))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `value` as YAML or JSON.
pub fn structured<T: Serialize>(value: &T, format: Format) -> Result<String, CliError> {
    match format {
        Format::Json => serde_json::to_string_pretty(value).map_err(|e| CliError::Input(e.to_string())),
        _ => serde_saphyr::to_string(value).map_err(|e| CliError::Input(e.to_string())),
    }
}

/// The one time a client secret is printed: the Client ID, the secret, and
/// the warning that it will not be shown again.
pub fn secret_once(client_id: &str, secret: Option<&str>, secret_ref: &str) -> String {
    let mut pairs = vec![("Client ID", paint(BOLD, client_id))];
    if let Some(secret) = secret {
        pairs.push(("Client Secret", paint(BOLD, secret)));
    }
    let mut text = fields(&pairs);
    if secret.is_some() {
        text.push_str(&format!(
            "\n\n{} Copy the client secret now: it will not be shown again.\n  Workloads mount it from Secret {secret_ref}.",
            paint(WARN, "!")
        ));
    } else {
        text.push_str(&format!(
            "\n\nA public client has no secret. Workloads read the Client ID from Secret {secret_ref}."
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_to_the_widest_cell_ignoring_colours() {
        let rows = vec![vec!["billing-portal".to_owned(), paint(GOOD, "yes")], vec!["crm".to_owned(), "no".to_owned()]];
        let text = anstream::adapter::strip_str(&table(&["NAME", "CONSENTED"], &rows)).to_string();
        assert_eq!(text, "NAME             CONSENTED\nbilling-portal   yes\ncrm              no");
    }

    #[test]
    fn fields_align_their_labels() {
        let text = fields(&[("Client ID", "abc".into()), ("Scope", "Global".into())]);
        assert_eq!(text, "Client ID: abc\nScope:     Global");
    }

    #[test]
    fn the_secret_comes_with_the_warning_and_a_public_client_has_none() {
        let text =
            anstream::adapter::strip_str(&secret_once("id-1", Some("s3cr3t"), "team-a/app-credentials")).to_string();
        assert!(text.contains("Client Secret: s3cr3t") && text.contains("will not be shown again"), "{text}");
        let public = secret_once("id-2", None, "team-a/spa-credentials");
        assert!(!public.contains("Client Secret") && public.contains("no secret"), "{public}");
    }
}
