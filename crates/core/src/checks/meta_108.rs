//! Evaluate: META_108 Known-bad server version, one finding per meta member running a
//! nats-server release with a known data-loss defect (the list below, each entry with its
//! sources). The version comes from each member's own reply envelope, or as last seen: every
//! reply carries it, the identities of a large group's poll included.

use serde_json::json;

use super::{server_key, CheckId, CheckSpec, Evaluation, Finding, Judged, Remediation, Severity};

impl CheckId {
    /// META_108 Known-bad server version (this project's own code).
    pub const META_108: CheckId = CheckId::new("META_108");
}

/// A range of nats-server releases with a known defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadRelease {
    /// First affected release.
    pub first: (u32, u32, u32),
    /// Last affected release.
    pub last: (u32, u32, u32),
    /// The release that fixed it.
    pub fixed: &'static str,
    /// The defect, in words.
    pub defect: &'static str,
    /// Where the range and the fix are stated.
    pub sources: &'static [&'static str],
}

/// Releases with known defects that lose data. Only ranges stated by the NATS maintainers or
/// shown by a reproduction, each with its sources; `runbooks/META_108.md` explains each.
pub const BAD_RELEASES: &[BadRelease] = &[
    BadRelease {
        first: (2, 10, 20),
        last: (2, 10, 22),
        fixed: "2.10.23",
        defect: "a few process crashes (kill -9) could make the cluster forget a stream: it and \
                 its messages were gone after every server restarted",
        sources: &[
            "https://github.com/nats-io/nats-server/issues/6888",
            "https://www.synadia.com/blog/jepsen-nats-2-12-1",
            "https://jepsen.io/analyses/nats-2.12.1",
        ],
    },
    BadRelease {
        first: (2, 10, 25),
        last: (2, 10, 25),
        fixed: "2.10.26",
        defect: "consumers could skip messages after some removal patterns, most on WorkQueue \
                 and Interest-retention streams",
        sources: &[
            "https://github.com/nats-io/nats-server/pull/6526",
            "https://github.com/nats-io/nats-server/issues/6611",
        ],
    },
];

/// `2.10.22` (and pre-releases such as `2.10.22-RC.3`, which carry the same code) as numbers;
/// `None` for anything else.
pub fn parse_version(version: &str) -> Option<(u32, u32, u32)> {
    let core = version.trim().trim_start_matches('v');
    let core = core.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u32>().ok());
    let version = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(version)
}

/// The known defect of `version`, if it has one.
pub fn known_bad(version: &str) -> Option<&'static BadRelease> {
    let v = parse_version(version)?;
    BAD_RELEASES.iter().find(|b| b.first <= v && v <= b.last)
}

/// META_108 in the catalog.
pub const SPEC: CheckSpec = CheckSpec {
    id: CheckId::META_108,
    name: "Known-bad server version",
    severity: Severity::Warning,
    category: "jetstream_meta",
    applies_to: "each meta member (its nats-server version)",
    threshold: |_| {
        let ranges: Vec<String> = BAD_RELEASES
            .iter()
            .map(|b| {
                let (f, l) = (b.first, b.last);
                if f == l {
                    format!("{}.{}.{} (fixed in {})", f.0, f.1, f.2, b.fixed)
                } else {
                    format!(
                        "{}.{}.{} to {}.{}.{} (fixed in {})",
                        f.0, f.1, f.2, l.0, l.1, l.2, b.fixed
                    )
                }
            })
            .collect();
        format!(
            "a member runs a nats-server release with a known data-loss defect: {}",
            ranges.join(", ")
        )
    },
    settings: |_| Vec::new(),
    runbook: include_str!("../../../../runbooks/META_108.md"),
    held_for: None,
    evaluate,
};

