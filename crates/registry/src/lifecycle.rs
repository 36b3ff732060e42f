//! Lifecycle policies: which images of a repository expire, written in the exact JSON of
//! Amazon ECR lifecycle policies so existing ECR policies can be pasted in unchanged.
//!
//! This module is pure: [`parse`] checks a policy and [`evaluate`] decides which images it
//! expires at a given time (`now_ms` is passed in). Deleting them, and recording pulls,
//! belongs to the service and the stores.
//!
//! How a policy is read (ECR's documented semantics, made precise):
//!
//! - Rules apply lowest `rulePriority` first. An image whose tags satisfy a rule's
//!   selection is *claimed* by that rule, whether the rule expires it or keeps it, and no
//!   later rule sees it (ECR: an image is matched by at most one rule).
//! - `tagged` selects images that satisfy *every* entry of the rule's list: each prefix or
//!   pattern is matched by at least one of the image's tags. `untagged` selects images
//!   without tags; `any` selects every image.
//! - `imageCountMoreThan` keeps the `countNumber` most recently pushed images the rule
//!   claims (ties broken by digest) and expires the rest. `sinceImagePushed` expires
//!   claimed images pushed more than `countNumber` days ago (exactly `countNumber` days is
//!   not more); `sinceImagePulled` does the same from the image's last pull, or from its
//!   push when it was never pulled since.
//! - Protected images (an immutability rule protects one of their tags) are never expired,
//!   but they are claimed and counted like the others.

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;

use crate::immutability::TagPattern;

/// Milliseconds in a day: the only `countUnit` is `days`.
const DAY_MS: i64 = 86_400_000;

/// ECR's limit on `*` wildcards in one `tagPatternList` entry.
const MAX_WILDCARDS: usize = 4;

/// The longest tag (and so the longest useful prefix or pattern without wildcards).
const MAX_TAG_LEN: usize = 128;

/// Why a policy was refused, precise enough for the user to fix the JSON.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not JSON of the policy's shape (an unknown field, a missing field, a
    /// wrong type): serde's message, which carries the line and column.
    #[error("invalid lifecycle policy JSON: {0}")]
    Json(String),
    /// `rules` is empty; ECR requires at least one rule.
    #[error("lifecycle policy has no rules: add at least one rule to \"rules\"")]
    NoRules,
    /// One rule breaks a constraint; `index` is its position in `rules` and `problem`
    /// says what to change.
    #[error("rules[{index}] (rulePriority {priority}): {problem}")]
    Rule {
        /// Position of the offending rule in the JSON `rules` array (0-based).
        index: usize,
        /// The rule's `rulePriority` as written.
        priority: i64,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

/// A checked lifecycle policy, with the JSON it came from so `get` returns exactly what
/// was put.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecyclePolicy {
    json: String,
    rules: Vec<Rule>,
}

impl LifecyclePolicy {
    /// The JSON text exactly as given to [`parse`], so reading a policy back returns what
    /// was stored byte for byte.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The rules in the order they apply (lowest `rulePriority` first), for display and
    /// for callers that explain a policy.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// One checked rule: which images it selects and when it expires them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    priority: u32,
    description: Option<String>,
    tags: TagSelection,
    count: Count,
}

impl Rule {
    /// `rulePriority`: the order in which rules claim images (lowest first).
    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// `description`, when the rule has a non-empty one, to name the rule to people.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref().filter(|d| !d.is_empty())
    }

    /// Which images the rule selects (`tagStatus` and its tag list).
    pub fn tags(&self) -> &TagSelection {
        &self.tags
    }

    /// When selected images expire (`countType`, `countNumber`).
    pub fn count(&self) -> Count {
        self.count
    }

    /// Whether the image's tags satisfy this rule's selection (ignoring other rules), so
    /// callers can explain which rule an image falls under.
    pub fn selects(&self, image: &Image) -> bool {
        self.tags.selects(&image.tags)
    }

    /// `rule 1` or `rule 1 ("keep 5 prod images")`: how reasons and summaries name a rule.
    fn label(&self) -> String {
        match self.description() {
            Some(d) => format!("rule {} ({d:?})", self.priority),
            None => format!("rule {}", self.priority),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}, ", self.label(), self.tags.images())?;
        match self.count {
            Count::ImagesMoreThan(n) => write!(f, "keep the {n} most recently pushed"),
            Count::DaysSincePushed(d) => {
                write!(f, "expire when pushed more than {} ago", days(i64::from(d)))
            }
            Count::DaysSincePulled(d) => write!(
                f,
                "expire when last pulled more than {} ago",
                days(i64::from(d))
            ),
        }
    }
}

/// `tagStatus` with its tag list: which images a rule can claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagSelection {
    /// `tagged`: images that satisfy every entry of the filter.
    Tagged(TagFilter),
    /// `untagged`: images without any tag.
    Untagged,
    /// `any`: every image.
    Any,
}

impl TagSelection {
    /// Whether an image with these tags is selected.
    pub fn selects(&self, tags: &[String]) -> bool {
        match self {
            TagSelection::Tagged(filter) => filter.selects(tags),
            TagSelection::Untagged => tags.is_empty(),
            TagSelection::Any => true,
        }
    }

    /// `images tagged prod*`, `untagged images`, `all images`: the selection in reasons.
    fn images(&self) -> String {
        match self {
            TagSelection::Tagged(filter) => format!("images tagged {filter}"),
            TagSelection::Untagged => "untagged images".to_owned(),
            TagSelection::Any => "all images".to_owned(),
        }
    }
}

/// The tag list of a `tagged` rule: `tagPrefixList` or `tagPatternList`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagFilter {
    /// `tagPrefixList`: each prefix must start at least one of the image's tags.
    Prefixes(Vec<String>),
    /// `tagPatternList`: each pattern must match at least one of the image's tags whole.
    Patterns(Vec<TagPattern>),
}

impl TagFilter {
    /// Whether every entry is matched by at least one of `tags` (ECR's "all specified").
    pub fn selects(&self, tags: &[String]) -> bool {
        match self {
            TagFilter::Prefixes(prefixes) => prefixes
                .iter()
                .all(|p| tags.iter().any(|t| t.starts_with(p.as_str()))),
            TagFilter::Patterns(patterns) => {
                patterns.iter().all(|p| tags.iter().any(|t| p.matches(t)))
            }
        }
    }

    /// The entries as patterns (prefix `p` is the pattern `p*`), sorted and deduplicated:
    /// two rules with the same set select the same images.
    fn as_pattern_set(&self) -> BTreeSet<String> {
        match self {
            TagFilter::Prefixes(prefixes) => prefixes.iter().map(|p| format!("{p}*")).collect(),
            TagFilter::Patterns(patterns) => {
                patterns.iter().map(|p| p.as_str().to_owned()).collect()
            }
        }
    }
}

impl fmt::Display for TagFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = match self {
            TagFilter::Prefixes(prefixes) => prefixes.iter().map(|p| format!("{p}*")).collect(),
            TagFilter::Patterns(patterns) => {
                patterns.iter().map(|p| p.as_str().to_owned()).collect()
            }
        };
        f.write_str(&entries.join(" and "))
    }
}

