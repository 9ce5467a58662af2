//! Tolerant readers for vendor values (docs/UPSTREAM.md, "Reading vendor data"): `null`
//! where a value is optional or has a default, numbers sent as quoted strings, and maps or
//! objects that are `null`. Each reader visits the value once, without an intermediate
//! `serde_json::Value`, so tolerance costs nothing on the common, well-formed answer.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// An integer that may come as a number, a numeric string (`"1001"`) or a number with a
/// zero fraction (`1001.0`); `null` is `None`.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    d.deserialize_any(IntVisitor)
}

/// A required integer, read like [`opt_i64`].
pub fn i64_required<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    opt_i64(d)?.ok_or_else(|| de::Error::invalid_type(de::Unexpected::Unit, &"an integer"))
}

/// A count: like [`opt_i64`] but never negative, and `null` (or absent, with
/// `#[serde(default)]`) is 0.
pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match opt_i64(d)? {
        None => Ok(0),
        Some(n) => u64::try_from(n)
            .map_err(|_| de::Error::invalid_value(de::Unexpected::Signed(n), &"a count")),
    }
}

/// An optional count.
pub fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match opt_i64(d)? {
        None => Ok(None),
        Some(n) => u64::try_from(n)
            .map(Some)
            .map_err(|_| de::Error::invalid_value(de::Unexpected::Signed(n), &"a count")),
    }
}

/// A fraction or other real number, also from a numeric string; `null` is `None`.
pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    d.deserialize_any(FloatVisitor)
}

/// A boolean, also from `"true"`/`"false"`; `null` is `None`.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    d.deserialize_any(BoolVisitor)
}

/// Free text; a number or boolean is taken as its text (ids the vendor sends either way),
/// `null` is `None`.
pub fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(TextVisitor)
}

/// A date as the vendor's text (passed through, .NET's 7 fractional digits and offsets
/// included), read like [`opt_text`]; .NET's "no date", `DateTime.MinValue`
/// (`0001-01-01T00:00:00`, with or without fraction and offset), is `None`.
pub fn opt_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(opt_text(d)?.filter(|text| !is_no_date(text)))
}

/// Whether `text` is .NET's `default(DateTime)` / `DateTimeOffset.MinValue`.
fn is_no_date(text: &str) -> bool {
    let Some(rest) = text.trim().strip_prefix("0001-01-01") else {
        return false;
    };
    let time = rest.trim_start_matches(['T', ' ']);
    let time = time
        .strip_suffix('Z')
        .or_else(|| time.strip_suffix("+00:00"))
        .unwrap_or(time);
    time.is_empty()
        || time.strip_prefix("00:00:00").is_some_and(|f| {
            f.is_empty()
                || f.strip_prefix('.')
                    .is_some_and(|z| z.bytes().all(|b| b == b'0'))
        })
}

/// A map that may be `null`; entries whose value is `null` are left out.
pub fn map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    d.deserialize_any(MapVisitor(PhantomData))
}

/// An object that may be `null` or absent: its `Default`.
pub fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `null` (and an `Option`'s `None`) is `$absent`; a present value is visited again.
macro_rules! null_is {
    ($absent:expr) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($absent)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($absent)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    };
}

struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer, a numeric string or null")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        i64::try_from(v)
            .map(Some)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // The bounds keep the cast exact.
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            Ok(Some(v as i64))
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let t = v.trim();
        if t.is_empty() {
            return Ok(None);
        }
        if let Ok(n) = t.parse::<i64>() {
            return Ok(Some(n));
        }
        match t.parse::<f64>() {
            Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }

    null_is!(None);
}

struct FloatVisitor;

impl<'de> Visitor<'de> for FloatVisitor {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, a numeric string or null")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let t = v.trim();
        if t.is_empty() {
            return Ok(None);
        }
        t.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }

    null_is!(None);
}

struct BoolVisitor;

