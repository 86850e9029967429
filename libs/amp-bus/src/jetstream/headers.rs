//! [`BusMessage`] headers to and from NATS headers.
//!
//! Each bus header is carried as a native NATS header (so W3C trace context and the like are
//! readable by any NATS tool). NATS keeps headers in a map, which loses the order between
//! different names, so when a message has more than one distinct name the order travels in
//! one extra header, [`ORDER_HEADER`], and is restored on receipt. Names starting with
//! `Nats-` are NATS's own (e.g. `Nats-Msg-Id`): callers may not set them and never see them.

use std::collections::{BTreeMap, VecDeque};

use async_nats::HeaderMap;

use crate::{Error, Result};

/// Carries the order of header names (space-separated, one per header).
pub(crate) const ORDER_HEADER: &str = "Amp-Header-Order";

fn reserved(name: &str) -> bool {
    name.len() >= 5 && name[..5].eq_ignore_ascii_case("nats-")
        || name.eq_ignore_ascii_case(ORDER_HEADER)
        || name.eq_ignore_ascii_case(super::reply::REPLY_HEADER)
}

/// NATS headers for `headers`. Fails with [`Error::Backend`] for a reserved name, or a name
/// or value NATS cannot carry (`:` or whitespace in names, line breaks in values).
pub(crate) fn to_nats(headers: &[(String, String)]) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    let mut distinct = Vec::<&str>::new();
    for (name, value) in headers {
        if reserved(name) {
            return Err(Error::Backend(format!("header {name:?} is reserved")));
        }
        let header_name: async_nats::HeaderName = name
            .parse()
            .map_err(|_| Error::Backend(format!("header name {name:?} cannot be carried")))?;
        let header_value: async_nats::HeaderValue = value
            .parse()
            .map_err(|_| Error::Backend(format!("value of header {name:?} cannot be carried")))?;
        map.append(header_name, header_value);
        if !distinct.contains(&name.as_str()) {
            distinct.push(name);
        }
    }
    if distinct.len() > 1 {
        let order: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
        map.insert(ORDER_HEADER, order.join(" ").as_str());
    }
    Ok(map)
}

/// The bus headers carried by `map`, in their original order (or by name, for messages not
/// published through this bus), without NATS's own headers.
pub(crate) fn from_nats(map: Option<&HeaderMap>) -> Vec<(String, String)> {
    let Some(map) = map else {
        return Vec::new();
    };
    let mut values: BTreeMap<String, VecDeque<String>> = BTreeMap::new();
    for (name, vals) in map.iter() {
        let name = name.to_string();
        if reserved(&name) {
            continue;
        }
        values.insert(name, vals.iter().map(|v| v.as_str().to_owned()).collect());
    }
    let mut out = Vec::new();
    if let Some(order) = map.get(ORDER_HEADER) {
        for name in order.as_str().split(' ') {
            if let Some(value) = values.get_mut(name).and_then(VecDeque::pop_front) {
                out.push((name.to_owned(), value));
            }
        }
    }
    for (name, rest) in values {
        out.extend(rest.into_iter().map(|value| (name.clone(), value)));
    }
    out
}

/// The `Nats-Msg-Id` of a received message, if any.
pub(crate) fn message_id(map: Option<&HeaderMap>) -> Option<String> {
    map?.get(async_nats::header::NATS_MESSAGE_ID)
        .map(|v| v.as_str().to_owned())
}

/// A copy of `map` without NATS's own headers, to republish (dead letters).
pub(crate) fn without_nats(map: Option<&HeaderMap>) -> HeaderMap {
    let mut out = HeaderMap::new();
    let Some(map) = map else {
        return out;
    };
    for (name, vals) in map.iter() {
        let text = name.to_string();
        if text.len() >= 5 && text[..5].eq_ignore_ascii_case("nats-") {
            continue;
        }
        for value in vals {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn round_trips_order_and_repeats() {
        let headers = h(&[("B", "1"), ("A", "2"), ("B", "3"), ("traceparent", "00-x")]);
        let map = to_nats(&headers).expect("carried");
        assert_eq!(from_nats(Some(&map)), headers);
        let single = h(&[("X", "1"), ("X", "2")]);
        let map = to_nats(&single).expect("carried");
        assert!(map.get(ORDER_HEADER).is_none());
        assert_eq!(from_nats(Some(&map)), single);
        assert!(from_nats(None).is_empty());
    }

    #[test]
    fn refuses_reserved_and_uncarriable_headers() {
        for bad in [
            h(&[("Nats-Msg-Id", "x")]),
            h(&[("amp-header-order", "x")]),
            h(&[("a b", "x")]),
            h(&[("a", "x\r\ny")]),
        ] {
            assert!(to_nats(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hides_nats_headers() {
        let mut map = to_nats(&h(&[("A", "1")])).expect("carried");
        map.insert(async_nats::header::NATS_MESSAGE_ID, "id-1");
        assert_eq!(from_nats(Some(&map)), h(&[("A", "1")]));
        assert_eq!(message_id(Some(&map)).as_deref(), Some("id-1"));
        assert!(without_nats(Some(&map)).get("Nats-Msg-Id").is_none());
    }
}