/// `countType` with `countNumber`: when a rule expires the images it claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// `imageCountMoreThan`: keep this many most recently pushed images, expire the rest.
    ImagesMoreThan(u32),
    /// `sinceImagePushed` in days: expire images pushed more than this many days ago.
    DaysSincePushed(u32),
    /// `sinceImagePulled` in days: expire images last pulled (or, never pulled, pushed)
    /// more than this many days ago.
    DaysSincePulled(u32),
}

/// What evaluation needs to know about one image (one manifest digest) of the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The manifest digest, which identifies the image.
    pub digest: String,
    /// The tags pointing at it; empty for an untagged image.
    pub tags: Vec<String>,
    /// When it was pushed (ms since the Unix epoch).
    pub pushed_ms: i64,
    /// The latest pull of any of its tags or of its digest, if it was ever pulled.
    pub last_pulled_ms: Option<i64>,
    /// Whether an immutability rule protects one of its tags; protected images are never
    /// expired but still count (see [`evaluate`]).
    pub protected: bool,
}

/// One image a policy expires, with the rule that did it and a sentence saying why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// The image's manifest digest.
    pub digest: String,
    /// Its tags, so the caller can report (and delete) them.
    pub tags: Vec<String>,
    /// `rulePriority` of the rule that expires it.
    pub rule_priority: u32,
    /// A human sentence naming the rule and why, for previews and the audit log.
    pub reason: String,
}

/// Parses and checks an ECR lifecycle policy; the error names the offending rule (index
/// and `rulePriority`) and says what to change.
pub fn parse(json: &str) -> Result<LifecyclePolicy, PolicyError> {
    let raw: RawPolicy =
        serde_json::from_str(json).map_err(|e| PolicyError::Json(e.to_string()))?;
    if raw.rules.is_empty() {
        return Err(PolicyError::NoRules);
    }
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (index, r) in raw.rules.iter().enumerate() {
        let err = |problem: String| PolicyError::Rule {
            index,
            priority: r.rule_priority,
            problem,
        };
        rules.push(check_rule(r).map_err(err)?);
    }
    check_rule_set(&rules)?;
    rules.sort_by_key(|r| r.priority);
    Ok(LifecyclePolicy {
        json: json.to_owned(),
        rules,
    })
}

/// Which images `policy` expires at `now_ms`, ordered by rule priority, then push time
/// (oldest first, ties by digest).
///
/// Each image is claimed by the first rule (lowest `rulePriority`) whose selection it
/// satisfies, whether that rule expires it or keeps it; later rules never see it.
///
/// Protected images are never expired, yet they are claimed and counted like any other:
/// under `imageCountMoreThan` a protected image among the newest `countNumber` takes one
/// of the kept slots, and one beyond them is simply skipped (it does not make the rule
/// keep another image instead). Protection thus saves only the protected image itself:
/// every other image meets the same fate as if nothing were protected.
pub fn evaluate(policy: &LifecyclePolicy, images: &[Image], now_ms: i64) -> Vec<Expiry> {
    let owners = claims(policy, images);
    let mut out = Vec::new();
    for (rule_index, rule) in policy.rules.iter().enumerate() {
        let mut claimed: Vec<&Image> = images
            .iter()
            .zip(&owners)
            .filter(|(_, owner)| **owner == Some(rule_index))
            .map(|(image, _)| image)
            .collect();
        let mut expired: Vec<(&Image, String)> = Vec::new();
        match rule.count {
            Count::ImagesMoreThan(keep) => {
                claimed.sort_by(|a, b| {
                    b.pushed_ms
                        .cmp(&a.pushed_ms)
                        .then_with(|| a.digest.cmp(&b.digest))
                });
                let total = claimed.len();
                for (position, image) in claimed.into_iter().enumerate() {
                    if position >= keep as usize && !image.protected {
                        let why = format!(
                            "{} newest of {total} {}, keeps {keep}",
                            ordinal(position + 1),
                            images_phrase(&rule.tags, total)
                        );
                        expired.push((image, why));
                    }
                }
            }
            Count::DaysSincePushed(limit) => {
                for image in claimed {
                    let age = now_ms.saturating_sub(image.pushed_ms);
                    if age > i64::from(limit) * DAY_MS && !image.protected {
                        let why = format!(
                            "pushed {} ago, more than {}",
                            elapsed(age, limit),
                            days(i64::from(limit))
                        );
                        expired.push((image, why));
                    }
                }
            }
            Count::DaysSincePulled(limit) => {
                for image in claimed {
                    let (since, note) = match image.last_pulled_ms {
                        None => (image.pushed_ms, " (never pulled: counted from push)"),
                        Some(pulled) if pulled < image.pushed_ms => (
                            image.pushed_ms,
                            " (not pulled since its last push: counted from push)",
                        ),
                        Some(pulled) => (pulled, ""),
                    };
                    let age = now_ms.saturating_sub(since);
                    if age > i64::from(limit) * DAY_MS && !image.protected {
                        let why = format!(
                            "last pulled {} ago{note}, more than {}",
                            elapsed(age, limit),
                            days(i64::from(limit))
                        );
                        expired.push((image, why));
                    }
                }
            }
        }
        expired.sort_by(|(a, _), (b, _)| {
            a.pushed_ms
                .cmp(&b.pushed_ms)
                .then_with(|| a.digest.cmp(&b.digest))
        });
        let label = rule.label();
        out.extend(expired.into_iter().map(|(image, why)| Expiry {
            digest: image.digest.clone(),
            tags: image.tags.clone(),
            rule_priority: rule.priority,
            reason: format!("{label}: {why}"),
        }));
    }
    out
}

/// For each image, the index (in `policy.rules()`) of the rule that claims it: the first
/// rule whose selection it satisfies, or `None` when no rule does.
fn claims(policy: &LifecyclePolicy, images: &[Image]) -> Vec<Option<usize>> {
    images
        .iter()
        .map(|image| policy.rules.iter().position(|rule| rule.selects(image)))
        .collect()
}

/// `images tagged prod*` / `untagged images` / `images`, singular when `n` is 1.
fn images_phrase(tags: &TagSelection, n: usize) -> String {
    let noun = if n == 1 { "image" } else { "images" };
    match tags {
        TagSelection::Tagged(filter) => format!("{noun} tagged {filter}"),
        TagSelection::Untagged => format!("untagged {noun}"),
        TagSelection::Any => noun.to_owned(),
    }
}

/// `1st`, `2nd`, `3rd`, `4th`, `11th`, `21st`…
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// `1 day`, `14 days`.
fn days(n: i64) -> String {
    plural(n, "day")
}

