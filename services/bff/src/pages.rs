//! The pages: `GET /` (the Lab page), `GET /chaos` (the cluster under fault injection) and
//! `GET /assets/<name>.<hash>.<ext>` (their modules, styles and the decision records), all embedded in the binary by `build.rs` — no file is read at run
//! time. Hashed assets never change under their name, so browsers keep them for a year without
//! asking again; the HTML, which names the current hashes, is revalidated on every load.

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, header};
use lab_http::Problem;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

/// A hashed name never names other bytes: cache it for a year (the longest value RFC 9111
/// caches honour) and never revalidate.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The page itself names the current hashes, so it is revalidated on every load.
const NO_CACHE: &str = "no-cache";

/// `/`, `/chaos` and `/assets/{name}`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/chaos", get(chaos))
        .route("/assets/{name}", get(asset))
}

async fn index() -> Response {
    page(embedded::INDEX_HTML)
}

async fn chaos() -> Response {
    page(embedded::CHAOS_HTML)
}

/// A page's HTML, revalidated on every load.
fn page(html: &'static [u8]) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE)),
        ],
        html,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match find(&name) {
        Some((content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
            ],
            bytes,
        )
            .into_response(),
        None => Problem::not_found(format!("no asset is named {name:?}")).into_response(),
    }
}

/// The content type and bytes of the asset served as `name`.
fn find(name: &str) -> Option<(&'static str, &'static [u8])> {
    embedded::ASSETS
        .iter()
        .find(|(served, _, _)| *served == name)
        .map(|(_, content_type, bytes)| (*content_type, *bytes))
}

/// The hashed names of every asset, for tests and the page's own checks.
pub fn asset_names() -> impl Iterator<Item = &'static str> {
    embedded::ASSETS.iter().map(|(name, _, _)| *name)
}

/// The Lab page's HTML as served.
pub fn index_html() -> &'static str {
    std::str::from_utf8(embedded::INDEX_HTML).unwrap_or_default()
}

/// The chaos page's HTML as served.
pub fn chaos_html() -> &'static str {
    std::str::from_utf8(embedded::CHAOS_HTML).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_page_names_only_hashed_assets_that_exist() {
        for html in [index_html(), chaos_html()] {
            the_page_names_only_hashed_assets_that_exist(html);
        }
    }

    fn the_page_names_only_hashed_assets_that_exist(html: &str) {
        let referenced: Vec<&str> = html
            .split("/assets/")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect();

        assert!(!referenced.is_empty(), "the page loads no asset");
        for name in referenced {
            assert!(
                find(name).is_some(),
                "{name} is referenced but not embedded"
            );
            let parts: Vec<&str> = name.split('.').collect();
            assert_eq!(parts.len(), 3, "{name} is not <name>.<hash>.<ext>");
        }
    }

    #[test]
    fn every_module_imports_its_siblings_by_their_hashed_names() {
        for name in asset_names().filter(|n| n.ends_with(".js")) {
            let (_, bytes) = find(name).unwrap_or_default();
            let text = std::str::from_utf8(bytes).unwrap_or_default();
            for import in text.split("from './").skip(1) {
                let target = import.split('\'').next().unwrap_or_default();
                assert!(
                    find(target).is_some(),
                    "{name} imports {target}, which is not served"
                );
            }
        }
    }

    #[test]
    fn the_decision_records_are_embedded_with_title_status_and_decision() {
        let name = asset_names()
            .find(|n| n.starts_with("adr.") && n.ends_with(".json"))
            .unwrap_or_default();
        let (_, bytes) = find(name).unwrap_or_default();
        let records: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
        let records = records.as_array().cloned().unwrap_or_default();

        assert!(!records.is_empty(), "no ADR embedded");
        for record in records {
            assert!(
                !record["title"].as_str().unwrap_or_default().is_empty(),
                "{record}"
            );
            assert!(
                !record["status"].as_str().unwrap_or_default().is_empty(),
                "{record}"
            );
            assert!(
                !record["decision"].as_str().unwrap_or_default().is_empty(),
                "{record}"
            );
        }
    }
}
