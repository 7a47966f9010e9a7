//! registrar: OAuth 2.0 client registrations as declarative Kubernetes resources.
//!
//! An `AppRegistration` declares an app; the operator mints its Client ID and
//! Client Secret into a Kubernetes Secret, rotates and revokes it. An
//! `AppConsent` enables a shared app for another namespace. README.md introduces
//! it; docs/ holds the guide, the reference (fields, conditions, flags) and the
//! security model.
#![forbid(unsafe_code)]

pub mod api;
pub mod authserver;
pub mod cli;
pub mod cluster;
pub mod consent;
pub mod credentials;
pub mod registration;
pub mod registry;
pub mod runtime;

#[cfg(test)]
mod layering;

/// The documentation stays navigable: every relative link in README.md, the
/// chart's README and docs/ (docs/adr/ too) leads to a file that exists and,
/// with an anchor, to one of its headings.
#[cfg(test)]
mod docs {
    use std::path::{Path, PathBuf};

    /// GitHub's anchor for a heading: lower case, punctuation but `-` and `_`
    /// dropped, spaces made hyphens.
    fn slug(heading: &str) -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    }

    fn anchors(markdown: &str) -> Vec<String> {
        let mut in_code = false;
        let mut anchors = Vec::new();
        for line in markdown.lines() {
            if line.starts_with("```") {
                in_code = !in_code;
            } else if !in_code && line.starts_with('#') {
                anchors.push(slug(line.trim_start_matches('#')));
            }
        }
        anchors
    }

    fn links(markdown: &str) -> Vec<String> {
        markdown
            .split("](")
            .skip(1)
            .filter_map(|rest| rest.split_once(')').map(|(target, _)| target.to_owned()))
            .filter(|target| !target.contains("://") && !target.starts_with("mailto:") && !target.contains(' '))
            .collect()
    }

    #[test]
    fn every_relative_link_leads_somewhere() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<PathBuf> = vec![root.join("README.md"), root.join("charts/registrar/README.md")];
        let mut dirs = vec![root.join("docs")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("docs/") {
                let path = entry.expect("docs/ entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "md") {
                    files.push(path);
                }
            }
        }
        let mut broken = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).expect("read");
            for link in links(&text) {
                let (path, anchor) = link.split_once('#').unwrap_or((&link, ""));
                let target = if path.is_empty() { file.clone() } else { file.parent().expect("dir").join(path) };
                if !target.exists() {
                    broken.push(format!("{}: {link} (no such file)", file.display()));
                } else if !anchor.is_empty()
                    && target.extension().is_some_and(|e| e == "md")
                    && !anchors(&std::fs::read_to_string(&target).expect("read")).iter().any(|a| a == anchor)
                {
                    broken.push(format!("{}: {link} (no such heading)", file.display()));
                }
            }
        }
        assert!(files.len() >= 12, "found the docs: {files:?}");
        assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    }

    #[test]
    fn a_heading_s_anchor_is_github_s() {
        assert_eq!(
            slug(" Walkthrough: moving a client in, keeping it, handing it over"),
            "walkthrough-moving-a-client-in-keeping-it-handing-it-over"
        );
        assert_eq!(slug(" `make test`"), "make-test");
    }
}
