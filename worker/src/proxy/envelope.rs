//! The API3 request envelope, parsed without building the payload.
//!
//! `{"method_name": "...", "params": [AUTH, PAYLOAD]}`: the method and the auth object are
//! parsed; the payload stays the raw JSON text it came as (validated, not built). A body of
//! a million `0`s would otherwise become a million `serde_json::Value`s, tens of times its own
//! size; only the reads the cache may answer and the writes it writes through build their
//! payload, and only when small enough (see [`MAX_READ_PAYLOAD`]).

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Largest read payload (bytes of JSON text) the proxy parses to plan: the parsed value and
/// the plan's bound values cost tens of times the text, and a legitimate read (filters,
/// fields) is far smaller; a larger read goes to the site unparsed (reason `payload`).
pub const MAX_READ_PAYLOAD: usize = 1 << 20;

/// Largest auth object (bytes of JSON text) the proxy reads: a real one holds a few short
/// strings; a larger one is not a credential the cache will vouch for (it passes through).
const MAX_AUTH: usize = 16 << 10;

/// The API3 methods the proxy treats differently; every other method passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Read,
    Info,
    Write(WriteMethod),
    Other,
}

/// Methods that change the site; their results are written through to the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMethod {
    Create,
    Update,
    Delete,
    Revive,
    Batch,
}

impl Method {
    pub fn from_name(name: &str) -> Method {
        match name {
            "read" => Method::Read,
            "info" => Method::Info,
            "create" => Method::Write(WriteMethod::Create),
            "update" => Method::Write(WriteMethod::Update),
            "delete" => Method::Write(WriteMethod::Delete),
            "revive" => Method::Write(WriteMethod::Revive),
            "batch" => Method::Write(WriteMethod::Batch),
            _ => Method::Other,
        }
    }
}

/// Methods other than `read` that only read (the site's answer depends on the request and
/// the data, and sending it changes nothing), so identical ones in flight may share one
/// answer. Anything not listed is never shared.
const READ_ONLY: &[&str] = &[
    "summarize",
    "schema_read",
    "schema_entity_read",
    "schema_field_read",
    "text_search",
    "note_thread_contents",
    "activity_stream_read",
    "entity_types",
    "work_schedule_read",
    "preferences_read",
];

/// Whether `method` only reads (see [`READ_ONLY`]).
pub fn is_read_only(method: &str) -> bool {
    READ_ONLY.contains(&method)
}

/// What the auth object is, as far as the proxy is concerned.
#[derive(Clone, Debug, PartialEq)]
pub enum AuthObject {
    /// No auth object, `null` or `{}`.
    Absent,
    /// A JSON object small enough to read.
    Given(Map<String, Value>),
    /// Too large to read; never a principal.
    Oversized,
}

/// A parsed envelope; `payload` borrows the request body.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub method_name: String,
    pub method: Method,
    pub auth: AuthObject,
    pub payload: Option<&'a RawValue>,
}

/// Why a body is not an API3 envelope (the site answers such bodies with its own error).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(String);

#[derive(Deserialize)]
struct Top<'a> {
    method_name: String,
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
}

/// `params`: at most two elements, each kept raw.
struct Params<'a>(Option<&'a RawValue>, Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Params<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Params<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of at most two elements")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq.next_element::<&'de RawValue>()?;
                let second = match first {
                    Some(_) => seq.next_element::<&'de RawValue>()?,
                    None => None,
                };
                if second.is_some() && seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("params has more than two elements"));
                }
                Ok(Params(first, second))
            }
        }
        d.deserialize_seq(V)
    }
}

