//! HTTP/1 details the proxy's fast path needs beyond `httparse` and lab-http's server: how an
//! answer's body is framed, where a chunked body ends, which headers are a hop's own.

/// How an upstream answer's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body: a `HEAD` request's answer, or a 204 or 304.
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`, relayed as it is.
    Chunked,
    /// Neither: the body ends when the upstream closes the connection.
    UntilClose,
}

/// Whether a header of a parsed head is one of the router's proxy's hop-by-hop headers
/// (`super::super::headers::HOP_BY_HOP_NAMES`, the one list), in any case. `Transfer-Encoding`
/// is framing, handled apart.
pub(super) fn is_hop_by_hop(name: &[u8]) -> bool {
    super::super::headers::HOP_BY_HOP_NAMES
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// The most segments a proxied route's path has (`/api/products/{id}/inventory`: 5), with room.
pub(super) const MAX_SEGMENTS: usize = 8;

/// A plain target taken apart in one pass: its path, its query, and the path's segments (the
/// first, before the leading slash, empty). `None` unless every byte is one a well-formed
/// origin-form target (RFC 3986 path and query characters, percent escapes) may hold — anything
/// else is left to the router, which decides what to make of it — or with more than
/// [`MAX_SEGMENTS`] segments. The slashes and the `?` are found by one byte loop, not `split`
/// and `split_once`: the segments are a few bytes long, where `memchr`'s setup per call cost
/// more than the scan (callgrind).
pub(super) struct Target<'a> {
    pub(super) path: &'a str,
    pub(super) query: Option<&'a str>,
    pub(super) segments: [&'a str; MAX_SEGMENTS],
    pub(super) count: usize,
}

impl<'a> Target<'a> {
    pub(super) fn parse(target: &'a str) -> Option<Self> {
        let bytes = target.as_bytes();
        // Its own tight pass over a few dozen bytes: cheaper than a branch more in the loop below.
        if bytes.first() != Some(&b'/') || !bytes.iter().all(|&b| PLAIN[usize::from(b)]) {
            return None;
        }
        // One loop finds the slashes and where the path ends (at a `?`).
        let mut segments = [""; MAX_SEGMENTS];
        let mut count = 0;
        let mut start = 0;
        let mut end = bytes.len();
        for (at, &b) in bytes.iter().enumerate() {
            if b == b'/' {
                *segments.get_mut(count)? = &target[start..at];
                count += 1;
                start = at + 1;
            } else if b == b'?' {
                end = at;
                break;
            }
        }
        *segments.get_mut(count)? = &target[start..end];
        count += 1;
        let path = &target[..end];
        // Past the end when there is no `?`: None.
        let query = target.get(end + 1..);
        Some(Self {
            path,
            query,
            segments,
            count,
        })
    }

    pub(super) fn segments(&self) -> &[&'a str] {
        &self.segments[..self.count]
    }
}

/// [`Target::parse`]'s plain bytes, as a table: one load per byte on every proxied read.
static PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'/' | b'?'
                    | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        b += 1;
    }
    table
};

/// Finds where a chunked body ends, fed the body's bytes as they arrive.
#[derive(Debug, Default)]
pub(super) struct Chunks {
    state: State,
}

#[derive(Debug, Default, Clone, Copy)]
enum State {
    /// Reading a chunk's size (hex digits so far).
    #[default]
    Size,
    SizeValue(u64),
    /// Past the size: extensions or whitespace up to the CR.
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: at the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer line.
    TrailerLine,
    EndLf,
    Done,
}

/// A chunk size past this is not a body the BFF relays: 2^60 bytes.
const MAX_CHUNK: u64 = 1 << 60;

impl Chunks {
    /// Scans `bytes`, the body's next bytes; `Ok(Some(n))` when the body ends after the first
    /// `n` of them, `Ok(None)` when it goes on, `Err` when they are not a chunked body.
    pub(super) fn scan(&mut self, bytes: &[u8]) -> Result<Option<usize>, &'static str> {
        let mut at = 0;
        while at < bytes.len() {
            let b = bytes[at];
            self.state = match self.state {
                State::Size => match hex(b) {
                    Some(d) => State::SizeValue(u64::from(d)),
                    None => return Err("a chunk size must start with a hex digit"),
                },
                State::SizeValue(n) => match hex(b) {
                    Some(d) if n < MAX_CHUNK => State::SizeValue(n * 16 + u64::from(d)),
                    Some(_) => return Err("a chunk larger than the BFF relays"),
                    None if b == b'\r' => State::SizeLf(n),
                    None if matches!(b, b';' | b' ' | b'\t') => State::Extension(n),
                    None => return Err("a chunk size must be hex digits"),
                },
                State::Extension(n) => match b {
                    b'\r' => State::SizeLf(n),
                    b'\n' => return Err("a bare LF in a chunk's size line"),
                    _ => State::Extension(n),
                },
                State::SizeLf(n) => match (b, n) {
                    (b'\n', 0) => State::TrailerStart,
                    (b'\n', n) => State::Data(n),
                    _ => return Err("a chunk's size line must end with CRLF"),
                },
                State::Data(left) => {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - at);
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size,
                State::DataCr | State::DataLf => return Err("a chunk's data must end with CRLF"),
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    _ => State::TrailerLine,
                },
                State::TrailerLine => match b {
                    b'\n' => State::TrailerStart,
                    _ => State::TrailerLine,
                },
                State::EndLf if b == b'\n' => State::Done,
                State::EndLf => return Err("a chunked body must end with CRLF"),
                State::Done => return Ok(Some(at)),
            };
            at += 1;
            if let State::Done = self.state {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `name: value\r\n` with the name in lower case, as hyper writes every name.
pub(super) fn put_header_lower(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    // The services and browsers mostly send lower case already: copied as it is.
    if name.iter().any(u8::is_ascii_uppercase) {
        out.extend(name.iter().map(u8::to_ascii_lowercase));
    } else {
        out.extend_from_slice(name);
    }
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end_of(parts: &[&[u8]]) -> Result<Option<usize>, &'static str> {
        let mut chunks = Chunks::default();
        let mut seen = 0;
        for part in parts {
            if let Some(n) = chunks.scan(part)? {
                return Ok(Some(seen + n));
            }
            seen += part.len();
        }
        Ok(None)
    }

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers_however_it_is_split() {
        let body: &[u8] = b"5\r\nhello\r\n1a;name=value\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        assert_eq!(end_of(&[body]), Ok(Some(end)));
        for split in 1..body.len() {
            let (a, b) = body.split_at(split);
            assert_eq!(end_of(&[a, b]), Ok(Some(end)), "split at {split}");
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(end_of(&bytes), Ok(Some(end)));
    }

    #[test]
    fn an_unfinished_chunked_body_goes_on_and_a_malformed_one_is_refused() {
        assert_eq!(end_of(&[b"5\r\nhel"]), Ok(None));
        assert_eq!(end_of(&[b"0\r\n\r"]), Ok(None));
        assert!(end_of(&[b"zz\r\n"]).is_err());
        assert!(end_of(&[b"3\r\nabcX"]).is_err());
        assert!(end_of(&[b"3\nabc"]).is_err());
        assert!(end_of(&[b"fffffffffffffffffff\r\n"]).is_err());
    }

    #[test]
    fn a_target_is_taken_apart_into_path_query_and_segments() {
        let target = Target::parse("/api/products/42?limit=5&q=a/b").expect("plain");
        assert_eq!(target.path, "/api/products/42");
        assert_eq!(target.query, Some("limit=5&q=a/b"));
        assert_eq!(target.segments(), ["", "api", "products", "42"]);
        let root = Target::parse("/").expect("plain");
        assert_eq!(root.segments(), ["", ""]);
        assert_eq!(Target::parse("/a/").map(|t| t.count), Some(3));
        assert_eq!(
            Target::parse("/a?").map(|t| (t.path, t.query)),
            Some(("/a", Some("")))
        );
        assert_eq!(Target::parse("/a/b").map(|t| t.query), Some(None));
        assert_eq!(
            Target::parse("/a/b/c/d/e/f/g?h=/i/j/k").map(|t| t.count),
            Some(8)
        );
        assert!(Target::parse("/a/b/c/d/e/f/g/h/i").is_none());
        assert!(Target::parse("/a?b c").is_none());
        assert!(Target::parse("a/b").is_none());
    }

    #[test]
    fn only_plain_origin_form_targets_are_the_fronts() {
        assert!(Target::parse("/api/products/0191e0a4-6c61?limit=5&q=a%20b").is_some());
        assert!(Target::parse("*").is_none());
        assert!(Target::parse("http://example.com/api").is_none());
        assert!(Target::parse("/api/products#x").is_none());
        assert!(Target::parse("/api/pro ducts").is_none());
        assert!(Target::parse("/api/\"x\"").is_none());
    }

    #[test]
    fn hop_by_hop_names_match_in_any_case_and_connection_lists_split() {
        assert!(is_hop_by_hop(b"Keep-Alive"));
        assert!(!is_hop_by_hop(b"x-request-id"));
        let listed: Vec<&[u8]> = lab_http::tokens(b" close , x-secret,,").collect();
        assert_eq!(listed, [&b"close"[..], &b"x-secret"[..]]);
    }
}