/// `1 hour`, `5 hours`.
fn plural(n: i64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// An age that exceeds `limit` days, in words: whole days when that already shows it is
/// more than the limit (`31 days`), otherwise the days and the largest unit of the rest
/// (`30 days and 5 hours`, `30 days and 1 ms`), so the sentence never reads "30 days,
/// more than 30 days".
fn elapsed(age_ms: i64, limit: u32) -> String {
    let whole = age_ms / DAY_MS;
    let rest = age_ms % DAY_MS;
    if whole > i64::from(limit) || rest == 0 {
        return days(whole);
    }
    let rest = if rest >= 3_600_000 {
        plural(rest / 3_600_000, "hour")
    } else if rest >= 60_000 {
        plural(rest / 60_000, "minute")
    } else if rest >= 1_000 {
        plural(rest / 1_000, "second")
    } else {
        format!("{rest} ms")
    };
    format!("{} and {rest}", days(whole))
}

/// Checks one rule on its own; the error is the problem text (the caller adds the rule's
/// index and priority).
fn check_rule(r: &RawRule) -> Result<Rule, String> {
    let priority = u32::try_from(r.rule_priority)
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| format!("rulePriority must be between 1 and {}", u32::MAX))?;
    if r.action.kind != "expire" {
        return Err(format!(
            "action type {:?} is not supported: use \"type\": \"expire\"",
            r.action.kind
        ));
    }
    let s = &r.selection;
    let tags = match s.tag_status.as_str() {
        "tagged" => TagSelection::Tagged(check_tag_lists(s)?),
        status @ ("untagged" | "any") => {
            if s.tag_prefix_list.is_some() || s.tag_pattern_list.is_some() {
                return Err(format!(
                    "tagStatus {status:?} takes no tagPrefixList or tagPatternList: remove them, \
                     or use tagStatus \"tagged\""
                ));
            }
            if status == "untagged" {
                TagSelection::Untagged
            } else {
                TagSelection::Any
            }
        }
        other => {
            return Err(format!(
                "tagStatus {other:?} is not one of \"tagged\", \"untagged\", \"any\""
            ));
        }
    };
    let number = u32::try_from(s.count_number)
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("countNumber must be between 1 and {}", u32::MAX))?;
    let count = match s.count_type.as_str() {
        "imageCountMoreThan" => {
            if s.count_unit.is_some() {
                return Err(
                    "countUnit is only allowed with sinceImagePushed or sinceImagePulled"
                        .to_owned(),
                );
            }
            Count::ImagesMoreThan(number)
        }
        kind @ ("sinceImagePushed" | "sinceImagePulled") => {
            match s.count_unit.as_deref() {
                Some("days") => {}
                Some(unit) => {
                    return Err(format!(
                        "countUnit {unit:?} is not supported: use \"countUnit\": \"days\""
                    ));
                }
                None => {
                    return Err(format!(
                        "countType {kind:?} needs a countUnit: add \"countUnit\": \"days\""
                    ));
                }
            }
            if kind == "sinceImagePushed" {
                Count::DaysSincePushed(number)
            } else {
                Count::DaysSincePulled(number)
            }
        }
        other => {
            return Err(format!(
                "countType {other:?} is not one of \"imageCountMoreThan\", \"sinceImagePushed\", \
                 \"sinceImagePulled\""
            ));
        }
    };
    Ok(Rule {
        priority,
        description: r.description.clone(),
        tags,
        count,
    })
}

/// The tag list of a `tagged` rule: exactly one of the two lists, non-empty, with valid
/// entries.
fn check_tag_lists(s: &RawSelection) -> Result<TagFilter, String> {
    match (&s.tag_prefix_list, &s.tag_pattern_list) {
        (None, None) => {
            Err("tagStatus \"tagged\" needs tagPrefixList or tagPatternList".to_owned())
        }
        (Some(_), Some(_)) => Err(
            "give only one of tagPrefixList or tagPatternList, not both: a rule matches \
             either by prefix or by pattern"
                .to_owned(),
        ),
        (Some(prefixes), None) => {
            if prefixes.is_empty() {
                return Err("tagPrefixList is empty: list at least one tag prefix".to_owned());
            }
            for p in prefixes {
                if !is_tag_text(p, false) {
                    return Err(format!(
                        "tagPrefixList entry {p:?} is not a tag prefix: use 1 to {MAX_TAG_LEN} \
                         tag characters (A-Z a-z 0-9 _ . -); for wildcards use tagPatternList"
                    ));
                }
            }
            Ok(TagFilter::Prefixes(prefixes.clone()))
        }
        (None, Some(patterns)) => {
            if patterns.is_empty() {
                return Err("tagPatternList is empty: list at least one tag pattern".to_owned());
            }
            let mut out = Vec::with_capacity(patterns.len());
            for p in patterns {
                let not_pattern = || {
                    format!(
                        "tagPatternList entry {p:?} is not a tag pattern: use 1 to {MAX_TAG_LEN} \
                         tag characters (A-Z a-z 0-9 _ . -) and the wildcard *"
                    )
                };
                if !is_tag_text(p, true) {
                    return Err(not_pattern());
                }
                let stars = p.matches('*').count();
                if stars > MAX_WILDCARDS {
                    return Err(format!(
                        "tagPatternList entry {p:?} has {stars} wildcards (*): at most \
                         {MAX_WILDCARDS} are allowed per pattern"
                    ));
                }
                out.push(TagPattern::parse(p).map_err(|_| not_pattern())?);
            }
            Ok(TagFilter::Patterns(out))
        }
    }
}

/// Whether `s` is 1–128 tag characters (and `*` when `star` is allowed).
fn is_tag_text(s: &str, star: bool) -> bool {
    (1..=MAX_TAG_LEN).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c) || (star && c == '*'))
}

/// Constraints between rules: unique priorities, one `untagged` and one `any` rule at
/// most, `any` last, and no two `tagged` rules with the same tag list (the later one
/// could never claim an image).
fn check_rule_set(rules: &[Rule]) -> Result<(), PolicyError> {
    let err = |index: usize, problem: String| PolicyError::Rule {
        index,
        priority: i64::from(rules[index].priority),
        problem,
    };
    for (index, rule) in rules.iter().enumerate() {
        if let Some(first) = rules[..index]
            .iter()
            .position(|r| r.priority == rule.priority)
        {
            return Err(err(
                index,
                format!(
                    "rulePriority {} is already used by rules[{first}]: give each rule its own \
                     rulePriority",
                    rule.priority
                ),
            ));
        }
    }
    // Cross-rule checks in the order rules apply, so the rule reported is the one that
    // could never take effect.
    let mut order: Vec<usize> = (0..rules.len()).collect();
    order.sort_by_key(|i| rules[*i].priority);
    let mut untagged: Option<usize> = None;
    let mut any: Option<usize> = None;
    let mut tag_sets: Vec<(usize, BTreeSet<String>)> = Vec::new();
    for &index in &order {
        let rule = &rules[index];
        match &rule.tags {
            TagSelection::Untagged => {
                if let Some(first) = untagged {
                    return Err(err(
                        index,
                        format!(
                            "only one rule may have tagStatus \"untagged\" (rules[{first}] \
                             already does and applies first): merge the two rules"
                        ),
                    ));
                }
                untagged = Some(index);
            }
            TagSelection::Any => {
                if let Some(first) = any {
                    return Err(err(
                        index,
                        format!(
                            "only one rule may have tagStatus \"any\" (rules[{first}] already \
                             does): merge the two rules"
                        ),
                    ));
                }
                any = Some(index);
            }
            TagSelection::Tagged(filter) => {
                let set = filter.as_pattern_set();
                if let Some((first, _)) = tag_sets.iter().find(|(_, s)| *s == set) {
                    return Err(err(
                        index,
                        format!(
                            "selects the same tags ({filter}) as rules[{first}], which applies \
                             first and claims every such image: change this rule's tag list or \
                             merge the two rules"
                        ),
                    ));
                }
                tag_sets.push((index, set));
            }
        }
    }
    if let Some(index) = any {
        let highest = order.last().copied().unwrap_or(index);
        if highest != index {
            let higher = rules[highest].priority;
            return Err(err(
                index,
                format!(
                    "tagStatus \"any\" must have the highest rulePriority ({higher} is higher, in \
                     rules[{highest}]): give this rule a rulePriority above {higher}"
                ),
            ));
        }
    }
    Ok(())
}

