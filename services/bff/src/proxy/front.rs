//! The proxy's fast path: a bodiless `GET` or `HEAD` of a proxied route, read by lab-http's own
//! HTTP/1 server ([`lab_http::Fast`]), passes through the same edge as any request (session,
//! rate limit, request id, security headers, metrics, the live traffic count) and is relayed
//! over a pooled upstream socket this module writes and reads itself; the answer's head is
//! rewritten on its way back and its body copied through unchanged. Every other request goes
//! to the router and its proxy (`forward.rs`), on the same connection.
//!
//! Why: hyper's server and client around the router cost more than the whole of nginx's proxy
//! path on this machine — a bare hyper proxy with no BFF logic reached ~0.88 of nginx
//! (docs/BENCHMARKS.md, `lab bench bff`, session 6) — and the issue asks for ≥ 1.0. Envoy and
//! Pingora speak HTTP/1 themselves for the same reason.
//!
//! What is shared, not restated: the route table ([`ROUTES`]), the session and client-address
//! rules ([`SessionState::resolve_head`]), the rate limiter and its headers, the security
//! headers ([`security_headers`]), the resilience stack (`lab_resilience::call`, the same
//! breakers and budgets as the router's proxy), the failure table, the request-id rules and the
//! platform metrics ([`lab_http::RouteRecorder`]).

mod wire;

use std::sync::Arc;
use std::time::Instant;

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use lab_http::{Fast, Head, Observer, RouteRecorder};
use lab_resilience::{Failure, Outcome, Replay, call};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::forward::{failed, is_problem_type, judged, policy_for};
use super::pool::{Endpoint, RawConn};
use super::routes::{ROUTES, Route, Timeouts};
use super::{Inner, Proxy};
use crate::client_ip::RequestHeaders;
use crate::edge::Edge;
use crate::live::bridge::Traffic;
use crate::rate_limit::{Decision, RouteClass, state, too_many};
use crate::security::security_headers;
use crate::session::{SessionState, Visitor};
use wire::{Chunks, Framing};

/// Header slots parsed per upstream answer head; an answer with more is a broken upstream.
const MAX_HEADERS: usize = 64;

/// An upstream answer head longer than this is a broken upstream.
const MAX_UPSTREAM_HEAD: usize = 64 * 1024;

/// Bytes read from an upstream at a time while a body is copied.
const COPY_CHUNK: usize = 64 * 1024;

/// The fast path: built once, shared by every connection.
pub struct Front {
    proxy: Arc<Inner>,
    edge: Arc<Edge>,
    traffic: Arc<Traffic>,
    routes: Vec<Served>,
    instance: HeaderValue,
    /// The security headers' lines for each [`Seen::index`], written once here rather than
    /// named and copied on every answer.
    security: SecurityLines,
    /// Requests the front answered.
    answered: Counter,
    /// Connections it handed over to the router.
    handed_over: Counter,
}

/// A proxied route the front serves, its template split into segments.
struct Served {
    route: &'static Route,
    segments: Vec<Option<&'static str>>,
    recorder: RouteRecorder,
}

impl Served {
    /// Whether a path split at its slashes matches the template: the same segments, a
    /// `{param}` any non-empty one (as the router matches them).
    fn matches(&self, given: &[&str]) -> bool {
        self.segments.len() == given.len()
            && self
                .segments
                .iter()
                .zip(given)
                .all(|(segment, g)| match segment {
                    Some(literal) => g == literal,
                    None => !g.is_empty(),
                })
    }
}

