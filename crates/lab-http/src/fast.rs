//! A fast path for the one read that dominates a service's traffic (catalog's
//! `GET /products/{id}`): answered in front of the router, with the same middleware (ids, log
//! line, metrics under the route's template, panic → 500 problem), so a request is served exactly
//! as the routed handler would serve it, minus axum's per-request routing work — matching,
//! percent-decoding and collecting the path parameters, inserting them into the request's
//! extensions, and one more boxed service clone (together ~20 % of a cached read's instructions,
//! callgrind). Everything else, and any request the fast path declines, goes to the router.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use futures::future::{BoxFuture, Either};
use http::Method;
use tower::util::{BoxCloneSyncService, Oneshot};
use tower::{Layer, Service, ServiceExt};

/// Decides from a request's single path segment whether the fast path takes it.
pub type Accept = fn(&str) -> bool;

/// What a service hands to [`crate::ServiceApp::router_with_fast_path`]: which requests, under
/// which route template, answered by which function.
pub struct FastRoute {
    /// `GET {prefix}{segment}` with exactly one non-empty segment is a candidate: `/products/`.
    pub prefix: &'static str,
    /// The template the routed version is registered under, for logs and metrics:
    /// `/products/{id}`.
    pub template: &'static str,
    /// Whether this segment is the fast path's (a well-formed id); declined ones go to the
    /// router, which answers them (and their errors) as usual.
    pub accept: Accept,
    /// Answers an accepted request.
    pub handler: Arc<dyn Fn(Request) -> BoxFuture<'static, Response> + Send + Sync>,
}

/// A [`FastRoute`] wrapped in the platform middleware, ready for [`Front`].
#[derive(Clone)]
pub struct FastPath {
    prefix: &'static str,
    accept: Accept,
    service: BoxCloneSyncService<Request, Response, Infallible>,
}

impl FastPath {
    /// `route` behind `middleware` (the same layers the router's routes get).
    pub(crate) fn new<L>(route: FastRoute, middleware: L) -> Self
    where
        L: Layer<Handler>,
        L::Service: Service<Request, Response = Response, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        Self {
            prefix: route.prefix,
            accept: route.accept,
            service: BoxCloneSyncService::new(middleware.layer(Handler(route.handler))),
        }
    }

    fn takes(&self, req: &Request) -> bool {
        req.method() == Method::GET
            && req
                .uri()
                .path()
                .strip_prefix(self.prefix)
                .is_some_and(|segment| {
                    !segment.is_empty() && !segment.contains('/') && (self.accept)(segment)
                })
    }
}

/// The fast route's function as a tower service.
#[derive(Clone)]
pub struct Handler(Arc<dyn Fn(Request) -> BoxFuture<'static, Response> + Send + Sync>);

impl Service<Request> for Handler {
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::Map<
        BoxFuture<'static, Response>,
        fn(Response) -> Result<Response, Infallible>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        use futures::FutureExt;
        (self.0)(req).map(Ok)
    }
}

/// The fast path in front of the router.
#[derive(Clone)]
pub struct Front {
    pub(crate) fast: FastPath,
    pub(crate) router: Router,
}

impl Service<Request> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<
        Oneshot<BoxCloneSyncService<Request, Response, Infallible>, Request>,
        <Router as Service<Request>>::Future,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both sides are always ready: the router by axum's contract, the fast path because it
        // is driven by `oneshot`, which polls its readiness itself.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if self.fast.takes(&req) {
            Either::Left(self.fast.service.clone().oneshot(req))
        } else {
            Either::Right(self.router.call(req))
        }
    }
}
