//! Anonymous sessions: every visitor gets a random session id in a signed cookie on its first
//! visit, and every request below `/api` carries a [`Visitor`] extension (session, client IP,
//! whether it holds a bearer token) for the proxy and the rate limiter.
//!
//! The cookie is `lab_session=<id>.<HMAC-SHA256(key, id), base64url>`: nothing is stored server
//! side, so any replica holding the same key accepts any other's cookies. A cookie that does not
//! verify (tampered, or signed with another key) is ignored and a new session issued. A bearer
//! token (`Authorization: Bearer …`) is not read here: the proxy relays it untouched and the
//! services verify it.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use arrayvec::ArrayString;
use axum::extract::{ConnectInfo, Request};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::HeaderValue;
use lab_config::SecretString;
use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::client_ip::{RequestHeaders, TrustedProxies};

mod verified;

/// The cookie's name.
pub const COOKIE: &str = "lab_session";

/// Shortest key accepted: HMAC-SHA256's own output size, so the key is never the weak part.
const MIN_KEY_LEN: usize = 32;

/// How sessions are signed and their cookie sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionSettings {
    /// The HMAC key (at least 32 bytes); every replica needs the same one to accept the others'
    /// cookies. Unset: a random key per process, said in a log line at start-up.
    pub key: Option<SecretString>,
    /// Sends the cookie `Secure`; set when the BFF is reached over TLS.
    pub secure_cookie: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the session key (LAB_BFF__EDGE__SESSION__KEY) must be at least {MIN_KEY_LEN} bytes")]
    ShortKey,
}

/// A session id: 128 random bits, as 32 lowercase hex digits, held inline (a returning visitor's
/// request reads one without allocating).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(ArrayString<32>);

impl SessionId {
    /// A new session id (also the idempotency demo's one-run buyer).
    pub(crate) fn random() -> Self {
        let bytes: [u8; 16] = rand::rng().random();
        let mut digits = [0u8; 32];
        hex::encode_to_slice(bytes, &mut digits)
            .unwrap_or_else(|_| unreachable!("16 bytes are 32 hex digits"));
        Self::parse(&digits).unwrap_or_else(|| unreachable!("hex digits make a session id"))
    }

    /// Accepts exactly what [`SessionId::random`] makes, so nothing else reaches a Redis key.
    fn parse(text: &[u8]) -> Option<Self> {
        if text.len() == 32 && text.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            let text = std::str::from_utf8(text).ok()?;
            ArrayString::from(text).ok().map(Self)
        } else {
            None
        }
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Signs and verifies session cookies: the HMAC with its key already absorbed, cloned per use
/// (absorbing the key is two of the four SHA-256 blocks a cookie would otherwise cost), and the
/// cookies it has already verified ([`verified`]), which a returning visitor's requests present
/// again and again.
#[derive(Clone)]
pub struct SessionKey {
    mac: Arc<Hmac<Sha256>>,
    verified: Arc<verified::Verified>,
}

impl SessionKey {
    /// The configured key, or a random one (logged) when none is set.
    pub fn from_settings(settings: &SessionSettings) -> Result<Self, SessionError> {
        match &settings.key {
            Some(key) if key.expose().len() < MIN_KEY_LEN => Err(SessionError::ShortKey),
            Some(key) => Ok(Self::new(key.expose().as_bytes())),
            None => {
                tracing::warn!(
                    "no session key set (LAB_BFF__EDGE__SESSION__KEY): using a random one, so other \
                     replicas and this process after a restart will not accept its cookies"
                );
                let bytes: [u8; 32] = rand::rng().random();
                Ok(Self::new(&bytes))
            }
        }
    }

    fn new(key: &[u8]) -> Self {
        // HMAC takes a key of any length; `new_from_slice` only fails for fixed-size-key MACs.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        Self {
            mac: Arc::new(mac),
            verified: Arc::default(),
        }
    }

    fn mac(&self, id: &SessionId) -> Hmac<Sha256> {
        let mut mac = (*self.mac).clone();
        mac.update(id.0.as_bytes());
        mac
    }

