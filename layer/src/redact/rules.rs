//! The rule language: parsing `<mask|drop|keep> [<scope>:]<key pattern>` lists
//! and the opaque-body policy, and matching keys against rules.

use super::DEFAULT_RULES;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep the key, replace the value with [`MASK`](super::MASK).
    Mask,
    /// Remove the key and its value.
    Drop,
    /// Leave the key and its value as they are (an exception to later
    /// rules, since the first matching rule wins).
    Keep,
}

/// Where a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// Everywhere (a rule without a scope).
    Any,
    /// `request.body`, and JSON or form data inside its strings.
    Body,
    /// `request.query`, and the query string and fragment parameters of
    /// every URL (`request.url`, `request.path`, URLs inside values).
    Query,
    /// `request.headers` (by header name).
    Headers,
    /// `request.path_params` (by parameter name) and `;name=value`
    /// parameters of path segments.
    Path,
    /// `metadata` (by key), and JSON or form data inside its values.
    Metadata,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// `~…`: whole name parts, `None` standing for any run of parts.
    Parts(Vec<Option<String>>),
}

impl Pattern {
    fn parse(raw: &str) -> Option<Pattern> {
        if let Some(parts) = raw.strip_prefix('~') {
            return Pattern::parse_parts(parts);
        }
        let starts = raw.starts_with('*');
        let ends = raw.len() > 1 && raw.ends_with('*');
        let core = fold(raw.trim_matches('*'));
        if core.is_empty() {
            return None;
        }
        Some(match (starts, ends) {
            (true, true) => Pattern::Contains(core),
            (true, false) => Pattern::Suffix(core),
            (false, true) => Pattern::Prefix(core),
            (false, false) => Pattern::Exact(core),
        })
    }

    /// `*-session-*`, `*key`, `code`: the parts of the text between the
    /// stars, a star standing for any run of parts (none included).
    fn parse_parts(raw: &str) -> Option<Pattern> {
        let mut parts: Vec<Option<String>> = Vec::new();
        for (i, piece) in raw.split('*').enumerate() {
            if i > 0 && parts.last() != Some(&None) {
                parts.push(None);
            }
            parts.extend(segments(piece).into_iter().map(Some));
        }
        parts
            .iter()
            .any(Option::is_some)
            .then_some(Pattern::Parts(parts))
    }

    fn matches(&self, key: &Key) -> bool {
        match self {
            Pattern::Exact(p) => key.folded == *p,
            Pattern::Prefix(p) => key.folded.starts_with(p.as_str()),
            Pattern::Suffix(p) => key.folded.ends_with(p.as_str()),
            Pattern::Contains(p) => key.folded.contains(p.as_str()),
            Pattern::Parts(p) => parts_match(p, key),
        }
    }
}

