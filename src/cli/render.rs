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

/// Prints to stdout, colours stripped when it is not a terminal, control
/// characters made visible ([`visible`]).
pub fn out(text: &str) {
    let mut stdout = anstream::stdout();
    let _ = writeln!(stdout, "{}", visible(text));
}

/// Prints to stderr, like [`out`].
pub fn note(text: &str) {
    let mut stderr = anstream::stderr();
    let _ = writeln!(stderr, "{}", visible(text));
}

/// The SGR parameters the plugin's own styles use (bold, dim, red, green,
/// yellow, and their resets): the only escape sequences printed as such.
const OWN_SGR: &[&str] = &["0", "1", "2", "22", "31", "32", "33", "39"];

/// `text` with every control character but the line breaks the plugin lays
/// out made visible (`\u{1b}`), so that nothing read from the cluster — a
/// name, a display name, an owner, a message — can move the cursor, clear
/// the screen, retitle the terminal or hide text. The plugin's own colours
/// (select graphic rendition with the parameters it uses) pass.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '\u{1b}'
            && let Some(params) = rest.strip_prefix("\u{1b}[").and_then(|r| r.split_once('m')).map(|(p, _)| p)
            && params.split(';').all(|p| OWN_SGR.contains(&p))
        {
            let sequence = 2 + params.len() + 1;
            shown.push_str(&rest[..sequence]);
            rest = &rest[sequence..];
            continue;
        }
        if c.is_control() && c != '\n' {
            shown.push_str(&c.escape_unicode().to_string());
        } else {
            shown.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    std::borrow::Cow::Owned(shown)
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
    fn control_characters_from_the_cluster_are_shown_not_obeyed() {
        let owner = "mallory\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[8mhidden\r";
        let line = format!("Owner: {}", paint(BOLD, owner));
        let shown = visible(&line);
        assert!(shown.starts_with("Owner: \u{1b}[1m"), "the plugin's own bold passes: {shown:?}");
        assert!(shown.ends_with("\u{1b}[0m"), "{shown:?}");
        let inner = &shown["Owner: \u{1b}[1m".len()..shown.len() - "\u{1b}[0m".len()];
        assert!(!inner.chars().any(char::is_control), "{inner:?}");
        assert!(inner.contains("\\u{1b}]0;pwned\\u{7}") && inner.contains("\\u{1b}[8m"), "{inner:?}");
        assert_eq!(visible("two\nlines"), "two\nlines", "line breaks are the plugin's own");
        assert_eq!(visible("tab\there"), "tab\\u{9}here");
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
