//! What is inside values: JSON documents, form data, URLs (userinfo, query
//! string, fragment, `;name=value` path parameters) and path segments that
//! hold a masked path parameter.

use serde_json::{Map, Value};

use super::{Action, OpaqueBody, Redactor, Scope, MASK, MASK_ENCODED, MAX_NESTING};

/// What a string value is, as far as redaction is concerned.
enum Shape {
    /// A JSON object or array.
    Json(Value),
    /// Starts like a JSON object but does not parse (e.g. cut short).
    BrokenJson,
    /// Holds at least one `scheme://` URL.
    Urls,
    /// `a=b&c=d`.
    Form,
    /// Nothing a rule could see into.
    Plain,
}

fn shape(s: &str) -> Shape {
    let t = s.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        match serde_json::from_str::<Value>(s) {
            Ok(v @ (Value::Object(_) | Value::Array(_))) => return Shape::Json(v),
            Ok(_) => {}
            Err(_) if looks_like_json(t) => return Shape::BrokenJson,
            Err(_) => {}
        }
    }
    if next_url(s, 0).is_some() {
        Shape::Urls
    } else if looks_form_encoded(s) {
        Shape::Form
    } else {
        Shape::Plain
    }
}

impl Redactor {
    /// Redacts inside a string value at nesting `level`; `None` when nothing
    /// changed.
    pub(super) fn text(&self, scope: Scope, s: &str, level: usize) -> Option<String> {
        let out = match shape(s) {
            Shape::Plain => return None,
            _ if level > MAX_NESTING => MASK.to_string(),
            Shape::Json(mut v) => {
                if !self.value(scope, &mut v, level) {
                    return None;
                }
                serde_json::to_string(&v).unwrap_or_else(|_| MASK.to_string())
            }
            Shape::BrokenJson if self.opaque_body == OpaqueBody::Mask => MASK.to_string(),
            Shape::BrokenJson => return None,
            Shape::Urls => self.urls_in(s, level),
            Shape::Form => self.form(scope, s, level),
        };
        (out != s).then_some(out)
    }