/// Glob matching of name parts, `None` matching any run of parts: the
/// usual wildcard walk that retries from the last star, so it takes at most
/// `pattern.len() × parts` steps whatever the input.
fn parts_match(pattern: &[Option<String>], key: &Key) -> bool {
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < key.len() {
        match pattern.get(p) {
            Some(Some(want)) if want == key.part(s) => {
                p += 1;
                s += 1;
                continue;
            }
            Some(None) => {
                star = Some((p, s));
                p += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, ss)) => {
                p = sp + 1;
                s = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(Option::is_none)
}

/// Lower-cases and keeps only letters and digits.
fn fold(key: &str) -> String {
    key.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// A name prepared for matching: folded (lower-cased, letters and digits
/// only) and split into parts at every character that is not a letter or
/// digit (`-`, `_`, `.`, …) and at camelCase boundaries (`xAmzSignature`,
/// `APIKey` → `api`, `key`); digits stay with the letters before them
/// (`oauth2`). The parts are consecutive slices of the folded name.
pub(crate) struct Key {
    folded: String,
    starts: Vec<usize>,
}

impl Key {
    pub(crate) fn new(name: &str) -> Key {
        let mut folded = String::with_capacity(name.len());
        let mut starts = Vec::new();
        let mut prev: Option<char> = None;
        let mut chars = name.chars().peekable();
        while let Some(c) = chars.next() {
            if !c.is_alphanumeric() {
                prev = None;
                continue;
            }
            let boundary = match prev {
                None => true,
                Some(p) => {
                    c.is_uppercase()
                        && (p.is_lowercase()
                            || p.is_numeric()
                            || (p.is_uppercase() && chars.peek().is_some_and(|n| n.is_lowercase())))
                }
            };
            if boundary {
                starts.push(folded.len());
            }
            folded.extend(c.to_lowercase());
            prev = Some(c);
        }
        Key { folded, starts }
    }

    fn len(&self) -> usize {
        self.starts.len()
    }

    fn part(&self, i: usize) -> &str {
        let start = self.starts.get(i).copied().unwrap_or(self.folded.len());
        let end = self.starts.get(i + 1).copied().unwrap_or(self.folded.len());
        self.folded.get(start..end).unwrap_or("")
    }

    fn parts(&self) -> impl Iterator<Item = &str> {
        (0..self.len()).map(|i| self.part(i))
    }
}

/// A name's parts, lower-cased (see [`Key`]).
pub(super) fn segments(name: &str) -> Vec<String> {
    Key::new(name).parts().map(String::from).collect()
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    action: Action,
    scope: Scope,
    pattern: Pattern,
}

impl Rule {
    /// What this rule does to `key` in `scope`.
    pub(crate) fn action_for(&self, scope: Scope, key: &Key) -> Option<Action> {
        ((self.scope == Scope::Any || self.scope == scope) && self.pattern.matches(key))
            .then_some(self.action)
    }
}

/// The rules of a list, indexed so that a key is tried only against the
/// rules that could match it: a name-part rule needs a part equal to its
/// first literal part; folded rules are always tried.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Index {
    rules: Vec<Rule>,
    folded: Vec<usize>,
    by_part: std::collections::HashMap<String, Vec<usize>>,
}

impl Index {
    pub(crate) fn new(rules: Vec<Rule>) -> Index {
        let mut index = Index::default();
        for (i, rule) in rules.iter().enumerate() {
            match &rule.pattern {
                Pattern::Parts(p) => match p.iter().flatten().next() {
                    Some(first) => index.by_part.entry(first.clone()).or_default().push(i),
                    None => index.folded.push(i),
                },
                _ => index.folded.push(i),
            }
        }
        index.rules = rules;
        index
    }

    pub(crate) fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The action of the first rule (in list order) that matches `key` in
    /// `scope`.
    pub(crate) fn action(&self, scope: Scope, name: &str) -> Option<Action> {
        let key = Key::new(name);
        let matches = |i: &usize| self.rules[*i].action_for(scope, &key).is_some();
        let mut first = self.folded.iter().copied().find(|i| matches(i));
        if !self.by_part.is_empty() {
            for part in key.parts() {
                let Some(candidates) = self.by_part.get(part) else {
                    continue;
                };
                let before = |i: &&usize| first.is_none_or(|f| **i < f);
                if let Some(i) = candidates.iter().take_while(before).find(|i| matches(i)) {
                    first = Some(*i);
                }
            }
        }
        first.map(|i| self.rules[i].action)
    }
}

/// What happens to a body that is neither JSON nor form-encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpaqueBody {
    /// Replace it with [`MASK`](super::MASK) (the default: rules cannot see inside it).
    #[default]
    Mask,
    /// Keep it as sent.
    Keep,
}

/// A rule list that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error(
        "redaction rule {0:?} is not `<mask|drop|keep> [body:|query:|headers:|path:|metadata:]<key>`"
    )]
    Syntax(String),
    #[error("redaction policy {0:?} for opaque bodies is not `mask` or `keep`")]
    Policy(String),
}

impl std::str::FromStr for OpaqueBody {
    type Err = RuleError;

    /// `mask` (or its alias `drop`) or `keep`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mask" | "drop" => Ok(OpaqueBody::Mask),
            "keep" => Ok(OpaqueBody::Keep),
            other => Err(RuleError::Policy(other.to_string())),
        }
    }
}

/// A parsed rule list (see the module docs); with an [`OpaqueBody`] policy
/// it makes a [`Redactor`](super::Redactor).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules(pub(crate) Vec<Rule>);

impl Rules {
    /// No rules.
    pub fn none() -> Rules {
        Rules(Vec::new())
    }