/// The policy as written, before checking.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    rules: Vec<RawRule>,
}

/// One rule as written; numbers are `i64` so out-of-range values get a message that
/// names the rule.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRule {
    rule_priority: i64,
    description: Option<String>,
    selection: RawSelection,
    action: RawAction,
}

/// `selection` as written; strings are checked by hand so errors name the rule.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawSelection {
    tag_status: String,
    tag_prefix_list: Option<Vec<String>>,
    tag_pattern_list: Option<Vec<String>>,
    count_type: String,
    count_unit: Option<String>,
    count_number: i64,
}

/// `action` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    #[serde(rename = "type")]
    kind: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000 * DAY_MS;

    /// One rule in ECR's JSON with the given `selection` body.
    fn rule(priority: i64, selection: &str) -> String {
        format!(
            r#"{{"rulePriority":{priority},"selection":{{{selection}}},"action":{{"type":"expire"}}}}"#
        )
    }

    fn described(priority: i64, description: &str, selection: &str) -> String {
        format!(
            r#"{{"rulePriority":{priority},"description":"{description}","selection":{{{selection}}},"action":{{"type":"expire"}}}}"#
        )
    }

    fn text(rules: &[String]) -> String {
        format!(r#"{{"rules":[{}]}}"#, rules.join(","))
    }

    fn policy(rules: &[String]) -> LifecyclePolicy {
        parse(&text(rules)).unwrap()
    }

    fn refused(rules: &[String]) -> String {
        parse(&text(rules)).unwrap_err().to_string()
    }

    /// An image pushed `days_ago` days before `NOW`.
    fn img(digest: &str, tags: &[&str], days_ago: i64) -> Image {
        Image {
            digest: digest.to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            pushed_ms: NOW - days_ago * DAY_MS,
            last_pulled_ms: None,
            protected: false,
        }
    }

    fn expiry(image: &Image, rule_priority: u32, reason: &str) -> Expiry {
        Expiry {
            digest: image.digest.clone(),
            tags: image.tags.clone(),
            rule_priority,
            reason: reason.to_owned(),
        }
    }

    /// The `rulePriority` of the rule that claims each image.
    fn claimed_by(p: &LifecyclePolicy, images: &[Image]) -> Vec<Option<u32>> {
        claims(p, images)
            .into_iter()
            .map(|i| i.map(|i| p.rules()[i].priority()))
            .collect()
    }

    const UNTAGGED_14_DAYS: &str = r#""tagStatus":"untagged","countType":"sinceImagePushed","countUnit":"days","countNumber":14"#;

    // ---- parsing ----

    #[test]
    fn parse_keeps_the_json_verbatim_and_reads_rules_in_priority_order() {
        let json = "{\n  \"rules\": [\n    {\"rulePriority\": 7, \"selection\": {\"tagStatus\": \"any\", \"countType\": \"sinceImagePulled\", \"countUnit\": \"days\", \"countNumber\": 90}, \"action\": {\"type\": \"expire\"}},\n    {\"rulePriority\": 2, \"description\": \"keep 5 prod images\", \"selection\": {\"tagStatus\": \"tagged\", \"tagPrefixList\": [\"prod\"], \"countType\": \"imageCountMoreThan\", \"countNumber\": 5}, \"action\": {\"type\": \"expire\"}},\n    {\"rulePriority\": 3, \"description\": \"\", \"selection\": {\"tagStatus\": \"untagged\", \"countType\": \"sinceImagePushed\", \"countUnit\": \"days\", \"countNumber\": 1}, \"action\": {\"type\": \"expire\"}}\n  ]\n}\n";
        let p = parse(json).unwrap();
        assert_eq!(p.json(), json);
        let rules = p.rules();
        assert_eq!(
            rules.iter().map(Rule::priority).collect::<Vec<_>>(),
            vec![2, 3, 7]
        );
        assert_eq!(
            rules.iter().map(Rule::description).collect::<Vec<_>>(),
            vec![Some("keep 5 prod images"), None, None]
        );
        assert_eq!(
            rules[0].tags(),
            &TagSelection::Tagged(TagFilter::Prefixes(vec!["prod".to_owned()]))
        );
        assert_eq!(rules[1].tags(), &TagSelection::Untagged);
        assert_eq!(rules[2].tags(), &TagSelection::Any);
        assert_eq!(
            rules.iter().map(Rule::count).collect::<Vec<_>>(),
            vec![
                Count::ImagesMoreThan(5),
                Count::DaysSincePushed(1),
                Count::DaysSincePulled(90)
            ]
        );
        assert_eq!(
            rules.iter().map(ToString::to_string).collect::<Vec<_>>(),
            vec![
                "rule 2 (\"keep 5 prod images\"): images tagged prod*, keep the 5 most recently pushed",
                "rule 3: untagged images, expire when pushed more than 1 day ago",
                "rule 7: all images, expire when last pulled more than 90 days ago",
            ]
        );
    }

    #[test]
    fn pattern_rules_display_their_patterns() {
        let p = policy(&[rule(
            1,
            r#""tagStatus":"tagged","tagPatternList":["prod*","*-rc"],"countType":"sinceImagePushed","countUnit":"days","countNumber":14"#,
        )]);
        assert_eq!(
            p.rules()[0].to_string(),
            "rule 1: images tagged prod* and *-rc, expire when pushed more than 14 days ago"
        );
    }

    #[test]
    fn malformed_json_gives_serdes_message_with_line_and_column() {
        assert_eq!(
            parse("{\n  \"rules\": [\n    {\"rulePriority\": 1,,}\n  ]\n}")
                .unwrap_err()
                .to_string(),
            "invalid lifecycle policy JSON: key must be a string at line 3 column 24"
        );
        // A missing field is reported at the end of the object that lacks it.
        let json = text(&[
            r#"{"rulePriority":1,"selection":{"tagStatus":"any","countNumber":1},"action":{"type":"expire"}}"#.to_owned(),
        ]);
        let column = json.find(r#""countNumber":1}"#).unwrap() + r#""countNumber":1}"#.len();
        assert_eq!(
            parse(&json).unwrap_err(),
            PolicyError::Json(format!(
                "missing field `countType` at line 1 column {column}"
            ))
        );
    }

    #[test]
    fn unknown_fields_are_refused_at_every_level() {
        let sel = r#""tagStatus":"any","countType":"imageCountMoreThan","countNumber":1"#;
        let cases = [
            (
                format!(r#"{{"rules":[{}],"registryId":"1"}}"#, rule(1, sel)),
                "\"registryId\"",
                "unknown field `registryId`, expected `rules`",
            ),
            (
                text(&[format!(
                    r#"{{"rulePriority":1,"name":"x","selection":{{{sel}}},"action":{{"type":"expire"}}}}"#
                )]),
                "\"name\"",
                "unknown field `name`, expected one of `rulePriority`, `description`, `selection`, `action`",
            ),
            (
                text(&[rule(1, &format!(r#"{sel},"storageClass":"standard""#))]),
                "\"storageClass\"",
                "unknown field `storageClass`, expected one of `tagStatus`, `tagPrefixList`, `tagPatternList`, `countType`, `countUnit`, `countNumber`",
            ),
            (
                text(&[format!(
                    r#"{{"rulePriority":1,"selection":{{{sel}}},"action":{{"type":"expire","targetStorageClass":"archive"}}}}"#
                )]),
                "\"targetStorageClass\"",
                "unknown field `targetStorageClass`, expected `type`",
            ),
        ];
        for (json, key, message) in cases {
            // serde points just past the offending key.
            let column = json.find(key).unwrap() + key.len();
            assert_eq!(
                parse(&json).unwrap_err(),
                PolicyError::Json(format!("{message} at line 1 column {column}")),
                "{json}"
            );
        }
    }

    // ---- validation: each message names the rule (index and priority) and the fix ----

    #[test]
    fn refuses_a_policy_without_rules() {
        assert_eq!(parse(r#"{"rules":[]}"#).unwrap_err(), PolicyError::NoRules);
        assert_eq!(
            PolicyError::NoRules.to_string(),
            "lifecycle policy has no rules: add at least one rule to \"rules\""
        );
    }

    #[test]
    fn refuses_rule_priority_below_one() {
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    0,
                    r#""tagStatus":"any","countType":"imageCountMoreThan","countNumber":1"#
                )
            ]),
            "rules[1] (rulePriority 0): rulePriority must be between 1 and 4294967295"
        );
        assert_eq!(
            parse(&text(&[rule(-3, UNTAGGED_14_DAYS)])).unwrap_err(),
            PolicyError::Rule {
                index: 0,
                priority: -3,
                problem: "rulePriority must be between 1 and 4294967295".to_owned()
            }
        );
    }

    #[test]
    fn refuses_duplicate_rule_priorities() {
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    2,
                    r#""tagStatus":"tagged","tagPrefixList":["a"],"countType":"imageCountMoreThan","countNumber":1"#
                ),
                rule(
                    1,
                    r#""tagStatus":"tagged","tagPrefixList":["b"],"countType":"imageCountMoreThan","countNumber":1"#
                ),
            ]),
            "rules[2] (rulePriority 1): rulePriority 1 is already used by rules[0]: give each rule its own rulePriority"
        );
    }

    #[test]
    fn refuses_actions_other_than_expire() {
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                r#"{"rulePriority":4,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":1},"action":{"type":"transition"}}"#.to_owned(),
            ]),
            "rules[1] (rulePriority 4): action type \"transition\" is not supported: use \"type\": \"expire\""
        );
    }

    #[test]
    fn refuses_unknown_tag_status() {
        assert_eq!(
            refused(&[rule(
                3,
                r#""tagStatus":"TAGGED","tagPrefixList":["a"],"countType":"imageCountMoreThan","countNumber":1"#
            )]),
            "rules[0] (rulePriority 3): tagStatus \"TAGGED\" is not one of \"tagged\", \"untagged\", \"any\""
        );
    }

    #[test]
    fn refuses_tagged_without_a_tag_list() {
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    2,
                    r#""tagStatus":"tagged","tagPrefixList":["a"],"countType":"imageCountMoreThan","countNumber":1"#
                ),
                rule(
                    3,
                    r#""tagStatus":"tagged","countType":"imageCountMoreThan","countNumber":1"#
                ),
            ]),
            "rules[2] (rulePriority 3): tagStatus \"tagged\" needs tagPrefixList or tagPatternList"
        );
    }

    #[test]
    fn refuses_tagged_with_both_lists_like_the_briefs_sample() {
        let sample = r#"{"rules":[{"rulePriority":1,"description":"keep 5 prod images",
  "selection":{"tagStatus":"tagged","tagPrefixList":["prod"],"tagPatternList":["prod*"],
               "countType":"imageCountMoreThan","countUnit":"days","countNumber":5},
  "action":{"type":"expire"}}]}"#;
        assert_eq!(
            parse(sample).unwrap_err().to_string(),
            "rules[0] (rulePriority 1): give only one of tagPrefixList or tagPatternList, not both: a rule matches either by prefix or by pattern"
        );
    }

    #[test]
    fn refuses_empty_tag_lists() {
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    5,
                    r#""tagStatus":"tagged","tagPrefixList":[],"countType":"imageCountMoreThan","countNumber":1"#
                ),
            ]),
            "rules[1] (rulePriority 5): tagPrefixList is empty: list at least one tag prefix"
        );
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    6,
                    r#""tagStatus":"tagged","tagPatternList":[],"countType":"imageCountMoreThan","countNumber":1"#
                ),
            ]),
            "rules[1] (rulePriority 6): tagPatternList is empty: list at least one tag pattern"
        );
    }

    #[test]
    fn refuses_tag_lists_on_untagged_and_any() {
        assert_eq!(
            refused(&[
                rule(
                    1,
                    r#""tagStatus":"tagged","tagPrefixList":["a"],"countType":"imageCountMoreThan","countNumber":1"#
                ),
                rule(
                    2,
                    r#""tagStatus":"untagged","tagPrefixList":["a"],"countType":"imageCountMoreThan","countNumber":1"#
                ),
            ]),
            "rules[1] (rulePriority 2): tagStatus \"untagged\" takes no tagPrefixList or tagPatternList: remove them, or use tagStatus \"tagged\""
        );
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    9,
                    r#""tagStatus":"any","tagPatternList":[],"countType":"imageCountMoreThan","countNumber":1"#
                ),
            ]),
            "rules[1] (rulePriority 9): tagStatus \"any\" takes no tagPrefixList or tagPatternList: remove them, or use tagStatus \"tagged\""
        );
    }

    #[test]
    fn refuses_prefixes_that_are_not_tag_text() {
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    2,
                    r#""tagStatus":"tagged","tagPrefixList":["prod","v*"],"countType":"imageCountMoreThan","countNumber":1"#
                ),
            ]),
            "rules[1] (rulePriority 2): tagPrefixList entry \"v*\" is not a tag prefix: use 1 to 128 tag characters (A-Z a-z 0-9 _ . -); for wildcards use tagPatternList"
        );
        assert_eq!(
            refused(&[rule(
                4,
                r#""tagStatus":"tagged","tagPrefixList":[""],"countType":"imageCountMoreThan","countNumber":1"#
            )]),
            "rules[0] (rulePriority 4): tagPrefixList entry \"\" is not a tag prefix: use 1 to 128 tag characters (A-Z a-z 0-9 _ . -); for wildcards use tagPatternList"
        );
    }

    #[test]
    fn refuses_patterns_that_are_not_tag_text() {
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    2,
                    r#""tagStatus":"tagged","tagPatternList":["prod/*"],"countType":"imageCountMoreThan","countNumber":1"#
                ),
            ]),
            "rules[1] (rulePriority 2): tagPatternList entry \"prod/*\" is not a tag pattern: use 1 to 128 tag characters (A-Z a-z 0-9 _ . -) and the wildcard *"
        );
    }

    #[test]
    fn wildcard_limit_is_four_per_pattern() {
        // ECR's own examples: these two are valid, the six-wildcard one is not.
        parse(&text(&[rule(
            1,
            r#""tagStatus":"tagged","tagPatternList":["*test*1*2*3","test*1*2*3*"],"countType":"imageCountMoreThan","countNumber":1"#,
        )]))
        .unwrap();
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    2,
                    r#""tagStatus":"tagged","tagPatternList":["ok*","test*1*2*3*4*5*6"],"countType":"imageCountMoreThan","countNumber":1"#
                ),
            ]),
            "rules[1] (rulePriority 2): tagPatternList entry \"test*1*2*3*4*5*6\" has 6 wildcards (*): at most 4 are allowed per pattern"
        );
        assert_eq!(
            refused(&[rule(
                8,
                r#""tagStatus":"tagged","tagPatternList":["*a*b*c*d*"],"countType":"imageCountMoreThan","countNumber":1"#
            )]),
            "rules[0] (rulePriority 8): tagPatternList entry \"*a*b*c*d*\" has 5 wildcards (*): at most 4 are allowed per pattern"
        );
    }

    #[test]
    fn refuses_unknown_count_type() {
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    2,
                    r#""tagStatus":"any","countType":"sinceImageTransitioned","countUnit":"days","countNumber":1"#
                ),
            ]),
            "rules[1] (rulePriority 2): countType \"sinceImageTransitioned\" is not one of \"imageCountMoreThan\", \"sinceImagePushed\", \"sinceImagePulled\""
        );
    }

    #[test]
    fn refuses_count_unit_with_image_count() {
        assert_eq!(
            refused(&[rule(
                1,
                r#""tagStatus":"untagged","countType":"imageCountMoreThan","countUnit":"days","countNumber":1"#
            )]),
            "rules[0] (rulePriority 1): countUnit is only allowed with sinceImagePushed or sinceImagePulled"
        );
    }

    #[test]
    fn refuses_age_rules_without_count_unit() {
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    2,
                    r#""tagStatus":"any","countType":"sinceImagePulled","countNumber":30"#
                ),
            ]),
            "rules[1] (rulePriority 2): countType \"sinceImagePulled\" needs a countUnit: add \"countUnit\": \"days\""
        );
        assert_eq!(
            refused(&[rule(
                4,
                r#""tagStatus":"untagged","countType":"sinceImagePushed","countNumber":30"#
            )]),
            "rules[0] (rulePriority 4): countType \"sinceImagePushed\" needs a countUnit: add \"countUnit\": \"days\""
        );
    }

    #[test]
    fn refuses_count_units_other_than_days() {
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    2,
                    r#""tagStatus":"any","countType":"sinceImagePushed","countUnit":"hours","countNumber":30"#
                ),
            ]),
            "rules[1] (rulePriority 2): countUnit \"hours\" is not supported: use \"countUnit\": \"days\""
        );
    }

    #[test]
    fn refuses_count_number_below_one() {
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    2,
                    r#""tagStatus":"any","countType":"imageCountMoreThan","countNumber":0"#
                ),
            ]),
            "rules[1] (rulePriority 2): countNumber must be between 1 and 4294967295"
        );
    }

    #[test]
    fn refuses_two_any_rules() {
        assert_eq!(
            refused(&[
                rule(
                    3,
                    r#""tagStatus":"any","countType":"imageCountMoreThan","countNumber":1"#
                ),
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    2,
                    r#""tagStatus":"any","countType":"imageCountMoreThan","countNumber":5"#
                ),
            ]),
            "rules[0] (rulePriority 3): only one rule may have tagStatus \"any\" (rules[2] already does): merge the two rules"
        );
    }

    #[test]
    fn refuses_an_any_rule_that_is_not_last() {
        assert_eq!(
            refused(&[
                rule(1, UNTAGGED_14_DAYS),
                rule(
                    2,
                    r#""tagStatus":"any","countType":"imageCountMoreThan","countNumber":5"#
                ),
                rule(
                    3,
                    r#""tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":1"#
                ),
            ]),
            "rules[1] (rulePriority 2): tagStatus \"any\" must have the highest rulePriority (3 is higher, in rules[2]): give this rule a rulePriority above 3"
        );
    }

    #[test]
    fn refuses_two_untagged_rules() {
        assert_eq!(
            refused(&[
                rule(
                    5,
                    r#""tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":3"#
                ),
                rule(1, UNTAGGED_14_DAYS),
            ]),
            "rules[0] (rulePriority 5): only one rule may have tagStatus \"untagged\" (rules[1] already does and applies first): merge the two rules"
        );
    }

    #[test]
    fn refuses_a_rule_with_the_same_tag_list_as_an_earlier_one() {
        // Prefix `prod` and pattern `prod*` select the same images; order in the list does
        // not matter.
        assert_eq!(
            refused(&[
                rule(
                    4,
                    r#""tagStatus":"tagged","tagPatternList":["v*","prod*"],"countType":"imageCountMoreThan","countNumber":1"#
                ),
                rule(
                    2,
                    r#""tagStatus":"tagged","tagPrefixList":["prod","v"],"countType":"sinceImagePushed","countUnit":"days","countNumber":30"#
                ),
            ]),
            "rules[0] (rulePriority 4): selects the same tags (v* and prod*) as rules[1], which applies first and claims every such image: change this rule's tag list or merge the two rules"
        );
    }

    // ---- evaluation: ECR's documented examples ----

    #[test]
    fn ecr_example_untagged_images_older_than_14_days() {
        let p = policy(&[described(
            1,
            "Expire images older than 14 days",
            UNTAGGED_14_DAYS,
        )]);
        let images = [
            img("sha256:old", &[], 20),
            img("sha256:edge", &[], 14),
            img("sha256:new", &[], 3),
            img("sha256:tagged", &["v1"], 30),
        ];
        assert_eq!(
            claimed_by(&p, &images),
            vec![Some(1), Some(1), Some(1), None]
        );
        assert_eq!(
            evaluate(&p, &images, NOW),
            vec![expiry(
                &images[0],
                1,
                "rule 1 (\"Expire images older than 14 days\"): pushed 20 days ago, more than 14 days"
            )]
        );
    }

    #[test]
    fn ecr_example_keep_only_one_untagged_image() {
        let p = policy(&[described(
            1,
            "Keep only one untagged image, expire all others",
            r#""tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1"#,
        )]);
        let images = [
            img("sha256:u2", &[], 3),
            img("sha256:t", &["latest"], 10),
            img("sha256:u3", &[], 1),
            img("sha256:u1", &[], 5),
        ];
        assert_eq!(
            evaluate(&p, &images, NOW),
            vec![
                expiry(
                    &images[3],
                    1,
                    "rule 1 (\"Keep only one untagged image, expire all others\"): 3rd newest of 3 untagged images, keeps 1"
                ),
                expiry(
                    &images[0],
                    1,
                    "rule 1 (\"Keep only one untagged image, expire all others\"): 2nd newest of 3 untagged images, keeps 1"
                ),
            ]
        );
    }

    #[test]
    fn ecr_example_a_prod_then_beta() {
        // ECR "Example A": only image A expires; B is kept by rule 1, so rule 2 cannot
        // expire it.
        let p = policy(&[
            described(
                1,
                "Rule 1",
                r#""tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":1"#,
            ),
            described(
                2,
                "Rule 2",
                r#""tagStatus":"tagged","tagPrefixList":["beta"],"countType":"imageCountMoreThan","countNumber":1"#,
            ),
        ]);
        let images = [
            img("sha256:a", &["beta-1", "prod-1"], 10),
            img("sha256:b", &["beta-2", "prod-2"], 9),
            img("sha256:c", &["beta-3"], 8),
        ];
        assert_eq!(claimed_by(&p, &images), vec![Some(1), Some(1), Some(2)]);
        assert_eq!(
            evaluate(&p, &images, NOW),
            vec![expiry(
                &images[0],
                1,
                "rule 1 (\"Rule 1\"): 2nd newest of 2 images tagged prod*, keeps 1"
            )]
        );
    }

    #[test]
    fn ecr_example_b_two_prefixes_then_beta() {
        // ECR "Example B": rule 1 selects images with both a beta and a prod tag, keeps
        // the newest (C) and expires A and B; rule 2 sees nothing.
        let p = policy(&[
            described(
                1,
                "Rule 1",
                r#""tagStatus":"tagged","tagPrefixList":["beta","prod"],"countType":"imageCountMoreThan","countNumber":1"#,
            ),
            described(
                2,
                "Rule 2",
                r#""tagStatus":"tagged","tagPrefixList":["beta"],"countType":"imageCountMoreThan","countNumber":1"#,
            ),
        ]);
        let images = [
            img("sha256:a", &["beta-1", "prod-1"], 10),
            img("sha256:b", &["beta-2", "prod-2"], 9),
            img("sha256:c", &["beta-3", "prod-3"], 8),
        ];
        assert_eq!(claimed_by(&p, &images), vec![Some(1), Some(1), Some(1)]);
        assert_eq!(
            evaluate(&p, &images, NOW),
            vec![
                expiry(
                    &images[0],
                    1,
                    "rule 1 (\"Rule 1\"): 3rd newest of 3 images tagged beta* and prod*, keeps 1"
                ),
                expiry(
                    &images[1],
                    1,
                    "rule 1 (\"Rule 1\"): 2nd newest of 3 images tagged beta* and prod*, keeps 1"
                ),
            ]
        );
    }

    #[test]
    fn prefix_prod_keep_one_then_any_keep_one() {
        let p = policy(&[
            rule(
                1,
                r#""tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":1"#,
            ),
            rule(
                2,
                r#""tagStatus":"any","countType":"imageCountMoreThan","countNumber":1"#,
            ),
        ]);
        let images = [
            img("sha256:p1", &["prod-1"], 50),
            img("sha256:p2", &["prod-2", "latest"], 40),
            img("sha256:d1", &["dev-1"], 30),
            img("sha256:u", &[], 20),
            img("sha256:d2", &["dev-2"], 10),
        ];
        // p2 is older than every image the `any` rule keeps, but rule 1 claimed (and
        // kept) it, so rule 2 never counts it.
        assert_eq!(
            claimed_by(&p, &images),
            vec![Some(1), Some(1), Some(2), Some(2), Some(2)]
        );
        assert_eq!(
            evaluate(&p, &images, NOW),
            vec![
                expiry(
                    &images[0],
                    1,
                    "rule 1: 2nd newest of 2 images tagged prod*, keeps 1"
                ),
                expiry(&images[2], 2, "rule 2: 3rd newest of 3 images, keeps 1"),
                expiry(&images[3], 2, "rule 2: 2nd newest of 3 images, keeps 1"),
            ]
        );
    }

    // ---- matching ----

    /// The tags (each as a one-tag image) that a single pattern selects.
    fn matching<'t>(pattern: &str, tags: &[&'t str]) -> Vec<&'t str> {
        let p = policy(&[rule(
            1,
            &format!(
                r#""tagStatus":"tagged","tagPatternList":["{pattern}"],"countType":"imageCountMoreThan","countNumber":1"#
            ),
        )]);
        tags.iter()
            .copied()
            .filter(|t| p.rules()[0].selects(&img("sha256:x", &[t], 0)))
            .collect()
    }

    #[test]
    fn wildcards_match_whole_tags_at_start_middle_and_end() {
        let tags = [
            "prod",
            "prod1",
            "prod-v1-rc",
            "xprod",
            "Prod",
            "v1-rc",
            "release-1.2-rc",
            "release--rc",
            "release-1.2-rc1",
        ];
        assert_eq!(
            matching("prod*", &tags),
            vec!["prod", "prod1", "prod-v1-rc"]
        );
        assert_eq!(
            matching("*-rc", &tags),
            vec!["prod-v1-rc", "v1-rc", "release-1.2-rc", "release--rc"]
        );
        assert_eq!(
            matching("release-*-rc", &tags),
            vec!["release-1.2-rc", "release--rc"]
        );
        assert_eq!(
            matching("*r*d*", &tags),
            vec!["prod", "prod1", "prod-v1-rc", "xprod", "Prod"]
        );
        assert_eq!(matching("prod", &tags), vec!["prod"]);
        assert_eq!(matching("*", &tags), tags.to_vec());
        // A tagged rule never selects an untagged image, even with `*`.
        let any_tag = policy(&[rule(
            1,
            r#""tagStatus":"tagged","tagPatternList":["*"],"countType":"imageCountMoreThan","countNumber":1"#,
        )]);
        assert_eq!(
            claimed_by(
                &any_tag,
                &[img("sha256:u", &[], 0), img("sha256:t", &["t"], 0)]
            ),
            vec![None, Some(1)]
        );
    }

    #[test]
    fn several_prefixes_select_only_images_with_all_of_them() {
        let p = policy(&[rule(
            1,
            r#""tagStatus":"tagged","tagPrefixList":["prod","v"],"countType":"sinceImagePushed","countUnit":"days","countNumber":1"#,
        )]);
        let images = [
            img("sha256:both", &["prod-1", "v1"], 5),
            img("sha256:prod-only", &["prod-v"], 5),
            img("sha256:v-only", &["v2"], 5),
            img("sha256:one-tag-both", &["v-prod"], 5),
            img("sha256:none", &[], 5),
        ];
        assert_eq!(
            claimed_by(&p, &images),
            vec![Some(1), None, None, None, None]
        );
        assert_eq!(
            evaluate(&p, &images, NOW),
            vec![expiry(
                &images[0],
                1,
                "rule 1: pushed 5 days ago, more than 1 day"
            )]
        );
        // With patterns, one tag may satisfy several entries.
        let q = policy(&[rule(
            1,
            r#""tagStatus":"tagged","tagPatternList":["*prod*","v*"],"countType":"sinceImagePushed","countUnit":"days","countNumber":1"#,
        )]);
        assert_eq!(
            claimed_by(&q, &images),
            vec![Some(1), None, None, Some(1), None]
        );
    }

    // ---- ages ----

    #[test]
    fn since_image_pushed_expires_only_strictly_more_than_count_days() {
        let p = policy(&[rule(
            1,
            r#""tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":30"#,
        )]);
        let exactly = img("sha256:exactly", &["a"], 30);
        let mut one_ms_more = img("sha256:one-ms-more", &["b"], 30);
        one_ms_more.pushed_ms -= 1;
        let mut five_hours_more = img("sha256:five-hours-more", &[], 30);
        five_hours_more.pushed_ms -= 5 * 3_600_000;
        let older = img("sha256:older", &["c"], 31);
        let future = img("sha256:future", &["d"], -2);
        let images = [
            exactly,
            one_ms_more.clone(),
            five_hours_more.clone(),
            older.clone(),
            future,
        ];
        assert_eq!(
            evaluate(&p, &images, NOW),
            vec![
                expiry(&older, 1, "rule 1: pushed 31 days ago, more than 30 days"),
                expiry(
                    &five_hours_more,
                    1,
                    "rule 1: pushed 30 days and 5 hours ago, more than 30 days"
                ),
                expiry(
                    &one_ms_more,
                    1,
                    "rule 1: pushed 30 days and 1 ms ago, more than 30 days"
                ),
            ]
        );
    }

    #[test]
    fn since_image_pulled_counts_from_last_pull_or_from_push() {
        let p = policy(&[rule(
            3,
            r#""tagStatus":"any","countType":"sinceImagePulled","countUnit":"days","countNumber":7"#,
        )]);
        let pulled = |digest: &str, pushed: i64, pulled: i64| Image {
            last_pulled_ms: Some(NOW - pulled * DAY_MS),
            ..img(digest, &["t"], pushed)
        };
        let images = [
            pulled("sha256:pulled-recently", 100, 2),
            pulled("sha256:pulled-long-ago", 100, 12),
            pulled("sha256:pulled-exactly-7", 100, 7),
            img("sha256:never-old", &[], 12),
            img("sha256:never-new", &[], 3),
            pulled("sha256:repushed-new", 2, 50),
            pulled("sha256:repushed-old", 9, 50),
        ];
        assert_eq!(
            evaluate(&p, &images, NOW),
            vec![
                expiry(
                    &images[1],
                    3,
                    "rule 3: last pulled 12 days ago, more than 7 days"
                ),
                expiry(
                    &images[3],
                    3,
                    "rule 3: last pulled 12 days ago (never pulled: counted from push), more than 7 days"
                ),
                expiry(
                    &images[6],
                    3,
                    "rule 3: last pulled 9 days ago (not pulled since its last push: counted from push), more than 7 days"
                ),
            ]
        );
    }

    // ---- protection and determinism ----

    #[test]
    fn protected_images_never_expire_but_take_kept_slots() {
        let p = policy(&[
            rule(
                1,
                r#""tagStatus":"tagged","tagPrefixList":["prod"],"countType":"imageCountMoreThan","countNumber":2"#,
            ),
            rule(
                2,
                r#""tagStatus":"any","countType":"sinceImagePushed","countUnit":"days","countNumber":1"#,
            ),
        ]);
        let protect = |mut i: Image| {
            i.protected = true;
            i
        };
        let images = [
            protect(img("sha256:p5", &["prod-5"], 1)),
            img("sha256:p4", &["prod-4"], 2),
            protect(img("sha256:p3", &["prod-3"], 3)),
            img("sha256:p2", &["prod-2"], 4),
            img("sha256:p1", &["prod-1"], 5),
            protect(img("sha256:dev-old", &["dev"], 50)),
            img("sha256:dev2-old", &["dev2"], 50),
        ];
        // p5 (protected) and p4 are the two kept; p3 is beyond them but protected, and
        // that does not save p2.
        assert_eq!(
            evaluate(&p, &images, NOW),
            vec![
                expiry(
                    &images[4],
                    1,
                    "rule 1: 5th newest of 5 images tagged prod*, keeps 2"
                ),
                expiry(
                    &images[3],
                    1,
                    "rule 1: 4th newest of 5 images tagged prod*, keeps 2"
                ),
                expiry(&images[6], 2, "rule 2: pushed 50 days ago, more than 1 day"),
            ]
        );
    }

    #[test]
    fn equal_push_times_are_ordered_by_digest() {
        let p = policy(&[rule(
            1,
            r#""tagStatus":"untagged","countType":"imageCountMoreThan","countNumber":1"#,
        )]);
        let images = vec![
            img("sha256:d", &[], 4),
            img("sha256:b", &[], 4),
            img("sha256:a", &[], 4),
            img("sha256:c", &[], 4),
        ];
        let expected = vec![
            expiry(
                &images[1],
                1,
                "rule 1: 2nd newest of 4 untagged images, keeps 1",
            ),
            expiry(
                &images[3],
                1,
                "rule 1: 3rd newest of 4 untagged images, keeps 1",
            ),
            expiry(
                &images[0],
                1,
                "rule 1: 4th newest of 4 untagged images, keeps 1",
            ),
        ];
        assert_eq!(evaluate(&p, &images, NOW), expected);
        let mut reversed = images.clone();
        reversed.reverse();
        assert_eq!(evaluate(&p, &reversed, NOW), expected);
    }

    #[test]
    fn reasons_use_ordinals_and_singulars() {
        assert_eq!(
            [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111, 112]
                .map(ordinal)
                .to_vec(),
            vec![
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd",
                "101st", "111th", "112th"
            ]
        );
        assert_eq!(
            [
                (DAY_MS, 0),
                (DAY_MS + 1_000, 1),
                (DAY_MS + 60_000, 1),
                (DAY_MS + 2 * 60_000, 1),
                (DAY_MS + 3_600_000, 1),
                (2 * DAY_MS + 1, 1),
                (9 * DAY_MS + 123, 1),
            ]
            .map(|(age, limit)| elapsed(age, limit))
            .to_vec(),
            vec![
                "1 day",
                "1 day and 1 second",
                "1 day and 1 minute",
                "1 day and 2 minutes",
                "1 day and 1 hour",
                "2 days",
                "9 days",
            ]
        );
        let p = policy(&[described(
            4,
            "one",
            r#""tagStatus":"tagged","tagPatternList":["x*"],"countType":"imageCountMoreThan","countNumber":1"#,
        )]);
        let older = img("sha256:1", &["x1"], 2);
        let newer = img("sha256:2", &["x2"], 1);
        assert_eq!(
            evaluate(&p, &[older.clone(), newer], NOW),
            vec![expiry(
                &older,
                4,
                "rule 4 (\"one\"): 2nd newest of 2 images tagged x*, keeps 1"
            )]
        );
        assert_eq!(images_phrase(&TagSelection::Untagged, 1), "untagged image");
        assert_eq!(images_phrase(&TagSelection::Any, 1), "image");
    }
}
