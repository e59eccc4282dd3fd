//! The edge as one hand-written tower service: the session, the rate limit and (for a keyed
//! write) the replay guard, in that order, around each route.
//!
//! One service rather than three `axum::middleware::from_fn` layers: each of those cloned the
//! whole stack below it and boxed a future per request (callgrind on the proxied read). And
//! most requests need no await here at all: the session is a signature check, the token comes
//! from this replica's lease ([`RateLimiter::check_now`](crate::rate_limit::RateLimiter)), and
//! only a keyed write needs the replay store, so the route that was polled ready takes the
//! request at once. The rest (a token from Redis, a replay) goes the awaiting way.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use futures::future::BoxFuture;
use http::{HeaderValue, header};
use tower::{Layer, Service};

use super::Edge;
use crate::rate_limit::{Decision, RouteClass, set_headers, too_many};

/// Puts [`EdgeService`] around a route. The edge behind one `Arc`: axum clones a route's service
/// per request, and cloning the `Edge` itself (its Redis handle included) was ~2 % of a
/// proxied read (callgrind).
#[derive(Clone)]
pub struct EdgeLayer(pub(super) Arc<Edge>);

impl<S> Layer<S> for EdgeLayer {
    type Service = EdgeService<S>;

    fn layer(&self, inner: S) -> EdgeService<S> {
        EdgeService {
            inner,
            edge: Arc::clone(&self.0),
        }
    }
}

/// One route behind the edge.
#[derive(Clone)]
pub struct EdgeService<S> {
    inner: S,
    edge: Arc<Edge>,
}

impl<S> Service<Request> for EdgeService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let (visitor, set_cookie) = self.edge.sessions.resolve(&req);
        let class = RouteClass::of(req.method(), req.uri().path());
        let keyed = crate::replay::applies(&req);
        let scope = class.map(|_| visitor.scope());
        req.extensions_mut().insert(visitor);
        // Decided without waiting: no bucket for this route, or a token of this replica's lease.
        let now = match (class, &scope) {
            (Some(class), Some(scope)) => self
                .edge
                .rate_limiter
                .check_now(&class.key(scope), class)
                .map(Some),
            _ => Some(None),
        };
        match now {
            Some(decision) if !keyed => {
                let answer = self.inner.call(req);
                let edge = Arc::clone(&self.edge);
                Box::pin(async move {
                    let Ok(mut response) = answer.await;
                    finish(&mut response, &edge, class, decision.as_ref(), set_cookie);
                    Ok(response)
                })
            }
            now => {
                // The service polled ready is the one to call later; a clone takes its place.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let edge = Arc::clone(&self.edge);
                Box::pin(async move {
                    let decision = match (now, class, scope) {
                        (Some(decision), ..) => decision,
                        (None, Some(class), Some(scope)) => {
                            Some(edge.rate_limiter.check(&scope, class).await)
                        }
                        _ => None,
                    };
                    let mut response = match (&decision, class) {
                        (Some(refused), Some(class)) if !refused.allowed => {
                            too_many(class, refused)
                        }
                        _ => {
                            crate::replay::guard(&edge.replay, req, |req| async move {
                                let Ok(response) = inner.call(req).await;
                                response
                            })
                            .await
                        }
                    };
                    finish(&mut response, &edge, class, decision.as_ref(), set_cookie);
                    Ok(response)
                })
            }
        }
    }
}

/// The bucket's headers and a new session's cookie on the answer.
fn finish(
    response: &mut Response,
    edge: &Edge,
    class: Option<RouteClass>,
    decision: Option<&Decision>,
    set_cookie: Option<HeaderValue>,
) {
    if let (Some(decision), Some(class)) = (decision, class) {
        set_headers(response.headers_mut(), &edge.rate_limiter, class, decision);
    }
    if let Some(cookie) = set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
}
