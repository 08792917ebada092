//! Log lines as text: what the log path keeps of each line an agent sent.
//!
//! A line is parsed once on arrival into [`Canon`], a borrowed tree whose
//! strings point into the request body, and written out in its canonical
//! form (object members sorted by name, serde_json's formatting): those
//! bytes are both what the line id hashes and what is stored, so nothing
//! builds a `serde_json::Value` per line or serializes a line twice
//! (docs/benchmarks/performance.md). [`LogLine`] holds the canonical text;
//! the few readers that need the values (rules, destinations, the API)
//! parse it on first use.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Number, Value};

/// One stored log line: its canonical JSON text.
pub struct LogLine {
    raw: Box<RawValue>,
    parsed: OnceLock<Value>,
}

impl LogLine {
    /// From JSON text (validated).
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        // Validated here (a scan, no tree): stored text is always JSON.
        Ok(Self {
            raw: RawValue::from_string(text)?,
            parsed: OnceLock::new(),
        })
    }

    /// From JSON text serde_json wrote (`serde_json::value::to_raw_value`):
    /// valid by construction, so not scanned again.
    pub fn from_raw(raw: Box<RawValue>) -> Self {
        Self {
            raw,
            parsed: OnceLock::new(),
        }
    }

    /// The line as JSON text.
    pub fn json(&self) -> &str {
        self.raw.get()
    }

    /// The line's values, parsed on first use.
    pub fn value(&self) -> &Value {
        self.parsed
            .get_or_init(|| serde_json::from_str(self.raw.get()).unwrap_or(Value::Null))
    }

    /// `value()` by value.
    pub fn into_value(self) -> Value {
        match self.parsed.into_inner() {
            Some(v) => v,
            None => serde_json::from_str(self.raw.get()).unwrap_or(Value::Null),
        }
    }
}

impl From<Value> for LogLine {
    fn from(v: Value) -> Self {
        // A `Value` always serializes; its members are in name order, so
        // this is its canonical text.
        let raw = serde_json::value::to_raw_value(&v).unwrap_or_default();
        Self {
            raw,
            parsed: OnceLock::from(v),
        }
    }
}

impl Clone for LogLine {
    fn clone(&self) -> Self {
        Self {
            raw: self.raw.clone(),
            parsed: self.parsed.clone(),
        }
    }
}

impl PartialEq for LogLine {
    fn eq(&self, other: &Self) -> bool {
        self.raw.get() == other.raw.get()
    }
}

impl fmt::Debug for LogLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw.get())
    }
}

impl Serialize for LogLine {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for LogLine {
    /// The stored text is copied as it is (serde_json validates it); from a
    /// `Value` (the command line decodes API answers so) serde_json writes
    /// it out, members in name order.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self {
            raw: Box::<RawValue>::deserialize(d)?,
            parsed: OnceLock::new(),
        })
    }
}

impl schemars::JsonSchema for LogLine {
    fn schema_name() -> Cow<'static, str> {
        "LogLine".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "object",
            "description": "The line as the agent sent it (members in name order)."
        })
    }
}

/// A JSON value borrowing its strings from the text it was parsed from
/// (escaped strings are unescaped into owned ones); objects keep their
/// members sorted by name, the last of duplicate names winning, as
/// `serde_json::Map` does.
#[derive(Debug, Clone, PartialEq)]
pub enum Canon<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Canon<'a>>),
    Object(Vec<(Cow<'a, str>, Canon<'a>)>),
}

impl<'a> Canon<'a> {
    /// Parses `text`.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The canonical JSON text (what `serde_json::Value` would print).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "null".into())
    }

    /// Member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Canon<'a>> {
        match self {
            Canon::Object(m) => m
                .binary_search_by(|(k, _)| k.as_ref().cmp(key))
                .ok()
                .map(|i| &m[i].1),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Canon::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Canon<'a>]> {
        match self {
            Canon::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Canon::Object(_))
    }

    /// An integer given as a number or a decimal string.
    pub fn as_i64_lenient(&self) -> Option<i64> {
        match self {
            Canon::Number(n) => n.as_i64(),
            Canon::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

impl Serialize for Canon<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Canon::Null => s.serialize_unit(),
            Canon::Bool(b) => s.serialize_bool(*b),
            Canon::Number(n) => n.serialize(s),
            Canon::String(v) => s.serialize_str(v),
            Canon::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Canon::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k.as_ref(), v)?;
                }
                map.end()
            }
        }
    }
}

