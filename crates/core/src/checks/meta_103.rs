//! Evaluate: META_103 Even meta group size, one finding per meta group.

use std::collections::BTreeSet;

use serde_json::json;

use super::{
    duration_words, group_key, CheckId, CheckSpec, Evaluation, Finding, Judged, Remediation,
    Setting, Severity, Thresholds,
};
use crate::time_format::rfc3339;

impl CheckId {
    /// META_103 Even meta group size (this project's own code).
    pub const META_103: CheckId = CheckId::new("META_103");
}

/// META_103 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_103,
    name: "Even meta group size",
    severity: Severity::Warning,
    category: "jetstream_meta",
    applies_to: "the meta group (one finding per group: per JetStream domain)",
    threshold: |t| {
        format!(
            "the leader's cluster_size has been even (2, 4, 6 ...) for {}",
            duration_words(t.even_after)
        )
    },
    settings: |t| {
        vec![Setting {
            name: "even_after",
            flag: "--even-after",
            env: "INSIGHTS_EVEN_AFTER",
            value: duration_words(t.even_after),
            default: duration_words(Thresholds::default().even_after),
        }]
    },
    runbook: include_str!("../../../../runbooks/META_103.md"),
    held_for: None,
    evaluate,
};

/// How many members of a group of `size` may fail with the rest keeping quorum.
pub fn failures_tolerated(size: usize) -> usize {
    size.saturating_sub(size / 2 + 1)
}

/// Raised when the size the leader last reported is even and has held for `even_after`;
/// undecided before any leader reported one.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::META_103;
    let meta = j.meta;
    let key = group_key(check, meta);
    let Some(size) = j.history.size.as_ref() else {
        return Evaluation::ran(check, meta, Vec::new(), BTreeSet::from([key]));
    };
    let held = j.now.duration_since(size.since).unwrap_or_default();
    if size.size < 2 || size.size % 2 == 1 || held < j.thresholds.even_after {
        return Evaluation::ran(check, meta, Vec::new(), BTreeSet::new());
    }
    let n = size.size;
    let quorum = n / 2 + 1;
    let tolerated = failures_tolerated(n);
    let odd_smaller = n - 1;
    let summary = format!(
        "The meta group of {} has an even number of members, {n} (quorum {quorum}): it survives \
         {tolerated} failure{} like a group of {odd_smaller} would, and a split into two halves \
         of {} leaves neither side with quorum.",
        meta.describe_group(),
        if tolerated == 1 { "" } else { "s" },
        n / 2
    );
    let finding = Finding {
        check,
        key,
        cluster: None,
        domain: meta.domain.clone(),
        server: None,
        summary,
        evidence: json!({
            "cluster_size": n,
            "quorum_needed": quorum,
            "failures_tolerated": tolerated,
            "members": size.members,
            "since": rfc3339(size.since),
        }),
        remediation: vec![
            Remediation::step(format!(
                "Add one JetStream server (to {}) for one more tolerated failure, or remove one (to {odd_smaller}) to tolerate as many with fewer servers.",
                n + 1
            )),
            Remediation::with_command(
                "If the extra member is the stale peer of a renamed or retired server (META_102, META_001), remove it.",
                "nats server cluster peer-remove <old name or peer id>",
            ),
            Remediation::with_command(
                "Check the size the group reports after the change.",
                "nats server report jetstream",
            ),
        ],
        // Material: the size.
        fingerprint: n.to_string(),
    };
    Evaluation::ran(check, meta, vec![finding], BTreeSet::new())
}

#[cfg(test)]
mod tests {
    use super::failures_tolerated;

    #[test]
    fn an_even_group_tolerates_what_one_member_fewer_does() {
        assert_eq!(failures_tolerated(2), 0);
        assert_eq!(failures_tolerated(3), 1);
        assert_eq!(failures_tolerated(4), 1);
        assert_eq!(failures_tolerated(5), 2);
        assert_eq!(failures_tolerated(6), 2);
    }
}
