//! Which headers cross the proxy: hop-by-hop ones (RFC 9110 §7.6.1) stop at each hop, the
//! request id and W3C trace context travel on, and each upstream's `X-Instance-Id` comes back
//! to the caller as `X-Upstream-Instance-Id` (the BFF's own `X-Instance-Id` is set on every
//! response by the platform middleware).

use http::header::{self, HeaderMap, HeaderName};

/// The upstream hop's instance id, on the BFF's answer.
pub static X_UPSTREAM_INSTANCE_ID: HeaderName = HeaderName::from_static("x-upstream-instance-id");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1, plus the
/// `Keep-Alive` and `Proxy-Connection` that old clients still send), as text for the proxy's
/// fast path, which compares raw names…
pub(super) const HOP_BY_HOP_NAMES: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// …and as header names for the router's proxy.
pub(super) static HOP_BY_HOP: [HeaderName; 8] = {
    let n = HOP_BY_HOP_NAMES;
    [
        HeaderName::from_static(n[0]),
        HeaderName::from_static(n[1]),
        HeaderName::from_static(n[2]),
        HeaderName::from_static(n[3]),
        HeaderName::from_static(n[4]),
        HeaderName::from_static(n[5]),
        HeaderName::from_static(n[6]),
        HeaderName::from_static(n[7]),
    ]
};

/// Removes the hop-by-hop headers, those `Connection` names included. `Transfer-Encoding` is
/// left to hyper, which frames the body itself on each connection and drops the header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names present (a comparison each)
    // instead of a hashed lookup of every hop-by-hop name (callgrind, `lab bench bff`).
    let any = headers
        .keys()
        .any(|name| *name == header::TRANSFER_ENCODING || HOP_BY_HOP.contains(name));
    if !any {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Prepares a caller's headers for the upstream: hop-by-hop removed, `Host` left for the client
/// to set from the upstream's address. `X-Request-Id` (set by the platform middleware when the
/// caller sent none), `traceparent` and `tracestate` pass as they are.
pub fn to_upstream(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
}

/// Header orders and the services read as the anonymous visitor's identity; only the BFF sets it.
pub static X_LAB_CUSTOMER: HeaderName = HeaderName::from_static("x-lab-customer");

/// Replaces whatever `X-Lab-Customer` the caller sent (a caller could otherwise act as anybody)
/// with the visitor's own session, `session:<id>`; a caller with a bearer token is the token's
/// subject instead, so nothing is set for it.
pub fn set_customer(headers: &mut HeaderMap, visitor: Option<&crate::session::Visitor>) {
    let customer = visitor.filter(|v| !v.bearer).and_then(|visitor| {
        // Built by hand, not with `format!`: this runs on every proxied request.
        let session = visitor.session.as_str();
        let mut value = String::with_capacity(8 + session.len());
        value.push_str("session:");
        value.push_str(session);
        http::HeaderValue::try_from(value).ok()
    });
    match customer {
        // `insert` replaces every value the caller sent.
        Some(value) => {
            headers.insert(X_LAB_CUSTOMER.clone(), value);
        }
        None => {
            headers.remove(&X_LAB_CUSTOMER);
        }
    }
}

/// Prepares an upstream's response headers for the caller: hop-by-hop removed and its instance
/// id renamed, so the platform middleware's own `X-Instance-Id` does not hide it.
pub fn to_caller(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    if let Some(id) = headers.remove(&lab_http::X_INSTANCE_ID) {
        headers.append(X_UPSTREAM_INSTANCE_ID.clone(), id);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        headers.insert(header::HOST, HeaderValue::from_static("bff.example"));

        to_upstream(&mut headers);

        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["traceparent"]);
    }

    #[test]
    fn the_upstream_instance_id_is_renamed_for_the_caller() {
        let mut headers = HeaderMap::new();
        headers.insert(
            &lab_http::X_INSTANCE_ID,
            HeaderValue::from_static("catalog-1-abcd"),
        );

        to_caller(&mut headers);

        assert!(headers.get(&lab_http::X_INSTANCE_ID).is_none());
        assert_eq!(headers[&X_UPSTREAM_INSTANCE_ID], "catalog-1-abcd");
    }
}