    /// The cookie value for `id`.
    pub fn sign(&self, id: &SessionId) -> String {
        let tag = self.mac(id).finalize().into_bytes();
        format!("{id}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The session a cookie value names, when its signature is ours (compared in constant time).
    pub fn verify(&self, value: &(impl AsRef<[u8]> + ?Sized)) -> Option<SessionId> {
        let value = value.as_ref();
        if let Some(id) = self.verified.holds(value) {
            return Some(id);
        }
        // The id is 32 bytes before the dot: split there rather than search for it.
        let (id, tag) = (value.get(..32)?, value.get(32..)?.strip_prefix(b".")?);
        let id = SessionId::parse(id)?;
        // A SHA-256 tag is 32 bytes, 43 characters of unpadded base64: decoded on the stack,
        // anything longer refused before decoding (33 bytes: base64's estimate for 43 chars).
        let mut bytes = [0u8; 33];
        if tag.len() > 43 {
            return None;
        }
        let length = URL_SAFE_NO_PAD.decode_slice(tag, &mut bytes).ok()?;
        self.mac(&id).verify_slice(&bytes[..length]).ok()?;
        self.verified.keep(value, &id);
        Some(id)
    }
}

/// A [`Visitor::scope`]: `s:` and a session id, or `ip:` and an address.
pub type Scope = ArrayString<48>;

/// The scope of a request that reached a handler without a [`Visitor`] (the edge puts one on
/// every request below `/api`, so only a handler mounted elsewhere sees this).
pub fn unknown_scope() -> Scope {
    let mut scope = Scope::new();
    scope.push_str("unknown");
    scope
}

/// Who made a request, as the edge sees it; an extension on every request below `/api`.
#[derive(Debug, Clone)]
pub struct Visitor {
    /// The visitor's session; a new one when `fresh`.
    pub session: SessionId,
    /// Whether the session was issued by this very request (no valid cookie came with it).
    pub fresh: bool,
    /// The client's address (see [`TrustedProxies::client_ip`]).
    pub client_ip: IpAddr,
    /// Whether the request carries `Authorization: Bearer …`, which the proxy relays untouched.
    pub bearer: bool,
}

impl Visitor {
    /// Whose bucket and replay space this request uses: its session, or its client IP when it
    /// came without one — a client that drops cookies would otherwise get a new bucket each time.
    /// Held inline: this runs on every limited request.
    pub fn scope(&self) -> Scope {
        let mut scope = Scope::new();
        if self.fresh {
            // An address is at most 45 characters (an IPv4-mapped IPv6 one): it fits.
            let _ = write!(scope, "ip:{}", self.client_ip);
        } else {
            scope.push_str("s:");
            scope.push_str(self.session.as_str());
        }
        scope
    }
}

/// What the session middleware needs.
#[derive(Clone)]
pub struct SessionState {
    /// Signs new cookies and verifies presented ones.
    pub key: SessionKey,
    /// Whose `X-Forwarded-For` names the client.
    pub trusted: TrustedProxies,
    /// The `Set-Cookie` attributes after the value.
    attributes: Arc<str>,
    /// Counts the sessions issued.
    issued: Counter,
}

impl SessionState {
    pub fn new(key: SessionKey, trusted: TrustedProxies, secure: bool, issued: Counter) -> Self {
        let attributes = if secure {
            "; Path=/; HttpOnly; SameSite=Lax; Secure"
        } else {
            "; Path=/; HttpOnly; SameSite=Lax"
        };
        Self {
            key,
            trusted,
            attributes: attributes.into(),
            issued,
        }
    }

    /// Who sent `req`, and the `Set-Cookie` for the answer when its session is new (the edge
    /// service puts the visitor on the request and the cookie on the answer).
    pub fn resolve(&self, req: &Request) -> (Visitor, Option<HeaderValue>) {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        self.resolve_head(peer, req.headers())
    }

    /// [`SessionState::resolve`] from the socket peer and the request's headers.
    pub fn resolve_head(
        &self,
        peer: IpAddr,
        headers: &(impl RequestHeaders + ?Sized),
    ) -> (Visitor, Option<HeaderValue>) {
        let presented = cookie(headers, COOKIE).and_then(|v| self.key.verify(v));
        let visitor = Visitor {
            fresh: presented.is_none(),
            session: presented.unwrap_or_else(SessionId::random),
            client_ip: self.trusted.client_ip(peer, headers),
            bearer: headers
                .values("authorization")
                .next()
                .and_then(|v| v.get(..7))
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"bearer ")),
        };
        let set_cookie = visitor.fresh.then(|| {
            self.issued.inc();
            let signed = self.key.sign(&visitor.session);
            let mut value =
                String::with_capacity(COOKIE.len() + 1 + signed.len() + self.attributes.len());
            value.push_str(COOKIE);
            value.push('=');
            value.push_str(&signed);
            value.push_str(&self.attributes);
            value
        });
        let set_cookie = set_cookie.and_then(|v| HeaderValue::try_from(v).ok());
        (visitor, set_cookie)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (the first, when it is sent
/// twice), without the quotes a value may have (RFC 6265 §4.2.1). Bytes, not `str` methods: a
/// `Cookie` header is split on every request, and only the value found need be text.
fn cookie<'a>(headers: &'a (impl RequestHeaders + ?Sized), name: &str) -> Option<&'a [u8]> {
    let value = headers
        .values("cookie")
        .flat_map(|v| v.split(|&b| b == b';'))
        .find_map(|pair| {
            pair.trim_ascii()
                .strip_prefix(name.as_bytes())?
                .strip_prefix(b"=")
        })?;
    let value = value.strip_prefix(b"\"").unwrap_or(value);
    Some(value.strip_suffix(b"\"").unwrap_or(value))
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, header};