impl<'a> Envelope<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Envelope<'a>, Malformed> {
        let top: Top<'a> = serde_json::from_slice(body)
            .map_err(|e| Malformed(format!("not an API3 request: {e}")))?;
        let Params(auth, payload) = top.params.unwrap_or(Params(None, None));
        let auth = match auth.map(RawValue::get) {
            None | Some("null") => AuthObject::Absent,
            Some(text) if text.len() > MAX_AUTH => AuthObject::Oversized,
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(m)) if m.is_empty() => AuthObject::Absent,
                Ok(Value::Object(m)) => AuthObject::Given(m),
                _ => return Err(Malformed("the first param must be the auth object".into())),
            },
        };
        Ok(Envelope {
            method: Method::from_name(&top.method_name),
            method_name: top.method_name,
            auth,
            payload: payload.filter(|p| p.get() != "null"),
        })
    }

    /// The auth object, when there is a readable one.
    pub fn auth_map(&self) -> Option<&Map<String, Value>> {
        match &self.auth {
            AuthObject::Given(m) => Some(m),
            _ => None,
        }
    }

    /// The key of the request's credentials, when they are a principal (see
    /// [`super::auth::principal`]).
    pub fn principal(&self) -> Option<super::auth::CredentialKey> {
        self.auth_map().and_then(super::auth::principal)
    }

    /// The payload's JSON text (`null` when absent).
    pub fn payload_text(&self) -> &str {
        self.payload.map_or("null", RawValue::get)
    }

    /// The payload built as a value (`Null` when absent, `None` when it does not parse:
    /// nesting past serde_json's recursion limit).
    pub fn payload_value(&self) -> Option<Value> {
        match self.payload {
            None => Some(Value::Null),
            Some(raw) => serde_json::from_str(raw.get()).ok(),
        }
    }

    /// The whole request as the core type, building the payload (writes, after the site
    /// accepted them).
    pub fn to_request(&self) -> Option<sgcache::api3::Request> {
        Some(sgcache::api3::Request {
            method_name: self.method_name.clone(),
            auth: self.auth_map().cloned().unwrap_or_default(),
            payload: self.payload_value()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_envelope_and_keeps_the_payload_raw() {
        let body = br#"{"method_name":"read","params":[{"script_name":"a","script_key":"k"},{"type": "Shot"}]}"#;
        let e = Envelope::parse(body).unwrap();
        assert_eq!(e.method, Method::Read);
        assert_eq!(e.auth_map().unwrap()["script_name"], "a");
        assert_eq!(e.payload_text(), r#"{"type": "Shot"}"#);
        let e = Envelope::parse(br#"{"method_name":"info","params":[]}"#).unwrap();
        assert_eq!(
            (e.method, &e.auth, e.payload_text()),
            (Method::Info, &AuthObject::Absent, "null")
        );
        let e = Envelope::parse(br#"{"method_name":"batch","params":[null, [1], "x"]}"#);
        assert!(e.is_err(), "three params");
        for bad in [
            &b"[1]"[..],
            b"{\"method_name\": 3}",
            b"not json",
            b"{\"method_name\":\"read\",\"params\":[1]}",
            b"\xff\xfe",
        ] {
            assert!(
                Envelope::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(Method::from_name("summarize"), Method::Other);
    }

    #[test]
    fn large_payloads_are_validated_not_built_and_auth_is_bounded() {
        let zeros = vec!["0"; 200_000].join(",");
        let body =
            format!(r#"{{"method_name":"read","params":[{{"script_name":"a"}},[{zeros}]]}}"#);
        let e = Envelope::parse(body.as_bytes()).unwrap();
        assert_eq!(e.payload_text().len(), zeros.len() + 2);
        let big = "x".repeat(MAX_AUTH);
        let body = format!(r#"{{"method_name":"read","params":[{{"script_name":"{big}"}}]}}"#);
        assert_eq!(
            Envelope::parse(body.as_bytes()).unwrap().auth,
            AuthObject::Oversized
        );
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let body = format!(r#"{{"method_name":"read","params":[{{}},{deep}]}}"#);
        // Deep nesting is refused by serde_json's recursion limit whichever part holds it.
        if let Ok(e) = Envelope::parse(body.as_bytes()) {
            assert_eq!(e.payload_value(), None);
        }
    }

    use proptest::prelude::*;

    /// The auth keys the client sends, so generated objects often look like credentials.
    const AUTH_KEYS: [&str; 7] = [
        "script_name",
        "script_key",
        "session_token",
        "sudo_as_login",
        "user_login",
        "user_password",
        "reject_if_expired",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::from),
            prop::sample::select(AUTH_KEYS.to_vec()).prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop::sample::select([AUTH_KEYS.as_slice(), &["x"]].concat()),
                        inner
                    ),
                    0..5
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_envelope(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(e) = Envelope::parse(&bytes) {
                let _ = (e.principal(), e.payload_value(), e.to_request());
            }
        }

        #[test]
        fn arbitrary_envelopes_parse_as_the_core_parser_does(
            method in prop::sample::select(vec!["read", "info", "create", "batch", "summarize", ""]),
            auth in json_value(),
            payload in json_value(),
        ) {
            let body = serde_json::json!({"method_name": method, "params": [auth, payload]}).to_string();
            let core = sgcache::api3::Request::parse(body.as_bytes());
            match Envelope::parse(body.as_bytes()) {
                Ok(e) => {
                    // Same method, auth and payload as the full parse (null and {} auth alike).
                    let core = core.expect("the core parser agrees");
                    let req = e.to_request().expect("a payload within serde_json's limits");
                    prop_assert_eq!(&req.method_name, &core.method_name);
                    prop_assert_eq!(&req.auth, &core.auth);
                    prop_assert_eq!(&req.payload, &core.payload);
                    let _ = e.principal();
                }
                Err(_) => prop_assert!(core.is_err()),
            }
        }
    }
}
