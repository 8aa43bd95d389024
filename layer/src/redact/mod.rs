//! Redaction: rules that mask or drop sensitive values in an event's
//! `request` (headers, query, URL, path, path parameters, body) and
//! `metadata` before the event leaves the process.
//!
//! A rule is `<mask|drop|keep> [<scope>:]<key pattern>`; rules are separated
//! by commas, and the word `defaults` stands for [`DEFAULT_RULES`]. The first
//! matching rule wins, so `keep body:auth_type, defaults` keeps a name the
//! defaults would mask. Scopes are
//! `body`, `query` (the `request.query` object and the query string and
//! fragment parameters of every URL), `headers`, `path` (`request.path_params`
//! and `;name=value` path parameters) and `metadata`; without a scope a rule
//! applies everywhere.
//!
//! Two kinds of key pattern:
//!
//! * **Folded**, e.g. `api_key`, `*token`: keys are compared after folding
//!   case and removing everything but letters and digits, so `api_key` also
//!   matches `apiKey`, `API-KEY`, and `*apikey` matches `x-api-key`. A pattern
//!   may start and/or end with `*` (any suffix / prefix of the folded key).
//! * **Name parts**, starting with `~`, e.g. `~*key`, `~*session*`, `~code`:
//!   keys are split into parts at every `-`, `_`, `.` (any character that is
//!   not a letter or digit) and at camelCase boundaries, lower-cased, and a
//!   `*` matches any run of parts (none included). `~*key` matches `api_key`,
//!   `X-Secret-Key` and `privateKey` but not `monkey`, `keyboard` or `key_id`;
//!   `~*session*` matches `X-Session-Id`; `~code` matches `code` and `Code`
//!   only, not `status_code`.
//!
//! In a JSON document a rule matches keys at
//! any depth, and a matched object or array is replaced whole. Form-encoded
//! data is redacted pair by pair, keeping the bytes of untouched pairs.
//!
//! Besides keyed rules, whenever redaction is on (any rule, or opaque bodies
//! masked):
//!
//! * every URL — `request.url`, `request.path` (as a path with a query
//!   string), and URLs anywhere inside header, query, body, path-parameter and
//!   metadata values — has its userinfo (`https://user:pw@host`) masked whole,
//!   its query string and its fragment's parameters (`#access_token=…`,
//!   `#/route?token=…`) redacted with the `query` rules, and its `;name=value`
//!   path parameters with the `path` rules; a fragment without `=` is kept;
//! * a path parameter masked by name is masked where its value stands in
//!   `request.path` and `request.url` too (`/reset/{token}`);
//! * a string value that is itself a JSON document is parsed and redacted
//!   the same way, down to [`MAX_NESTING`] levels of documents inside
//!   strings; deeper, such a string is masked whole; a string that is
//!   form-encoded data is redacted pair by pair;
//! * a header value with an HTTP authentication scheme (`Bearer …`,
//!   `Basic …`) is masked whatever the header's name.
//!
//! A body that is neither JSON nor form data is masked whole unless the
//! policy says to keep it, because keyed rules cannot see inside it; so is a
//! string that looks like a JSON object but does not parse.

mod rules;
mod text;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde_json::Value;
use trailhouse_schemas::event::Request;
use trailhouse_schemas::AuditEvent;

#[cfg(test)]
use rules::segments;
use rules::Index;
pub use rules::{Action, OpaqueBody, Rule, RuleError, Rules, Scope};

/// What a masked value becomes.
pub const MASK: &str = "[REDACTED]";

/// [`MASK`] as it is written into URLs and form data.
pub const MASK_ENCODED: &str = "%5BREDACTED%5D";

/// How many levels of JSON documents, form data and URLs inside string
/// values are looked into; a value nested deeper that could hide a
/// credential is masked whole.
pub const MAX_NESTING: usize = 4;

/// The rules applied when nothing else is configured: the folded rules of
/// earlier releases, then name-part rules for credential-shaped names.
pub const DEFAULT_RULES: &str = "mask authorization, mask proxy-authorization, mask cookie, \
     mask set-cookie, mask password, mask *password, mask passwd, mask token, mask *token, \
     mask secret, mask *secret, mask api_key, mask *apikey, \
     mask ~*auth*, mask ~*authorization*, mask ~*token*, mask ~*secret*, mask ~*secrets*, \
     mask ~*password*, mask ~*passwords*, mask ~*passwd*, mask ~*pwd*, mask ~*passphrase*, \
     mask ~*pass, mask ~*key, mask ~*api-keys, mask ~*private-key*, mask ~*access-key*, \
     mask *accesskey, mask *secretkey, mask *privatekey, mask *sessionid, \
     mask ~*session*, mask ~*cookie*, mask ~*cookies*, mask ~*signature*, mask ~*sig*, \
     mask ~*credential*, mask ~*credentials*, mask ~code, mask ~*otp*, mask ~*totp*, \
     mask ~*mfa-code, mask ~*verification-code, mask ~*recovery-code*, mask ~*recovery-codes, \
     mask ~*backup-code*, mask ~*backup-codes, \
     mask ~*reset-code, mask ~*security-code, mask ~*jwt*, mask ~*csrf*, mask ~*xsrf*, \
     mask ~*saml-response, mask ~*assertion*";

