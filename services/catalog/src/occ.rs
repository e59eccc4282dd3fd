//! Optimistic concurrency on PostgreSQL's `xmin`.
//!
//! Every read carries an `ETag` made from the row's `xmin` (the id of the transaction that last
//! wrote it). Every write must send it back in `If-Match` and is one statement,
//! `UPDATE … WHERE id = $1 AND xmin = $2 … RETURNING`: of N writers holding the same ETag,
//! PostgreSQL lets exactly one through; the others match no row and get 412 with the current row.
//! No read-then-write window exists in which an update could be lost.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use lab_http::Problem;

/// The ETag of a row whose `xmin` is `xmin`: strong, quoted, e.g. `"x1234"`.
pub fn etag(xmin: &str) -> String {
    format!("\"x{xmin}\"")
}

/// `ETag` header value.
pub fn etag_header(xmin: &str) -> HeaderValue {
    HeaderValue::from_str(&etag(xmin)).unwrap_or_else(|_| HeaderValue::from_static("\"x0\""))
}

/// Reads the `xmin` values a write was based on from `If-Match`: 428 when missing (the write
/// would be blind), 400 when malformed or `*` (which would defeat the check).
pub fn if_match(headers: &HeaderMap) -> Result<Vec<String>, Problem> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Err(Problem::typed(
            StatusCode::PRECONDITION_REQUIRED,
            "if-match-required",
            "If-Match is required",
        )
        .detail("send the ETag of the representation you are changing in If-Match"));
    };
    let raw = raw
        .to_str()
        .map_err(|_| Problem::bad_request("If-Match is not valid ASCII"))?;
    let mut xmins = Vec::new();
    for tag in raw.split(',').map(str::trim) {
        let xmin = tag
            .strip_prefix("\"x")
            .and_then(|t| t.strip_suffix('"'))
            .filter(|t| !t.is_empty() && t.len() <= 10 && t.bytes().all(|b| b.is_ascii_digit()));
        match xmin {
            Some(x) => xmins.push(x.to_owned()),
            None => {
                return Err(Problem::typed(
                    StatusCode::BAD_REQUEST,
                    "malformed-if-match",
                    "Malformed If-Match",
                )
                .detail(format!(
                    "{tag:?} is not an ETag this service issued (they look like \"x1234\")"
                )));
            }
        }
    }
    Ok(xmins)
}

/// Whether `If-None-Match` already names the current representation (answer 304).
pub fn not_modified(if_none_match: Option<&HeaderValue>, xmin: &str) -> bool {
    let Some(if_none_match) = if_none_match else {
        return false;
    };
    let Ok(tags) = if_none_match.to_str() else {
        return false;
    };
    let current = etag(xmin);
    tags.split(',')
        .map(str::trim)
        .any(|t| t == current || t == "*")
}

/// 412 carrying the current row and its ETag, so the client can merge and retry.
pub fn stale(current: impl serde::Serialize, xmin: &str) -> Problem {
    Problem::typed(
        StatusCode::PRECONDITION_FAILED,
        "stale-etag",
        "The resource changed since you read it",
    )
    .detail("another write committed first; the current row and its ETag are attached")
    .with("current", current)
    .with("etag", etag(xmin))
    .header(header::ETAG, etag_header(xmin))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_missing_if_match_is_428_and_a_malformed_one_400() {
        assert_eq!(if_match(&HeaderMap::new()).unwrap_err().status, 428);
        assert_eq!(
            if_match(&headers(header::IF_MATCH, "*"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            if_match(&headers(header::IF_MATCH, "\"xabc\""))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            if_match(&headers(header::IF_MATCH, "W/\"x12\""))
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn if_match_accepts_a_list_of_etags_it_issued() {
        let xmins = if_match(&headers(
            header::IF_MATCH,
            &format!("{}, {}", etag("12"), etag("13")),
        ))
        .unwrap();
        assert_eq!(xmins, vec!["12", "13"]);
    }

    #[test]
    fn if_none_match_with_the_current_etag_is_not_modified() {
        assert!(not_modified(
            headers(header::IF_NONE_MATCH, &etag("7")).get(header::IF_NONE_MATCH),
            "7"
        ));
        assert!(!not_modified(
            headers(header::IF_NONE_MATCH, &etag("7")).get(header::IF_NONE_MATCH),
            "8"
        ));
        assert!(!not_modified(None, "7"));
    }
}
