//! What the vendor said when it refused a request, read from any refusal body it sends
//! (ASP.NET ProblemDetails, the envelope, a JSON `message`, plain text), sanitised for a
//! caller to read: no control characters, bounded length, plain field names only.

use serde_json::Value;

use super::envelope::is_not_json;

/// Longest vendor message passed on to a caller.
pub(super) const MAX_MESSAGE_CHARS: usize = 300;
/// Longest vendor field name passed on to a caller.
const MAX_FIELD_CHARS: usize = 64;

/// What the vendor said when it refused a request: the field it named, if any, and its
/// message, both sanitised (no control characters, bounded length) for a caller to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: Option<String>,
    pub message: String,
}

impl Refusal {
    /// A refusal carrying only a message (an envelope's `status.message`, say).
    pub fn message(text: &str) -> Self {
        Refusal {
            field: None,
            message: sanitize(text),
        }
    }

    /// Reads a refusal body: an ASP.NET ProblemDetails (`title`, `detail`, `errors: {Field:
    /// [messages]}`), an envelope with `status.message`, a JSON object with `message`, or
    /// plain text. HTML and unreadable bodies name nothing; `fallback` is the message then.
    pub fn of_body(content_type: Option<&str>, body: &[u8], fallback: &str) -> Self {
        let named = match serde_json::from_slice::<Value>(body) {
            Ok(v) => Self::of_json(&v),
            Err(_) if is_not_json(content_type, body) && !looks_like_html(content_type, body) => {
                std::str::from_utf8(body).ok().map(Refusal::message)
            }
            Err(_) => None,
        };
        named
            .filter(|r| !r.message.is_empty())
            .unwrap_or_else(|| Refusal::message(fallback))
    }

    fn of_json(v: &Value) -> Option<Self> {
        let text = |key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        // ProblemDetails `errors`: the first field and its first message.
        let error = v.get("errors").and_then(Value::as_object).and_then(|m| {
            m.iter().find_map(|(field, msgs)| {
                let msg = match msgs {
                    Value::Array(a) => a.iter().find_map(Value::as_str),
                    Value::String(s) => Some(s.as_str()),
                    _ => None,
                }?;
                Some((field_name(field), msg.to_owned()))
            })
        });
        let envelope_message = v
            .get("status")
            .and_then(|s| s.get("message"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let (field, message) = match error {
            Some((field, msg)) => (field, Some(msg)),
            None => (
                None,
                text("detail")
                    .or(envelope_message)
                    .or_else(|| text("message"))
                    .or_else(|| text("Message"))
                    .or_else(|| text("title"))
                    .or_else(|| text("error")),
            ),
        };
        Some(Refusal {
            field,
            message: sanitize(&message?),
        })
    }
}

fn looks_like_html(content_type: Option<&str>, body: &[u8]) -> bool {
    content_type.is_some_and(|t| t.to_ascii_lowercase().contains("html"))
        || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

/// Control characters become spaces, runs of whitespace one space; at most
/// [`MAX_MESSAGE_CHARS`] characters.
fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_MESSAGE_CHARS));
    let mut chars = 0;
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        for c in (!out.is_empty())
            .then_some(' ')
            .into_iter()
            .chain(word.chars())
        {
            if chars == MAX_MESSAGE_CHARS {
                out.push('…');
                return out;
            }
            out.push(c);
            chars += 1;
        }
    }
    out
}

/// The vendor's name of a request field, as our API spells it: `AccountId` and
/// `$.accountId` are `accountId`. Anything that is not a plain field path names nothing.
fn field_name(raw: &str) -> Option<String> {
    let name = raw.trim().trim_start_matches('$').trim_start_matches('.');
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_FIELD_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'));
    if !ok {
        return None;
    }
    let mut chars = name.chars();
    let first = chars.next()?.to_ascii_lowercase();
    Some(std::iter::once(first).chain(chars).collect())
}