impl Front {
    /// The front for `proxy`'s routes, behind `edge`, counted in `traffic` and `observer`;
    /// `hsts` as the browser edge's setting.
    pub fn new(
        proxy: &Proxy,
        edge: &Edge,
        traffic: Arc<Traffic>,
        observer: &Observer,
        metrics: &lab_telemetry::Metrics,
        hsts: bool,
    ) -> Self {
        let answered = Counter::default();
        let handed_over = Counter::default();
        metrics.register(
            "bff_front_requests",
            "Proxied reads answered by the BFF's own HTTP/1 front",
            answered.clone(),
        );
        metrics.register(
            "bff_front_handoffs",
            "Connections the BFF's own HTTP/1 front handed over to the router",
            handed_over.clone(),
        );
        let routes = ROUTES
            .iter()
            // Demos run for seconds and are posts: the router's.
            .filter(|route| route.timeouts == Timeouts::Standard)
            .map(|route| Served {
                route,
                segments: route
                    .public
                    .split('/')
                    .map(|s| (!s.starts_with('{')).then_some(s))
                    .collect(),
                recorder: observer.route(route.public),
            })
            .collect();
        Self {
            proxy: Arc::clone(&proxy.0),
            edge: Arc::new(edge.clone()),
            traffic,
            routes,
            instance: observer.instance_header().clone(),
            security: SecurityLines::new(hsts),
            answered,
            handed_over,
        }
    }
}

impl Fast for Front {
    fn answer<'a>(
        &'a self,
        request: &'a Head<'a>,
        io: &'a mut TcpStream,
        out: &'a mut Vec<u8>,
    ) -> Option<impl Future<Output = bool> + Send + 'a> {
        let plan = self.plan(request)?;
        Some(async move { self.answer(io, out, request, &plan).await })
    }

    fn handed_over(&self) {
        self.handed_over.inc();
    }
}

/// What the front takes from a request head it serves.
struct Plan<'h> {
    served: &'h Served,
    head: bool,
    close: bool,
    /// The target's path and query.
    path: &'h str,
    query: Option<&'h str>,
}

/// A parsed request head's headers, for the edge's rules.
struct Parsed<'a, 'b>(&'a [httparse::Header<'b>]);

impl RequestHeaders for Parsed<'_, '_> {
    fn values<'a>(&'a self, name: &'static str) -> impl Iterator<Item = &'a [u8]> {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }
}

impl Front {
    /// The route and what to do, when the request is the fast path's; `None` leaves it to the
    /// router. lab-http's server asks only for requests without a body, `Expect` or `Upgrade`.
    fn plan<'s>(&'s self, request: &'s Head<'s>) -> Option<Plan<'s>> {
        let head = match request.method {
            "GET" => false,
            "HEAD" => true,
            _ => return None,
        };
        let target = wire::Target::parse(request.target)?;
        let served = self.routes.iter().find(|s| s.matches(target.segments()))?;
        for h in request.headers {
            // A `Connection` naming headers of its own hop: the router's proxy drops those.
            if h.name.eq_ignore_ascii_case("connection")
                && lab_http::tokens(h.value).any(|t| {
                    !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive")
                })
            {
                return None;
            }
        }
        Some(Plan {
            served,
            head,
            close: request.close,
            path: target.path,
            query: target.query,
        })
    }

    /// Answers one request; false when the connection cannot carry another.
    async fn answer(
        &self,
        tcp: &mut TcpStream,
        write: &mut Vec<u8>,
        request: &Head<'_>,
        plan: &Plan<'_>,
    ) -> bool {
        let started = Instant::now();
        let method = if plan.head { Method::HEAD } else { Method::GET };
        let path = plan.path;
        let headers = Parsed(request.headers);
        let request_id = RequestId::of(&headers);
        let (visitor, set_cookie) = self.sessions().resolve_head(request.peer.ip(), &headers);
        let class = RouteClass::of(&method, path);
        let decision = match class {
            Some(class) => Some(self.decide(&visitor, class).await),
            None => None,
        };
        let finish = Finish {
            request_id: request_id.as_bytes(),
            instance: &self.instance,
            limits: decision.as_ref().map(state),
            set_cookie,
            security: &self.security,
            close: plan.close,
        };
        let refused = class.zip(decision.as_ref()).filter(|(_, d)| !d.allowed);
        let (status, keep) = match refused {
            Some((class, decision)) => {
                let answer = too_many(class, decision);
                problem(tcp, write, answer, &finish, plan.head).await
            }
            None => {
                let outgoing = Outgoing {
                    method: &method,
                    route: plan.served.route,
                    path,
                    query: plan.query,
                    headers: request.headers,
                    request_id: request_id.as_bytes(),
                    visitor: &visitor,
                };
                match self.forward(&outgoing).await {
                    Ok(answer) => relay(tcp, write, answer, &finish, plan.head).await,
                    Err(answer) => problem(tcp, write, answer, &finish, plan.head).await,
                }
            }
        };
        self.answered.inc();
        let took = started.elapsed();
        self.traffic.record(took, status);
        plan.served
            .recorder
            .finish(&method, status.as_u16(), took, request_id.as_bytes());
        keep
    }

    fn sessions(&self) -> &SessionState {
        self.edge.sessions()
    }

    /// A token from the visitor's bucket: `RateLimiter::check` spends one of this replica's
    /// lease first and asks Redis only when there is none.
    async fn decide(&self, visitor: &Visitor, class: RouteClass) -> Decision {
        self.edge
            .rate_limiter()
            .check(&visitor.scope(), class)
            .await
    }

    /// The call through the route's upstream resilience stack; the upstream's answer with its
    /// body still to read, or the gateway's problem.
    async fn forward(&self, outgoing: &Outgoing<'_>) -> Result<RawAnswer, Response> {
        let service = outgoing.route.service;
        let Some(upstream) = self.proxy.upstreams.get(service) else {
            return Err(Failure::NoEndpoint.problem(service).into_response());
        };
        let policy = policy_for(outgoing.route, &self.proxy.policy);
        // A GET or HEAD: safe to send again, on another replica if need be.
        let result = call(upstream, &policy, Replay::Safe, |endpoint| {
            let pool = self.proxy.pools.get(endpoint).cloned();
            async move {
                let pool = pool.ok_or(Failure::NoEndpoint)?;
                exchange(pool, outgoing).await
            }
        })
        .await;
        match result {
            Ok(answer) if answer.status.is_server_error() && !answer.problem => {
                Err(failed(service, &Failure::UpstreamStatus(answer.status)))
            }
            Ok(answer) => Ok(answer),
            Err(failure) => Err(failed(service, &failure)),
        }
    }
}