impl<'de> Visitor<'de> for BoolVisitor {
    type Value = Option<bool>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a boolean or null")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        match v.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            "" => Ok(None),
            _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }

    null_is!(None);
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, a number or null")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(v.to_string()))
    }

    null_is!(None);
}

struct MapVisitor<V>(PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
    type Value = BTreeMap<String, V>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object or null")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((key, value)) = access.next_entry::<String, Option<V>>()? {
            if let Some(value) = value {
                out.insert(key, value);
            }
        }
        Ok(out)
    }

    null_is!(BTreeMap::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Probe {
        #[serde(default, deserialize_with = "opt_i64")]
        id: Option<i64>,
        #[serde(default, deserialize_with = "count")]
        n: u64,
        #[serde(default, deserialize_with = "opt_f64")]
        rate: Option<f64>,
        #[serde(default, deserialize_with = "opt_bool")]
        flag: Option<bool>,
        #[serde(default, deserialize_with = "opt_text")]
        text: Option<String>,
        #[serde(default, deserialize_with = "map")]
        rates: BTreeMap<String, f64>,
    }

    #[test]
    fn dotnet_no_date_is_absent_and_other_dates_pass_through() {
        #[derive(Deserialize)]
        struct When(#[serde(deserialize_with = "opt_date")] Option<String>);
        let read = |json: &str| serde_json::from_str::<When>(json).unwrap().0;
        for none in [
            r#""0001-01-01T00:00:00""#,
            r#""0001-01-01T00:00:00Z""#,
            r#""0001-01-01T00:00:00.0000000""#,
            r#""0001-01-01T00:00:00+00:00""#,
            r#""0001-01-01""#,
            "null",
        ] {
            assert_eq!(read(none), None, "{none}");
        }
        for kept in [
            "2025-12-15T11:36:16.4897081Z",
            "2025-12-15T12:36:16.4897081+01:00",
            "2025-12-15T11:36:16.4897081",
            "0001-01-01T00:00:01",
        ] {
            assert_eq!(read(&format!("\"{kept}\"")).as_deref(), Some(kept));
        }
    }

    fn probe(json: &str) -> Probe {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn numbers_come_as_numbers_strings_or_null() {
        assert_eq!(probe(r#"{"id": 7}"#).id, Some(7));
        assert_eq!(probe(r#"{"id": "7"}"#).id, Some(7));
        assert_eq!(probe(r#"{"id": 7.0}"#).id, Some(7));
        assert_eq!(probe(r#"{"id": null}"#).id, None);
        assert_eq!(probe(r#"{}"#).id, None);
        assert_eq!(probe(r#"{"n": null}"#).n, 0);
        assert_eq!(probe(r#"{"n": "12"}"#).n, 12);
        assert_eq!(probe(r#"{"rate": "0.5"}"#).rate, Some(0.5));
        assert_eq!(probe(r#"{"rate": 1}"#).rate, Some(1.0));
        assert!(serde_json::from_str::<Probe>(r#"{"id": "seven"}"#).is_err());
        assert!(serde_json::from_str::<Probe>(r#"{"n": -1}"#).is_err());
        assert!(serde_json::from_str::<Probe>(r#"{"id": 1.5}"#).is_err());
    }

    #[test]
    fn text_booleans_and_maps_tolerate_null() {
        assert_eq!(probe(r#"{"text": 42}"#).text.as_deref(), Some("42"));
        assert_eq!(probe(r#"{"text": null}"#).text, None);
        assert_eq!(probe(r#"{"flag": "true"}"#).flag, Some(true));
        assert_eq!(probe(r#"{"flag": null}"#).flag, None);
        assert!(probe(r#"{"rates": null}"#).rates.is_empty());
        let rates = probe(r#"{"rates": {"EMAIL": 0.5, "PHONE": null}}"#).rates;
        assert_eq!(rates.len(), 1);
        assert_eq!(rates["EMAIL"], 0.5);
    }
}