/// Applies redaction rules to events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redactor {
    rules: Index,
    opaque_body: OpaqueBody,
}

impl Default for Redactor {
    /// [`DEFAULT_RULES`], opaque bodies masked.
    fn default() -> Self {
        Redactor::new(Rules::defaults(), OpaqueBody::Mask)
    }
}

impl Redactor {
    /// Applies `rules`, and `opaque_body` to bodies the rules cannot see into.
    pub fn new(rules: Rules, opaque_body: OpaqueBody) -> Redactor {
        Redactor {
            rules: Index::new(rules.0),
            opaque_body,
        }
    }

    /// Parses a rule list (see the module docs) and the opaque-body policy.
    pub fn parse(rules: &str, opaque_body: &str) -> Result<Redactor, RuleError> {
        Ok(Redactor::new(rules.parse()?, opaque_body.parse()?))
    }

    /// The rules in force, in order.
    pub fn rules(&self) -> &[Rule] {
        self.rules.rules()
    }

    /// No rules at all: events pass unchanged (opaque bodies and URLs included).
    pub fn none() -> Redactor {
        Redactor {
            rules: Index::default(),
            opaque_body: OpaqueBody::Keep,
        }
    }

    fn is_off(&self) -> bool {
        self.rules().is_empty() && self.opaque_body == OpaqueBody::Keep
    }

    fn action(&self, scope: Scope, key: &str) -> Option<Action> {
        self.rules.action(scope, key).filter(|a| *a != Action::Keep)
    }

    /// Redacts an event in place: its request and its metadata.
    pub fn apply(&self, event: &mut AuditEvent) {
        self.apply_request(&mut event.request);
        self.apply_metadata(&mut event.metadata);
    }

    /// Redacts an event's `metadata` in place: by key, then inside values.
    pub fn apply_metadata(&self, metadata: &mut BTreeMap<String, String>) {
        if self.is_off() {
            return;
        }
        self.map(Scope::Metadata, metadata, |_| false);
    }

    /// Redacts the request part of an event in place.
    pub fn apply_request(&self, request: &mut Request) {
        if self.is_off() {
            return;
        }
        // Path parameters by name; a masked value is masked in the path and
        // the URL too.
        let mut hidden: Vec<String> = Vec::new();
        for (k, v) in &request.path_params {
            if self.action(Scope::Path, k).is_some() && !v.is_empty() {
                hidden.push(v.clone());
            }
        }
        self.map(Scope::Path, &mut request.path_params, |_| false);
        if let Some(path) = request.path.as_mut() {
            *path = self.url(path, &hidden, 0);
        }
        if let Some(url) = request.url.as_mut() {
            *url = self.url(url, &hidden, 0);
        }
        self.map(Scope::Headers, &mut request.headers, text::has_auth_scheme);
        if let Some(query) = request.query.as_mut() {
            self.object(Scope::Query, query, 0);
        }
        if let Some(body) = request.body.take() {
            request.body = Some(self.body(body));
        }
    }

    /// Redacts a string map (headers, path parameters, metadata): keys by the
    /// rules of `scope`, values that `always` says are credentials, then what
    /// is inside the other values.
    fn map(&self, scope: Scope, map: &mut BTreeMap<String, String>, always: impl Fn(&str) -> bool) {
        *map = std::mem::take(map)
            .into_iter()
            .filter_map(|(k, v)| match self.action(scope, &k) {
                Some(Action::Drop) => None,
                Some(Action::Mask) => Some((k, MASK.to_string())),
                Some(Action::Keep) | None if always(&v) => Some((k, MASK.to_string())),
                Some(Action::Keep) | None => {
                    let v = self.text(scope, &v, 0).unwrap_or(v);
                    Some((k, v))
                }
            })
            .collect();
    }

    /// Redacts a body: JSON, then form encoding, else the opaque policy.
    pub fn body(&self, body: String) -> String {
        if self.is_off() {
            return body;
        }
        let trimmed = body.trim_start();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            if let Ok(mut value) = serde_json::from_str::<Value>(&body) {
                if self.value(Scope::Body, &mut value, 0) {
                    return serde_json::to_string(&value).unwrap_or_else(|_| MASK.to_string());
                }
                return body;
            }
        } else if text::looks_form_encoded(&body) {
            return self.form(Scope::Body, &body, 0);
        }
        match self.opaque_body {
            OpaqueBody::Keep => self.text(Scope::Body, &body, 0).unwrap_or(body),
            OpaqueBody::Mask if body.is_empty() => body,
            OpaqueBody::Mask => MASK.to_string(),
        }
    }
}