/// A request's id: the caller's `X-Request-Id` when it is acceptable, else a new one (the
/// platform middleware's rule, `lab_http`), either way without allocating.
enum RequestId<'a> {
    Given(&'a [u8]),
    New([u8; 32]),
}

impl<'a> RequestId<'a> {
    fn of(headers: &'a Parsed<'_, '_>) -> Self {
        headers
            .values("x-request-id")
            .next()
            .filter(|v| lab_http::acceptable_request_id_bytes(v))
            .map_or_else(|| Self::New(lab_http::new_request_id_digits()), Self::Given)
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Given(bytes) => bytes,
            Self::New(digits) => digits,
        }
    }
}

/// The request as the upstream gets it.
struct Outgoing<'a> {
    method: &'a Method,
    route: &'static Route,
    /// The public path and query.
    path: &'a str,
    query: Option<&'a str>,
    headers: &'a [httparse::Header<'a>],
    request_id: &'a [u8],
    visitor: &'a Visitor,
}

impl Outgoing<'_> {
    /// The request head for an endpoint whose `Host` is `host`: the route's path, the caller's
    /// headers less the hop's own and those the BFF sets (`Host`, `X-Request-Id`,
    /// `X-Lab-Customer`), then the BFF's.
    fn write(&self, out: &mut Vec<u8>, host: &[u8]) {
        let (prefix, rest) = self.route.upstream_path(self.path);
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(rest.as_bytes());
        if let Some(query) = self.query {
            out.push(b'?');
            out.extend_from_slice(query.as_bytes());
        }
        out.extend_from_slice(b" HTTP/1.1\r\n");
        lab_http::put_header(out, b"host", host);
        for h in self.headers {
            let name = h.name.as_bytes();
            if wire::is_hop_by_hop(name)
                || name.eq_ignore_ascii_case(b"host")
                || name.eq_ignore_ascii_case(b"x-request-id")
                || name.eq_ignore_ascii_case(b"x-lab-customer")
            {
                continue;
            }
            wire::put_header_lower(out, name, h.value);
        }
        lab_http::put_header(out, b"x-request-id", self.request_id);
        // The anonymous visitor's identity, as the router's proxy sets it
        // (`super::headers::set_customer`); a bearer's is the token's subject.
        if !self.visitor.bearer {
            out.extend_from_slice(b"x-lab-customer: session:");
            out.extend_from_slice(self.visitor.session.as_str().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    fn head(&self) -> bool {
        *self.method == Method::HEAD
    }
}

/// An upstream's answer, its head read and described, its body (if any) still on the socket
/// after the head.
struct RawAnswer {
    endpoint: Arc<Endpoint>,
    conn: RawConn,
    /// Where the head ends in `conn.read`.
    head_length: usize,
    status: StatusCode,
    framing: Framing,
    /// Whether the connection can carry another request once the body is read.
    reusable: bool,
    /// Whether the answer is the service's own problem document.
    problem: bool,
}

impl Outcome for RawAnswer {
    fn failure(&self) -> Option<Failure> {
        judged(self.status)
    }
}

/// Sends `outgoing` on one of `endpoint`'s idle connections or a new one and reads the answer's
/// head. A pooled connection the upstream had closed meanwhile (nothing comes back on it) is
/// dropped and the next one tried: not a failure of the upstream.
async fn exchange(endpoint: Arc<Endpoint>, outgoing: &Outgoing<'_>) -> Result<RawAnswer, Failure> {
    loop {
        let (mut conn, pooled) = match endpoint.take_raw() {
            Some(conn) => (conn, true),
            None => (endpoint.connect_raw().await?, false),
        };
        conn.write.clear();
        outgoing.write(&mut conn.write, endpoint.host().as_bytes());
        if let Err(e) = conn.tcp.write_all(&conn.write).await {
            if pooled {
                continue;
            }
            return Err(Failure::Reset(format!("sending the request: {e}")));
        }
        match read_head(&mut conn, outgoing.head()).await {
            Ok(head) => {
                return Ok(RawAnswer {
                    endpoint,
                    conn,
                    head_length: head.length,
                    status: head.status,
                    framing: head.framing,
                    reusable: head.reusable,
                    problem: head.problem,
                });
            }
            Err(HeadError::Silent(_)) if pooled => {}
            Err(HeadError::Silent(detail) | HeadError::Broken(detail)) => {
                return Err(Failure::Reset(detail));
            }
        }
    }
}

/// An upstream answer's head, described.
struct Described {
    length: usize,
    status: StatusCode,
    framing: Framing,
    reusable: bool,
    problem: bool,
}

enum HeadError {
    /// The connection ended before a byte of an answer.
    Silent(String),
    /// A broken or malformed answer.
    Broken(String),
}

async fn read_head(conn: &mut RawConn, head_request: bool) -> Result<Described, HeadError> {
    loop {
        if !conn.read.is_empty() {
            let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut response = httparse::Response::new(&mut slots);
            match response.parse(&conn.read) {
                Ok(httparse::Status::Complete(length)) => {
                    // Where each header is, for the relay (the head is at most 64 KiB).
                    let base = conn.read.as_ptr() as usize;
                    let at = |bytes: &[u8]| (bytes.as_ptr() as usize - base) as u32;
                    conn.headers.clear();
                    conn.headers.extend(response.headers.iter().map(|h| {
                        let (name, value) = (at(h.name.as_bytes()), at(h.value));
                        [
                            name,
                            name + h.name.len() as u32,
                            value,
                            value + h.value.len() as u32,
                        ]
                    }));
                    return describe(&response, length, head_request).map_err(HeadError::Broken);
                }
                Ok(httparse::Status::Partial) if conn.read.len() < MAX_UPSTREAM_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Err(HeadError::Broken("an answer head over 64 KiB".into()));
                }
                Err(e) => return Err(HeadError::Broken(format!("a malformed answer: {e}"))),
            }
        }
        if conn.read.capacity() - conn.read.len() < 1024 {
            conn.read.reserve(8 * 1024);
        }
        match conn.tcp.read_buf(&mut conn.read).await {
            Ok(0) if conn.read.is_empty() => {
                return Err(HeadError::Silent(
                    "the upstream closed the connection".into(),
                ));
            }
            Ok(0) => return Err(HeadError::Broken("the answer's head broke off".into())),
            Ok(_) => {}
            Err(e) if conn.read.is_empty() => return Err(HeadError::Silent(e.to_string())),
            Err(e) => return Err(HeadError::Broken(e.to_string())),
        }
    }
}

fn describe(
    response: &httparse::Response<'_, '_>,
    length: usize,
    head_request: bool,
) -> Result<Described, String> {
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| format!("status {code}"))?;
    if status.is_informational() {
        return Err(format!("an interim answer ({code}) to a read"));
    }
    let mut reusable = response.version == Some(1);
    let mut chunked = None;
    let mut content_length: Option<u64> = None;
    let mut problem = false;
    for h in response.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The last coding decides whether the body is chunked (RFC 9112 §6.3).
            chunked = Some(
                lab_http::tokens(h.value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")),
            );
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or("a malformed Content-Length")?;
            if content_length.is_some_and(|m| m != n) {
                return Err("conflicting Content-Lengths".into());
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"connection") {
            if lab_http::tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close")) {
                reusable = false;
            }
        } else if name.eq_ignore_ascii_case(b"content-type") {
            problem = is_problem_type(h.value);
        }
    }
    let framing =
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Empty
        } else {
            match (chunked, content_length) {
                (Some(true), _) => Framing::Chunked,
                (Some(false), _) | (None, None) => Framing::UntilClose,
                (None, Some(n)) => Framing::Length(n),
            }
        };
    if framing == Framing::UntilClose {
        reusable = false;
    }
    Ok(Described {
        length,
        status,
        framing,
        reusable,
        problem,
    })
}

