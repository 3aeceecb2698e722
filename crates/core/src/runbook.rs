//! Serve: the runbook of each check (`runbooks/<CHECK>.md`, compiled in), for
//! `nats-insights explain` and `$INSIGHTS.API.EXPLAIN`. Findings carry the short remediation;
//! the runbook carries the rest.

use serde::Serialize;

use crate::checks::{CheckId, Severity};

/// The headings every runbook has, in order, with the keys the API uses for them.
pub const SECTIONS: [(&str, &str); 6] = [
    ("What it means", "what_it_means"),
    ("Why it matters", "why_it_matters"),
    ("How to confirm", "how_to_confirm"),
    ("Fix it now", "fix_it_now"),
    ("Short term", "short_term"),
    ("Long term", "long_term"),
];

/// The markdown source of a check's runbook (its spec's).
pub fn markdown(check: CheckId) -> &'static str {
    check.spec().runbook
}

/// `type` of the EXPLAIN response.
pub const EXPLAIN_TYPE: &str = "io.nats.insights.v1.explain_response";

/// A runbook as the EXPLAIN endpoint returns it (`schemas/explain_response.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Runbook {
    /// `io.nats.insights.v1.explain_response`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Check id.
    pub check: CheckId,
    /// Check name.
    pub name: &'static str,
    /// Severity of its findings.
    pub severity: Severity,
    /// Category.
    pub category: &'static str,
    /// Each section's markdown, keyed as in `SECTIONS`.
    pub sections: std::collections::BTreeMap<&'static str, String>,
    /// The whole runbook as markdown.
    pub markdown: &'static str,
}

/// The runbook of a check, split into its sections.
pub fn runbook(check: CheckId) -> Runbook {
    let text = markdown(check);
    let mut sections = std::collections::BTreeMap::new();
    let mut current: Option<&'static str> = None;
    let mut body = String::new();
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            if let Some(key) = current.take() {
                sections.insert(key, body.trim().to_string());
            }
            body.clear();
            current = SECTIONS
                .iter()
                .find(|(h, _)| *h == heading.trim())
                .map(|(_, k)| *k);
        } else if current.is_some() {
            body.push_str(line);
            body.push('\n');
        }
    }
    if let Some(key) = current {
        sections.insert(key, body.trim().to_string());
    }
    Runbook {
        kind: EXPLAIN_TYPE,
        check,
        name: check.name(),
        severity: check.severity(),
        category: check.category(),
        sections,
        markdown: text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_runbook_has_every_section_in_order_under_its_title() {
        for check in CheckId::all() {
            let text = markdown(check);
            assert!(
                text.starts_with(&format!("# {} {}", check.as_str(), check.name())),
                "{check} title"
            );
            let positions: Vec<usize> = SECTIONS
                .iter()
                .map(|(h, _)| {
                    text.find(&format!("\n## {h}\n"))
                        .unwrap_or_else(|| panic!("{check}: missing section {h}"))
                })
                .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{check}: order");
            let book = runbook(check);
            assert_eq!(book.sections.len(), SECTIONS.len());
            assert!(
                book.sections.values().all(|s| !s.is_empty()),
                "{check}: empty section"
            );
        }
    }
}