    /// [`DEFAULT_RULES`].
    pub fn defaults() -> Rules {
        DEFAULT_RULES.parse().unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::str::FromStr for Rules {
    type Err = RuleError;

    fn from_str(rules: &str) -> Result<Self, Self::Err> {
        let mut parsed = Vec::new();
        for item in rules.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item.eq_ignore_ascii_case("defaults") {
                parsed.extend(DEFAULT_RULES.parse::<Rules>()?.0);
                continue;
            }
            parsed.push(parse_rule(item).ok_or_else(|| RuleError::Syntax(item.to_string()))?);
        }
        Ok(Rules(parsed))
    }
}

fn parse_rule(item: &str) -> Option<Rule> {
    let (action, target) = item.split_once(char::is_whitespace)?;
    let action = match action.to_ascii_lowercase().as_str() {
        "mask" => Action::Mask,
        "drop" => Action::Drop,
        "keep" => Action::Keep,
        _ => return None,
    };
    let target = target.trim();
    let (scope, key) = match target.split_once(':') {
        Some((s, k)) => {
            let scope = match s.trim().to_ascii_lowercase().as_str() {
                "body" => Scope::Body,
                "query" => Scope::Query,
                "headers" | "header" => Scope::Headers,
                "path" => Scope::Path,
                "metadata" => Scope::Metadata,
                "any" | "*" => Scope::Any,
                _ => return None,
            };
            (scope, k.trim())
        }
        None => (Scope::Any, target),
    };
    if key.contains(char::is_whitespace) {
        return None;
    }
    Some(Rule {
        action,
        scope,
        pattern: Pattern::parse(key)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Redactor;

    #[test]
    fn rule_syntax_errors() {
        assert!(Redactor::parse("hide password", "mask").is_err());
        assert!(Redactor::parse("mask", "mask").is_err());
        assert!(Redactor::parse("mask cookies:x", "mask").is_err());
        assert!(Redactor::parse("mask *", "mask").is_err());
        assert!(Redactor::parse("mask a b", "mask").is_err());
        assert!(Redactor::parse("mask x", "sometimes").is_err());
        assert!(Redactor::parse("", "keep")
            .expect("empty")
            .rules()
            .is_empty());
    }

    #[test]
    fn rule_lists_and_policies_parse() {
        let defaults = DEFAULT_RULES.split(',').count();
        assert_eq!(
            Rules::defaults().0.len(),
            defaults,
            "every default rule parses"
        );
        let rules = [
            ("", Some(0)),
            ("defaults", Some(defaults)),
            ("DEFAULTS, mask body:ssn", Some(defaults + 1)),
            ("mask ~*key, mask path:~x-*, drop metadata:~*a-b*", Some(3)),
            ("mask ~*", None),
            ("mask ~-_", None),
            (" drop headers:x-debug ,, mask query:*id* ", Some(2)),
            ("mask any:x, drop *:y, mask header:z", Some(3)),
            ("hide password", None),
            ("mask", None),
            ("mask cookies:x", None),
            ("defaults, mask *", None),
        ];
        for (input, count) in rules {
            let parsed = input.parse::<Rules>();
            assert_eq!(parsed.as_ref().ok().map(|r| r.0.len()), count, "{input:?}");
            if count.is_none() {
                assert!(
                    matches!(parsed, Err(RuleError::Syntax(_))),
                    "{input:?}: {parsed:?}"
                );
            }
        }
        let policies = [
            ("mask", Some(OpaqueBody::Mask)),
            ("drop", Some(OpaqueBody::Mask)),
            (" Keep ", Some(OpaqueBody::Keep)),
            ("sometimes", None),
            ("", None),
        ];
        for (input, want) in policies {
            assert_eq!(input.parse::<OpaqueBody>().ok(), want, "{input:?}");
        }
        assert_eq!(
            "sometimes".parse::<OpaqueBody>().map_err(|e| e.to_string()),
            Err("redaction policy \"sometimes\" for opaque bodies is not `mask` or `keep`".into())
        );
        assert_eq!(
            Redactor::new(Rules::defaults(), OpaqueBody::Mask),
            Redactor::default()
        );
    }
}