/// Raised for each member whose version (its own reply's, or as last seen) is on the list; a
/// member whose version is not known is undecided.
pub fn evaluate(j: &Judged<'_>) -> Evaluation {
    let check = CheckId::META_108;
    let meta = j.meta;
    let mut findings = Vec::new();
    // Keys of the members it cannot judge, in name order, made a set with the unlisted ones at
    // the end: built only when needed, and inserted one by one they cost more than the rest of
    // the check (a large group's poll has a thousand members).
    let mut unjudged = Vec::new();
    for member in &meta.members {
        let key = || server_key(check, meta, &member.name);
        let Some(version) = member.version.as_deref() else {
            unjudged.push(key());
            continue;
        };
        let Some(bad) = known_bad(version) else {
            continue;
        };
        findings.push(Finding {
            check,
            key: key(),
            cluster: member.cluster.clone(),
            domain: meta.domain.clone(),
            server: Some(member.name.clone()),
            summary: format!(
                "{} runs nats-server {version}, a release in which {}; fixed in {}: upgrade it \
                 to {} or later.",
                meta.member_label(member),
                bad.defect,
                bad.fixed,
                bad.fixed,
            ),
            evidence: json!({
                "version": version,
                "fixed_in": bad.fixed,
                "sources": bad.sources,
            }),
            remediation: vec![
                Remediation::step(format!(
                    "Upgrade to {} or a later release of a supported line, one server at a time, waiting until each is current again before the next, the meta leader last.",
                    bad.fixed
                )),
                Remediation::with_command(
                    "Check every server's version afterwards.",
                    "nats server list",
                ),
                Remediation::step(format!(
                    "Read the defect's sources before and after: {}.",
                    bad.sources.join(", ")
                )),
            ],
            // Material: the version.
            fingerprint: version.to_string(),
        });
    }
    let undecided = super::unlisted_known(check, meta, j.history)
        .into_iter()
        .chain(unjudged)
        .collect();
    Evaluation::ran(check, meta, findings, undecided)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::test_support::{fixture, judge_fixture, keys};

    #[test]
    fn versions_parse_and_match_the_list() {
        assert_eq!(parse_version("2.10.22"), Some((2, 10, 22)));
        assert_eq!(parse_version("v2.10.22-RC.3"), Some((2, 10, 22)));
        assert_eq!(parse_version("2.10"), None);
        assert_eq!(parse_version("2.x.1"), None);
        assert_eq!(parse_version("2.10.1.4"), None);
        for bad in ["2.10.20", "2.10.21", "2.10.22", "2.10.25", "2.10.22-RC.1"] {
            assert!(known_bad(bad).is_some(), "{bad}");
        }
        for good in [
            "2.10.19", "2.10.23", "2.10.24", "2.10.26", "2.11.0", "2.15.1", "", "x",
        ] {
            assert!(known_bad(good).is_none(), "{good}");
        }
        for bad in BAD_RELEASES {
            assert!(bad.first <= bad.last && !bad.sources.is_empty());
            assert!(known_bad(bad.fixed).is_none(), "{}", bad.fixed);
        }
    }

    #[test]
    fn a_member_on_a_bad_release_is_found_by_name() {
        let mut replies = fixture("mixed_versions_3.json");
        let n3 = replies
            .iter_mut()
            .find(|r| r["server"]["name"] == "n3")
            .expect("n3");
        n3["server"]["ver"] = json!("2.10.22");
        let e = judge_fixture(&replies, evaluate);
        let (findings, undecided) = keys(&e);
        assert_eq!(findings, ["META_108/default/n3"]);
        assert!(undecided.is_empty());
        let f = crate::checks::test_support::findings(&e);
        assert!(f[0].summary.contains("2.10.23"), "{}", f[0].summary);

        let (findings, _) = keys(&judge_fixture(&fixture("mixed_versions_3.json"), evaluate));
        assert!(findings.is_empty());
    }

    #[test]
    fn a_known_server_missing_from_this_polls_membership_is_undecided() {
        use crate::checks::test_support::snapshot;
        use crate::history::History;
        let mut replies = fixture("mixed_versions_3.json");
        replies[2]["server"]["ver"] = json!("2.10.25");
        let at = std::time::SystemTime::UNIX_EPOCH;
        let t = crate::checks::Thresholds::default();
        let mut history = History::default();
        history.record_snapshot(&snapshot(&replies, &[]), &t, at);
        // A poll whose membership lacks n3 (as a leaderless view that omits its reporter).
        let two = snapshot(&replies[..2], &[]);
        let mut meta = crate::checks::assess_members(&two, &history, &t, at).expect("meta");
        meta.members.retain(|m| m.name != "n3");
        let e = evaluate(&crate::checks::Judged {
            meta: &meta,
            history: &history,
            thresholds: &t,
            now: at,
            server_now: None,
            extras: &Default::default(),
        });
        let (findings, undecided) = keys(&e);
        assert!(findings.is_empty());
        assert_eq!(undecided, ["META_108/default/n3"]);
    }
}