/// The headers the BFF puts on every answer the front writes, as the router's layers would:
/// the request id, this instance, the rate limit's state, a new session's cookie and the
/// security headers.
struct Finish<'a> {
    request_id: &'a [u8],
    instance: &'a HeaderValue,
    limits: Option<[(&'static HeaderName, u64); 3]>,
    set_cookie: Option<HeaderValue>,
    security: &'a SecurityLines,
    /// Whether the caller asked to close the connection after this answer.
    close: bool,
}

/// What an answer's own headers were, for the headers the BFF adds only where they are missing.
#[derive(Default)]
struct Seen {
    date: bool,
    html: bool,
    csp: bool,
    hsts: bool,
    referrer: bool,
}

impl Seen {
    /// What decides the security headers, as four bits.
    fn index(&self) -> usize {
        usize::from(self.html)
            | usize::from(self.csp) << 1
            | usize::from(self.hsts) << 2
            | usize::from(self.referrer) << 3
    }
}

/// [`security_headers`]' lines for every [`Seen::index`], with the edge's `hsts` setting.
struct SecurityLines([Vec<u8>; 16]);

impl SecurityLines {
    fn new(hsts: bool) -> Self {
        Self(std::array::from_fn(|index| {
            let seen = |bit: usize| index & 1 << bit != 0;
            let has = |name: &HeaderName| {
                (*name == header::CONTENT_SECURITY_POLICY && seen(1))
                    || (*name == header::STRICT_TRANSPORT_SECURITY && seen(2))
                    || (*name == header::REFERRER_POLICY && seen(3))
            };
            let mut lines = Vec::new();
            for (name, value) in security_headers(seen(0), has, hsts).into_iter().flatten() {
                lab_http::put_header(&mut lines, name.as_str().as_bytes(), value.as_bytes());
            }
            lines
        }))
    }

    fn for_answer(&self, seen: &Seen) -> &[u8] {
        &self.0[seen.index()]
    }
}

impl Finish<'_> {
    /// Copies one of the answer's headers unless the BFF sets it itself; the upstream's
    /// `X-Instance-Id` comes back as `X-Upstream-Instance-Id`.
    fn copy(&self, out: &mut Vec<u8>, seen: &mut Seen, name: &[u8], value: &[u8]) {
        let is = |other: &str| name.eq_ignore_ascii_case(other.as_bytes());
        // By length first: most of an answer's headers are none of these, and a length rules
        // out all but one or two names.
        match name.len() {
            4 if is("date") => seen.date = true,
            12 if is("x-request-id") => return,
            12 if is("content-type") => seen.html = crate::security::is_html(Some(value)),
            13 if is("x-instance-id") => {
                lab_http::put_header(
                    out,
                    super::X_UPSTREAM_INSTANCE_ID.as_str().as_bytes(),
                    value,
                );
                return;
            }
            15 if is("referrer-policy") => seen.referrer = true,
            15 | 19
                if self.limits.is_some()
                    && (is("ratelimit-limit")
                        || is("ratelimit-remaining")
                        || is("ratelimit-reset")) =>
            {
                return;
            }
            22 if is("x-content-type-options") => return,
            23 if is("content-security-policy") => seen.csp = true,
            25 if is("strict-transport-security") => seen.hsts = true,
            _ => {}
        }
        wire::put_header_lower(out, name, value);
    }

    /// The BFF's own headers, after the answer's; `closing` when the connection ends after
    /// this answer for the answer's own sake.
    fn put(&self, out: &mut Vec<u8>, seen: &Seen, closing: bool) {
        if closing || self.close {
            lab_http::put_header(out, b"connection", b"close");
        }
        if !seen.date {
            out.extend_from_slice(b"date: ");
            lab_http::put_date(out);
            out.extend_from_slice(b"\r\n");
        }
        lab_http::put_header(out, b"x-request-id", self.request_id);
        lab_http::put_header(out, b"x-instance-id", self.instance.as_bytes());
        if let Some(limits) = &self.limits {
            let mut digits = itoa::Buffer::new();
            for (name, value) in limits {
                lab_http::put_header(
                    out,
                    name.as_str().as_bytes(),
                    digits.format(*value).as_bytes(),
                );
            }
        }
        if let Some(cookie) = &self.set_cookie {
            lab_http::put_header(out, b"set-cookie", cookie.as_bytes());
        }
        out.extend_from_slice(self.security.for_answer(seen));
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes one of the BFF's own answers (a problem); its status, and whether the connection can
/// go on.
async fn problem(
    tcp: &mut TcpStream,
    out: &mut Vec<u8>,
    answer: Response,
    finish: &Finish<'_>,
    head: bool,
) -> (StatusCode, bool) {
    let (parts, body) = answer.into_parts();
    // A problem document is a few hundred bytes, already in memory.
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    out.clear();
    lab_http::put_status_line(out, parts.status);
    let mut seen = Seen::default();
    for (name, value) in &parts.headers {
        if *name != header::CONTENT_LENGTH {
            finish.copy(out, &mut seen, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    let mut length = itoa::Buffer::new();
    lab_http::put_header(out, b"content-length", length.format(body.len()).as_bytes());
    finish.put(out, &seen, false);
    if !head {
        out.extend_from_slice(&body);
    }
    (parts.status, tcp.write_all(out).await.is_ok())
}

/// Relays an upstream answer: its head rewritten, its body copied as it comes. Its status, and
/// whether the caller's connection can go on; the upstream's goes back to its pool when its
/// answer was read to the end and nothing followed.
async fn relay(
    tcp: &mut TcpStream,
    out: &mut Vec<u8>,
    answer: RawAnswer,
    finish: &Finish<'_>,
    head: bool,
) -> (StatusCode, bool) {
    let RawAnswer {
        endpoint,
        mut conn,
        head_length,
        status,
        framing,
        mut reusable,
        ..
    } = answer;
    out.clear();
    lab_http::put_status_line(out, status);
    {
        let read = &conn.read;
        let headers = conn.headers.iter().map(|[n0, n1, v0, v1]| {
            let part = |from: &u32, to: &u32| &read[*from as usize..*to as usize];
            (part(n0, n1), part(v0, v1))
        });
        // Headers the upstream's `Connection` names are its hop's own too.
        let options: Vec<&[u8]> = headers
            .clone()
            .filter(|(name, _)| name.eq_ignore_ascii_case(b"connection"))
            .flat_map(|(_, value)| lab_http::tokens(value))
            .collect();
        let listed = |name: &[u8]| options.iter().any(|o| o.eq_ignore_ascii_case(name));
        let mut seen = Seen::default();
        for (name, value) in headers {
            let framing_header = name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"content-length");
            let relayed = match framing {
                // The body is relayed as it is framed.
                Framing::Chunked => !name.eq_ignore_ascii_case(b"content-length"),
                Framing::Length(_) | Framing::Empty => {
                    !name.eq_ignore_ascii_case(b"transfer-encoding")
                }
                Framing::UntilClose => !framing_header,
            };
            if relayed && !wire::is_hop_by_hop(name) && !listed(name) {
                finish.copy(out, &mut seen, name, value);
            }
        }
        // A body that ends with the connection ends this side's too.
        finish.put(out, &seen, framing == Framing::UntilClose);
    }
    // The first bytes of the body came with the head.
    let first = &conn.read[head_length..];
    let mut keep = framing != Framing::UntilClose;
    match framing {
        Framing::Empty => {
            reusable &= first.is_empty();
            if tcp.write_all(out).await.is_err() {
                return (status, false);
            }
        }
        Framing::Length(length) => {
            let now = usize::try_from(length)
                .unwrap_or(usize::MAX)
                .min(first.len());
            reusable &= now == first.len();
            if !head {
                out.extend_from_slice(&first[..now]);
            }
            if tcp.write_all(out).await.is_err() {
                return (status, false);
            }
            let mut left = length - now as u64;
            while left > 0 {
                let Some(got) = next(&mut conn).await else {
                    return (status, false);
                };
                let part = usize::try_from(left).unwrap_or(usize::MAX).min(got);
                reusable &= part == got;
                if tcp.write_all(&conn.read[..part]).await.is_err() {
                    return (status, false);
                }
                left -= part as u64;
            }
        }
        Framing::Chunked => {
            let mut chunks = Chunks::default();
            let mut end = match chunks.scan(first) {
                Ok(end) => end,
                Err(_) => return (status, false),
            };
            let now = end.unwrap_or(first.len());
            reusable &= now == first.len();
            out.extend_from_slice(&first[..now]);
            if tcp.write_all(out).await.is_err() {
                return (status, false);
            }
            while end.is_none() {
                let Some(got) = next(&mut conn).await else {
                    return (status, false);
                };
                end = match chunks.scan(&conn.read[..got]) {
                    Ok(end) => end,
                    Err(_) => return (status, false),
                };
                let part = end.unwrap_or(got);
                reusable &= part == got;
                if tcp.write_all(&conn.read[..part]).await.is_err() {
                    return (status, false);
                }
            }
        }
        Framing::UntilClose => {
            out.extend_from_slice(first);
            if tcp.write_all(out).await.is_err() {
                return (status, false);
            }
            loop {
                conn.read.clear();
                conn.read.reserve(COPY_CHUNK);
                match conn.tcp.read_buf(&mut conn.read).await {
                    Ok(0) => break,
                    Ok(_) => {
                        if tcp.write_all(&conn.read).await.is_err() {
                            return (status, false);
                        }
                    }
                    Err(_) => return (status, false),
                }
            }
            keep = false;
        }
    }
    if reusable {
        endpoint.give_back_raw(conn);
    }
    (status, keep)
}

/// The body's next bytes from the upstream, in `conn.read` from its start; `None` when the
/// connection ended or broke first.
async fn next(conn: &mut RawConn) -> Option<usize> {
    conn.read.clear();
    conn.read.reserve(COPY_CHUNK);
    match conn.tcp.read_buf(&mut conn.read).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}