/// A JSON string, borrowed from the input when it has no escapes.
pub struct Str<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Canon<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CanonVisitor(std::marker::PhantomData))
    }
}

struct CanonVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for CanonVisitor<'a> {
    type Value = Canon<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Canon::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Canon::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Canon::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Canon::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Number::from_f64(v).map_or(Canon::Null, Canon::Number))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Canon::String(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Canon::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Canon::String(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Canon::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out: Vec<(Cow<'a, str>, Canon<'a>)> = Vec::new();
        while let Some(Str(k)) = map.next_key_seed(StrSeed(std::marker::PhantomData))? {
            out.push((k, map.next_value()?));
        }
        // Sorted by name; of equal names the last one given stays (a stable
        // sort keeps their order, then each run keeps its last member).
        out.sort_by(|a, b| a.0.cmp(&b.0));
        let mut dedup: Vec<(Cow<'a, str>, Canon<'a>)> = Vec::with_capacity(out.len());
        for (k, v) in out {
            match dedup.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => dedup.push((k, v)),
            }
        }
        Ok(Canon::Object(dedup))
    }
}

struct StrSeed<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> DeserializeSeed<'de> for StrSeed<'a> {
    type Value = Str<'a>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Str::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The canonical text is byte for byte what `serde_json::Value`
    /// prints, so line ids are what they were before lines were kept as
    /// text.
    #[test]
    fn canonical_text_is_what_value_prints() {
        for text in [
            r#"{"name":"q","unixTime":5,"columns":{"b":"2","a":"1"},"action":"added"}"#,
            r#"{"z":[1,2.5,-3,1e3,12345678901234567890],"a":{"y":null,"x":true},"e":"\u00e9\n\"\\\/\t\u0001"}"#,
            r#"{"dup":1,"a":0,"dup":2}"#,
            r#"{"snapshot":[{"k":"v"},{"j":"w","i":"u"}],"decorations":{"hostname":"h"},"unixTime":"1717496431"}"#,
            r#"{ "spaced" : [ ] , "empty" : { } , "f" : 0.1 }"#,
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            let canon = Canon::parse(text).unwrap();
            assert_eq!(
                canon.to_json(),
                serde_json::to_string(&value).unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn members_are_found_and_strings_borrowed() {
        let text = r#"{"name":"pack_q","unixTime":"17","x":{"a":1},"esc":"a\"b"}"#;
        let c = Canon::parse(text).unwrap();
        assert_eq!(c.get("name").and_then(Canon::as_str), Some("pack_q"));
        assert!(matches!(
            c.get("name"),
            Some(Canon::String(Cow::Borrowed(_)))
        ));
        assert!(matches!(c.get("esc"), Some(Canon::String(Cow::Owned(s))) if s == "a\"b"));
        assert_eq!(c.get("unixTime").and_then(Canon::as_i64_lenient), Some(17));
        assert!(c.get("x").is_some_and(Canon::is_object));
        assert!(c.get("missing").is_none());
    }

    #[test]
    fn log_lines_round_trip_as_text() {
        let line = LogLine::from(serde_json::json!({"b": 1, "a": {"c": "d"}}));
        assert_eq!(line.json(), r#"{"a":{"c":"d"},"b":1}"#);
        let stored = serde_json::to_string(&line).unwrap();
        let back: LogLine = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, line);
        assert_eq!(back.value()["a"]["c"], "d");
        assert_eq!(
            back.into_value(),
            serde_json::json!({"a": {"c": "d"}, "b": 1})
        );
        assert!(LogLine::from_json("{not json".into()).is_err());
        // From a `Value` as well (the command line decodes answers so).
        let from_value: LogLine =
            serde_json::from_value(serde_json::json!({"b": [1, "x"], "a": null})).unwrap();
        assert_eq!(from_value.json(), r#"{"a":null,"b":[1,"x"]}"#);
    }
}
