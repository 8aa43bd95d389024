//! The rule language: parsing `<mask|drop> [<scope>:]<key pattern>` lists
//! and the opaque-body policy, and matching keys against rules.

use super::DEFAULT_RULES;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep the key, replace the value with [`MASK`](super::MASK).
    Mask,
    /// Remove the key and its value.
    Drop,
}

/// Where a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Any,
    Body,
    Query,
    Headers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
}

impl Pattern {
    fn parse(raw: &str) -> Option<Pattern> {
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

    fn matches(&self, folded: &str) -> bool {
        match self {
            Pattern::Exact(p) => folded == p,
            Pattern::Prefix(p) => folded.starts_with(p.as_str()),
            Pattern::Suffix(p) => folded.ends_with(p.as_str()),
            Pattern::Contains(p) => folded.contains(p.as_str()),
        }
    }
}

/// Lower-cases and keeps only letters and digits.
pub(crate) fn fold(key: &str) -> String {
    key.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    action: Action,
    scope: Scope,
    pattern: Pattern,
}

impl Rule {
    /// What this rule does to `folded` (a key passed through [`fold`]) in `scope`.
    pub(crate) fn action_for(&self, scope: Scope, folded: &str) -> Option<Action> {
        ((self.scope == Scope::Any || self.scope == scope) && self.pattern.matches(folded))
            .then_some(self.action)
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
    #[error("redaction rule {0:?} is not `<mask|drop> [body:|query:|headers:]<key>`")]
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
        _ => return None,
    };
    let target = target.trim();
    let (scope, key) = match target.split_once(':') {
        Some((s, k)) => {
            let scope = match s.trim().to_ascii_lowercase().as_str() {
                "body" => Scope::Body,
                "query" => Scope::Query,
                "headers" | "header" => Scope::Headers,
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
        let rules = [
            ("", Some(0)),
            ("defaults", Some(13)),
            ("DEFAULTS, mask body:ssn", Some(14)),
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
