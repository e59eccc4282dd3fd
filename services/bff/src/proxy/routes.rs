//! The public surface of ARCHITECTURE.md §9 that the services answer: each public path, the
//! service behind it and the path there. One table, so a newcomer sees the whole map at once.

use std::time::Duration;

/// How long a route may take, by the kind of work behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeouts {
    /// The policy's (settings') timeouts: reads and single writes.
    Standard,
    /// A demo that races hundreds of requests inside the service and reports a verdict: seconds
    /// of legitimate work, and not safe to cut short and retry.
    Demo,
}

impl Timeouts {
    /// Per-attempt and total timeouts for [`Timeouts::Demo`]: the catalog's stampede demo runs
    /// for a few seconds on a loaded laptop; 20 s leaves it room without hanging a page forever.
    pub const DEMO: (Duration, Duration) = (Duration::from_secs(20), Duration::from_secs(20));
}

/// One public route and where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The axum path template on the BFF.
    pub public: &'static str,
    /// The service (a key of `Settings::upstreams`).
    pub service: &'static str,
    /// The leading part of the public path that is replaced…
    pub strip: &'static str,
    /// …by this, to make the service's path.
    pub prefix: &'static str,
    pub timeouts: Timeouts,
}

impl Route {
    /// The service's path for a public `path` this route matched.
    pub fn upstream_path<'a>(&self, path: &'a str) -> (&'static str, &'a str) {
        (self.prefix, path.strip_prefix(self.strip).unwrap_or(path))
    }
}

const fn route(
    public: &'static str,
    service: &'static str,
    strip: &'static str,
    prefix: &'static str,
) -> Route {
    Route {
        public,
        service,
        strip,
        prefix,
        timeouts: Timeouts::Standard,
    }
}

const fn demo(public: &'static str, service: &'static str) -> Route {
    Route {
        timeouts: Timeouts::Demo,
        ..route(public, service, "/api", "")
    }
}

/// Every proxied route. Methods are the service's to check: a wrong one gets its 405 problem.
pub const ROUTES: &[Route] = &[
    route("/api/auth/register", "identity", "/api/auth", ""),
    route("/api/auth/login", "identity", "/api/auth", ""),
    route(
        "/api/auth/refresh",
        "identity",
        "/api/auth/refresh",
        "/token/refresh",
    ),
    route("/api/auth/logout", "identity", "/api/auth", ""),
    route("/api/auth/me", "identity", "/api/auth", ""),
    route("/.well-known/jwks.json", "identity", "", ""),
    route("/api/products", "catalog", "/api", ""),
    route("/api/products/{id}", "catalog", "/api", ""),
    route("/api/products/{id}/inventory", "catalog", "/api", ""),
    route("/api/orders", "orders", "/api", ""),
    route("/api/orders/{id}", "orders", "/api", ""),
    route("/api/claims", "orders", "/api", ""),
    route("/api/claims/{key}", "orders", "/api", ""),
    // The order's payment, for its `payment_url` (the PSP's hosted page the buyer opens).
    route("/api/payments/{order_id}", "payments", "/api", ""),
    route("/api/webhooks/stripe", "payments", "/api", ""),
    route("/api/webhooks/paypal", "payments", "/api", ""),
    demo("/api/demo/race", "catalog"),
    demo("/api/demo/last-unit", "catalog"),
    demo("/api/demo/cache", "catalog"),
    demo("/api/demo/stampede", "catalog"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn find(public: &str) -> Route {
        *ROUTES
            .iter()
            .find(|r| r.public == public)
            .unwrap_or_else(|| panic!("no route {public}"))
    }

    #[test]
    fn public_paths_map_to_the_services_own_paths() {
        let cases = [
            ("/api/auth/refresh", "/api/auth/refresh", "/token/refresh"),
            ("/api/auth/login", "/api/auth/login", "/login"),
            (
                "/.well-known/jwks.json",
                "/.well-known/jwks.json",
                "/.well-known/jwks.json",
            ),
            (
                "/api/products/{id}/inventory",
                "/api/products/7/inventory",
                "/products/7/inventory",
            ),
            ("/api/claims/{key}", "/api/claims/k-1", "/claims/k-1"),
            (
                "/api/webhooks/stripe",
                "/api/webhooks/stripe",
                "/webhooks/stripe",
            ),
            ("/api/demo/race", "/api/demo/race", "/demo/race"),
        ];
        for (template, path, expected) in cases {
            let (prefix, rest) = find(template).upstream_path(path);
            assert_eq!(format!("{prefix}{rest}"), expected, "{path}");
        }
    }

    #[test]
    fn every_public_template_is_listed_once() {
        let mut seen: Vec<&str> = ROUTES.iter().map(|r| r.public).collect();
        seen.sort_unstable();
        let count = seen.len();
        seen.dedup();
        assert_eq!(seen.len(), count);
    }
}