    /// Redacts inside a JSON value of a document at nesting `level`; returns
    /// whether anything changed.
    pub(super) fn value(&self, scope: Scope, value: &mut Value, level: usize) -> bool {
        match value {
            Value::Object(map) => self.object(scope, map, level),
            Value::Array(items) => {
                // Every item, not just up to the first change.
                let mut changed = false;
                for v in items.iter_mut() {
                    changed |= self.value(scope, v, level);
                }
                changed
            }
            Value::String(s) => match self.text(scope, s, level + 1) {
                Some(new) => {
                    *s = new;
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    pub(super) fn object(&self, scope: Scope, map: &mut Map<String, Value>, level: usize) -> bool {
        let mut changed = false;
        let keys: Vec<String> = map.keys().cloned().collect();
        for key in keys {
            match self.action(scope, &key) {
                Some(Action::Drop) => {
                    map.remove(&key);
                    changed = true;
                }
                Some(Action::Mask) => {
                    let masked = Value::String(MASK.to_string());
                    if map.get(&key) != Some(&masked) {
                        map.insert(key, masked);
                        changed = true;
                    }
                }
                Some(Action::Keep) | None => {
                    if let Some(v) = map.get_mut(&key) {
                        changed |= self.value(scope, v, level);
                    }
                }
            }
        }
        changed
    }

    /// Redacts `a=b&c=d`, keeping the order and encoding of untouched pairs;
    /// values are looked into (a URL in `redirect_uri=…`).
    pub(super) fn form(&self, scope: Scope, qs: &str, level: usize) -> String {
        self.pairs(scope, qs, '&', level)
    }

    /// `k=v` pairs separated by `sep`.
    fn pairs(&self, scope: Scope, qs: &str, sep: char, level: usize) -> String {
        let mut out: Vec<String> = Vec::new();
        for pair in qs.split(sep) {
            let (raw_key, raw_value) = match pair.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (pair, None),
            };
            let key = decode_form(raw_key);
            match self.action(scope, &key) {
                Some(Action::Drop) => {}
                Some(Action::Mask) => out.push(format!("{raw_key}={MASK_ENCODED}")),
                Some(Action::Keep) | None => {
                    let inner = raw_value
                        .and_then(|v| self.text(scope, &decode_form(v), level + 1))
                        .map(|v| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>());
                    match inner {
                        Some(v) => out.push(format!("{raw_key}={v}")),
                        None => out.push(pair.to_string()),
                    }
                }
            }
        }
        out.join(&sep.to_string())
    }

    /// Redacts every `scheme://…` URL inside free text.
    fn urls_in(&self, s: &str, level: usize) -> String {
        let mut out = String::with_capacity(s.len());
        let mut at = 0;
        while let Some((start, end)) = next_url(s, at) {
            out.push_str(&s[at..start]);
            out.push_str(&self.url(&s[start..end], &[], level));
            at = end;
        }
        out.push_str(&s[at..]);
        out
    }

    /// Redacts one URL: `scheme://[userinfo@]host/path?query#fragment`, or a
    /// path with an optional query and fragment. Path segments equal to a
    /// `hidden` value are masked.
    pub(super) fn url(&self, url: &str, hidden: &[String], level: usize) -> String {
        let (prefix, rest) = match scheme_len(url) {
            Some(n) => {
                let after = &url[n + 3..];
                let authority_len = after.find('/').unwrap_or(after.len());
                let authority = &after[..authority_len];
                let mut prefix = url[..n + 3].to_string();
                match authority.rfind('@') {
                    Some(at) => {
                        prefix.push_str(MASK_ENCODED);
                        prefix.push_str(&authority[at..]);
                    }
                    None => prefix.push_str(authority),
                }
                (prefix, &after[authority_len..])
            }
            None => (String::new(), url),
        };
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut out = prefix;
        out.push_str(&self.path(path, hidden, level));
        if let Some(q) = query {
            out.push('?');
            out.push_str(&self.form(Scope::Query, q, level));
        }
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(&self.fragment(f, level));
        }
        out
    }

    /// `#access_token=…&state=…` and `#/route?token=…` are parameters;
    /// `#section` is kept.
    fn fragment(&self, f: &str, level: usize) -> String {
        if !f.contains('=') {
            return f.to_string();
        }
        match f.split_once('?') {
            Some((route, q)) => format!(
                "{}?{}",
                self.path(route, &[], level),
                self.form(Scope::Query, q, level)
            ),
            None => self.form(Scope::Query, f, level),
        }
    }

    /// Segment by segment: a segment equal to a `hidden` value is masked,
    /// `;name=value` parameters are redacted with the `path` rules.
    fn path(&self, path: &str, hidden: &[String], level: usize) -> String {
        let mut path = path.to_string();
        // Values that span segments (wildcard routes).
        for h in hidden.iter().filter(|h| h.contains('/')) {
            path = path.replace(h.as_str(), MASK_ENCODED);
        }
        if hidden.is_empty() && !path.contains(';') {
            return path;
        }
        let segments: Vec<String> = path
            .split('/')
            .map(|segment| {
                let (name, params) = match segment.split_once(';') {
                    Some((n, p)) => (n, Some(p)),
                    None => (segment, None),
                };
                let mut out = if hidden
                    .iter()
                    .any(|h| h == name || *h == percent_decode(name))
                {
                    MASK_ENCODED.to_string()
                } else {
                    name.to_string()
                };
                if let Some(p) = params {
                    out.push(';');
                    out.push_str(&self.pairs(Scope::Path, p, ';', level));
                }
                out
            })
            .collect();
        segments.join("/")
    }
}

/// `Bearer …`, `Basic …`, …: a header value that carries a credential.
pub(super) fn has_auth_scheme(value: &str) -> bool {
    let v = value.trim_start();
    ["bearer ", "basic ", "digest ", "negotiate ", "token "]
        .iter()
        .any(|scheme| {
            v.get(..scheme.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
                && v.len() > scheme.len()
        })
}

/// `a=b&c=d` without whitespace: what a form body or query string looks like.
pub(super) fn looks_form_encoded(body: &str) -> bool {
    !body.is_empty()
        && body.contains('=')
        && !body.contains(char::is_whitespace)
        && body
            .split('&')
            .all(|pair| pair.split_once('=').is_some_and(|(k, _)| !k.is_empty()))
}

/// `{"…`, `{}`, `[{`, `["`, `[[`: the start of a JSON document rather than
/// of text in brackets.
fn looks_like_json(t: &str) -> bool {
    let mut chars = t.chars().filter(|c| !c.is_whitespace());
    matches!(
        (chars.next(), chars.next()),
        (Some('{'), Some('"' | '}')) | (Some('['), Some('{' | '"' | '['))
    )
}

/// The length of `scheme` when `s` starts with `scheme://`.
fn scheme_len(s: &str) -> Option<usize> {
    let n = s.find("://")?;
    let scheme = &s[..n];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(n)
}

/// The next `scheme://…` URL in `s` at or after byte `from`: its start and
/// end (the first whitespace, quote or angle bracket).
fn next_url(s: &str, from: usize) -> Option<(usize, usize)> {
    let mut search = from;
    loop {
        let rel = s.get(search..)?.find("://")?;
        let sep = search + rel;
        let start = s[from..sep]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .last()
            .map(|(i, _)| from + i);
        let start = start.and_then(|i| {
            // The scheme starts with a letter: skip leading digits and signs.
            s[i..sep]
                .char_indices()
                .find(|(_, c)| c.is_ascii_alphabetic())
                .map(|(j, _)| i + j)
        });
        let end = s[sep..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .map_or(s.len(), |i| sep + i);
        match start {
            Some(start) if end > sep + 3 => return Some((start, end)),
            _ => search = sep + 3,
        }
    }
}

/// Form decoding: `+` is a space, then `%XX`.
fn decode_form(raw: &str) -> String {
    percent_decode(&raw.replace('+', " "))
}

/// `%XX` decoding (no `+`), lossy for bytes that are not UTF-8.
fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let hex = |b: &u8| (*b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                out.extend(u8::try_from(h * 16 + l).ok());
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
