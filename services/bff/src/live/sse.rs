//! `GET /api/events`: Server-Sent Events with a `retry:` hint, heartbeats, `Last-Event-ID` resume
//! (on any replica, because ids are the shared stream's), a backfill on connect (the latest
//! health, metrics and chaos snapshots and the last console lines), topic filters, and other
//! visitors' private events (their demo steps, their keys) never shown.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use lab_contracts::live::LiveBody;
use lab_http::Problem;
use serde::Deserialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use super::{Backplane, Delivered};
use crate::AppState;
use crate::session::Visitor;

/// Tells the browser to reconnect after this long (it sends `Last-Event-ID` when it does).
const RETRY: Duration = Duration::from_secs(3);
/// A comment line this often keeps proxies and the browser from timing an idle stream out.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Console lines replayed to a new viewer.
const CONSOLE_BACKFILL: usize = 200;
/// Entries scanned for them (the stream interleaves every kind).
const BACKFILL_SCAN: usize = 2_000;
/// Most events replayed on a resume or after falling behind.
const RESUME_LIMIT: usize = 5_000;

/// `GET /api/events` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct EventsQuery {
    /// Comma-separated kinds to receive (`health,saga`); every kind when absent.
    pub topics: Option<String>,
    /// Resume after this event id, for clients that cannot set `Last-Event-ID`.
    pub last_event_id: Option<String>,
}

/// The live event stream.
#[utoipa::path(get, path = "/api/events", tag = "bff", params(EventsQuery),
    responses(
        (status = 200, description = "text/event-stream of live events; `event:` is the kind, `id:` resumable", content_type = "text/event-stream"),
        (status = 422, description = "an unknown topic", body = lab_http::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_events(
    State(state): State<AppState>,
    visitor: Option<Extension<Visitor>>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Response {
    let topics = match parse_topics(query.topics.as_deref()) {
        Ok(t) => t,
        Err(problem) => return problem.into_response(),
    };
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(query.last_event_id);
    let viewer = Viewer::connect(
        state.live.clone(),
        visitor.map(|Extension(v)| v.session.to_string()),
        topics,
        resume.as_deref(),
    )
    .await;
    let retry = futures::stream::once(async { Ok(Event::default().retry(RETRY)) });
    Sse::new(futures::StreamExt::chain(retry, viewer.into_stream()))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response()
}

/// `None` for every kind; an unknown kind is a 422 naming the known ones.
fn parse_topics(topics: Option<&str>) -> Result<Option<HashSet<&'static str>>, Problem> {
    let Some(topics) = topics.filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    let mut set = HashSet::new();
    for topic in topics.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match LiveBody::KINDS.iter().find(|k| **k == topic) {
            Some(kind) => set.insert(*kind),
            None => {
                return Err(Problem::invalid_field(
                    "topics",
                    format!(
                        "`{topic}` is not a live event kind; known kinds: {}",
                        LiveBody::KINDS.join(", ")
                    ),
                ));
            }
        };
    }
    Ok(Some(set))
}

/// One connected viewer: what it may see, what it has been sent, what is queued for it.
struct Viewer {
    backplane: Backplane,
    /// Live events, subscribed before the backfill was read so nothing falls in between.
    live: broadcast::Receiver<Arc<Delivered>>,
    /// Backfill and resync batches, sent before anything newer.
    pending: VecDeque<Arc<Delivered>>,
    /// The last stream id sent (or backfilled), to skip repeats and to resync from.
    last: Option<StreamId>,
    session: Option<String>,
    topics: Option<HashSet<&'static str>>,
}

impl Viewer {
    async fn connect(
        backplane: Backplane,
        session: Option<String>,
        topics: Option<HashSet<&'static str>>,
        resume: Option<&str>,
    ) -> Self {
        let live = backplane.subscribe();
        let mut pending = VecDeque::new();
        let resumed = match resume {
            Some(id) => backplane.after(id, RESUME_LIMIT).await,
            None => None,
        };
        let last = match resumed {
            Some(missed) => {
                pending.extend(missed);
                resume.and_then(StreamId::parse)
            }
            None => {
                let recent = backplane.recent(BACKFILL_SCAN).await;
                let console: Vec<_> = recent.into_iter().filter(|e| e.kind == "console").collect();
                let skip = console.len().saturating_sub(CONSOLE_BACKFILL);
                let mut backfill: Vec<_> = backplane.snapshots();
                backfill.extend(console.into_iter().skip(skip));
                // Oldest first (local ids last), so the ids sent only ever grow and a live event
                // already sent in the backfill is recognised and skipped.
                backfill
                    .sort_by_key(|e| StreamId::parse(&e.id).map_or((1, None), |id| (0, Some(id))));
                pending.extend(backfill);
                None
            }
        };
        Self {
            backplane,
            live,
            pending,
            last,
            session,
            topics,
        }
    }

    fn wants(&self, event: &Delivered) -> bool {
        event.visible_to(self.session.as_deref())
            && self.topics.as_ref().is_none_or(|t| t.contains(event.kind))
    }

    /// The next event to send; `None` when the stream ends (the process is stopping).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                let id = StreamId::parse(&event.id);
                // A live event already sent as part of the backfill or a resync.
                if let (Some(id), Some(last)) = (id, self.last)
                    && id <= last
                    && !event.snapshot
                {
                    continue;
                }
                if let Some(id) = id {
                    self.last = Some(self.last.map_or(id, |l| l.max(id)));
                }
                if self.wants(&event) {
                    return Some(
                        Event::default()
                            .id(event.id.clone())
                            .event(event.kind)
                            .data(event.json.clone()),
                    );
                }
                continue;
            }
            match self.live.recv().await {
                Ok(event) => self.pending.push_back(event),
                Err(RecvError::Lagged(_)) => {
                    // Fell behind the fan-out: read what was missed from the stream itself.
                    let missed = match self.last {
                        Some(last) => self.backplane.after(&last.to_string(), RESUME_LIMIT).await,
                        None => None,
                    };
                    self.pending.extend(missed.unwrap_or_default());
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut viewer| async move {
            viewer.next().await.map(|e| (Ok(e), viewer))
        })
    }
}

/// A Redis stream id, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId(u64, u64);

impl StreamId {
    fn parse(id: &str) -> Option<Self> {
        let (ms, seq) = id.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        let a = StreamId::parse("1700000000000-5").unwrap();
        let b = StreamId::parse("1700000000000-12").unwrap();
        let c = StreamId::parse("1700000000001-0").unwrap();
        assert!(a < b && b < c);
        assert_eq!(StreamId::parse("local-3"), None);
        assert_eq!(b.to_string(), "1700000000000-12");
    }

    #[test]
    fn an_unknown_topic_is_refused_and_known_ones_are_kept() {
        assert!(parse_topics(Some("health,nope")).is_err());
        let topics = parse_topics(Some("health, saga")).unwrap().unwrap();
        assert!(topics.contains("health") && topics.contains("saga") && topics.len() == 2);
        assert!(parse_topics(Some(" ")).unwrap().is_none());
    }
}