    use super::*;

    fn key(text: &str) -> SessionKey {
        SessionKey::from_settings(&SessionSettings {
            key: Some(SecretString::new(text)),
            secure_cookie: false,
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_signed_cookie_verifies_with_the_same_key_on_another_instance() {
        let id = SessionId::random();
        let value = key("k".repeat(32).as_str()).sign(&id);

        assert_eq!(key("k".repeat(32).as_str()).verify(&value), Some(id));
    }

    #[test]
    fn a_cookie_signed_with_another_key_or_tampered_does_not_verify() {
        let ours = key(&"a".repeat(32));
        let id = SessionId::random();
        let value = ours.sign(&id);
        let (_, tag) = value.split_once('.').unwrap_or_default();
        let other_id = SessionId::random();

        assert_eq!(key(&"b".repeat(32)).verify(&value), None);
        assert_eq!(ours.verify(&format!("{other_id}.{tag}")), None);
        assert_eq!(ours.verify(&format!("{id}.{}", &tag[1..])), None);
        assert_eq!(ours.verify(id.as_str()), None);
        assert_eq!(ours.verify(&format!("{value}A")), None, "a tag too long");
        assert_eq!(ours.verify(&format!("{value}=")), None, "a padded tag");
        assert_eq!(
            ours.verify(&format!("{}.{tag}", id.as_str().to_uppercase())),
            None
        );
    }

    #[test]
    fn a_cookie_verified_once_is_accepted_again_and_its_tampered_twins_still_are_not() {
        let ours = key(&"a".repeat(32));
        let id = SessionId::random();
        let value = ours.sign(&id);
        assert_eq!(ours.verify(&value), Some(id.clone()));

        let again = ours.verify(&value);
        let mut flipped = value.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap_or_default();
        let other_key = key(&"b".repeat(32));

        assert_eq!(again, Some(id.clone()), "kept: no HMAC needed");
        assert_eq!(ours.verify(&flipped), None, "same id, another tag");
        assert_eq!(ours.verify(&value), Some(id), "the real one is still kept");
        assert_eq!(other_key.verify(&value), None, "kept per key");
    }

    #[test]
    fn a_key_shorter_than_32_bytes_is_refused_and_none_means_a_random_one() {
        let short = SessionSettings {
            key: Some(SecretString::new("too short")),
            secure_cookie: false,
        };
        assert!(matches!(
            SessionKey::from_settings(&short),
            Err(SessionError::ShortKey)
        ));
        let a = SessionKey::from_settings(&SessionSettings::default());
        let b = SessionKey::from_settings(&SessionSettings::default());
        let (Ok(a), Ok(b)) = (a, b) else {
            panic!("a random key must build")
        };
        let id = SessionId::random();
        assert_eq!(a.verify(&a.sign(&id)), Some(id.clone()));
        assert_eq!(b.verify(&a.sign(&id)), None);
    }

    #[test]
    fn the_cookie_is_found_among_others_in_any_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("lab_session=xyz; c=3"),
        );

        assert_eq!(cookie(&headers, COOKIE), Some(&b"xyz"[..]));
        assert_eq!(cookie(&headers, "d"), None);
    }
}
