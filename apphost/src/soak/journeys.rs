//! What the soak's buyers do, through the BFF's public API only (and the PSP's sandbox page,
//! where a real buyer's browser would go): each journey is a new visitor with its own session,
//! who places an order with an `Idempotency-Key` (retrying with the same key when the answer does
//! not come or is an error), pays or declines on the PSP, and follows the order to its final
//! state. Kinds: a plain order (approved), a declined payment, the same order sent five times
//! with one key (sequentially and at once: one order id), and two buyers racing for a demo
//! product's last unit (at most one completed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::traffic::{Traffic, Visitor};

/// The product plain orders buy: a demo product, which a visitor may restock.
pub const ORDER_SKU: &str = "DEMO-RACE";
/// The product of the last-unit race.
pub const LAST_UNIT_SKU: &str = "DEMO-LAST-UNIT";
/// How long a buyer keeps retrying one placement with its key. An answer lost after the order
/// was committed (a 504, a breaker opening) leaves an order only this key can find again; a
/// buyer who gave up after seconds would leave it pending until the payment deadline (15 min),
/// as the first 10-minute soak showed (docs/soak/).
const PLACE_WITHIN: Duration = Duration::from_secs(150);
/// How long a journey follows its order before calling it not final: the saga's own step
/// timeouts are seconds and broker retry queues reach 25 s, but a cluster that fell behind
/// during chaos (a debug build on a busy machine) may take minutes to drain its queues; a buyer
/// who gave up before paying would leave the order pending until the payment deadline.
const FOLLOW_WITHIN: Duration = Duration::from_secs(180);
/// First and longest pause between two looks at an order: a healthy saga finishes in well under
/// a second; a buyer waiting out a fault looks every few seconds, as a person would.
const POLL_FIRST: Duration = Duration::from_millis(400);
const POLL_MAX: Duration = Duration::from_secs(3);
/// Identical requests in the retry journey: in sequence, then at once (the orders bucket holds
/// five per session).
const RETRIES: usize = 3;
const AT_ONCE: usize = 2;

/// The kinds of journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Order,
    Declined,
    IdempotentRetry,
    LastUnitRace,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Order => "order",
            Kind::Declined => "declined",
            Kind::IdempotentRetry => "idempotent-retry",
            Kind::LastUnitRace => "last-unit-race",
        }
    }

    /// Draws a kind: mostly plain orders, the rest spread over the others.
    pub fn draw(rng: &mut impl Rng) -> Self {
        match rng.random_range(0..100) {
            0..60 => Kind::Order,
            60..72 => Kind::Declined,
            72..88 => Kind::IdempotentRetry,
            _ => Kind::LastUnitRace,
        }
    }
}

/// How one journey went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: Kind,
    /// The order ids it got, each with its final status (`None`: not final in time).
    pub orders: Vec<(String, Option<String>)>,
    /// Placements that never got an order id.
    pub unplaced: u32,
    /// Why it did not go as planned (expected under chaos).
    pub trouble: Option<String>,
    /// A broken promise the client itself saw (two orders for one key, an oversold unit).
    pub violation: Option<String>,
}

impl Outcome {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            orders: Vec::new(),
            unplaced: 0,
            trouble: None,
            violation: None,
        }
    }
}

/// What journeys share.
pub struct Shop {
    pub traffic: Traffic,
    pub bff: String,
    pub order_product: String,
    pub last_unit_product: String,
    /// One last-unit race at a time (each sets the stock to one unit).
    race: tokio::sync::Mutex<()>,
}

impl Shop {
    /// Finds the demo products through the public catalog.
    pub async fn open(traffic: Traffic, bff: &str) -> anyhow::Result<Arc<Self>> {
        let mut visitor = Visitor::new(&traffic, bff);
        let mut find = async |sku: &str| -> anyhow::Result<String> {
            let page = visitor
                .get(&format!("/api/products?q={sku}&per_page=100"))
                .await
                .map_err(|e| anyhow::anyhow!("listing products: {e}"))?;
            page.body["items"]
                .as_array()
                .and_then(|items| items.iter().find(|p| p["sku"] == sku))
                .and_then(|p| p["id"].as_str())
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("no product {sku} in the catalog ({})", page.status))
        };
        let order_product = find(ORDER_SKU).await?;
        let last_unit_product = find(LAST_UNIT_SKU).await?;
        Ok(Arc::new(Self {
            traffic,
            bff: bff.to_owned(),
            order_product,
            last_unit_product,
            race: tokio::sync::Mutex::new(()),
        }))
    }

    /// Sets `product`'s free stock to `on_hand` if it is below `below` (ETag + If-Match, a few
    /// tries when another writer wins); whether it wrote.
    pub async fn restock(&self, product: &str, below: i64, on_hand: i64) -> Result<bool, String> {
        let mut visitor = Visitor::new(&self.traffic, &self.bff);
        let path = format!("/api/products/{product}/inventory");
        for _ in 0..5 {
            let current = visitor.get(&path).await?;
            if !current.status.is_success() {
                return Err(format!("reading stock: {}", current.status));
            }
            if current.body["on_hand"].as_i64().unwrap_or(0) >= below {
                return Ok(false);
            }
            let etag = current.etag.ok_or("no ETag on the stock")?;
            let put = visitor
                .call(
                    Method::PUT,
                    &path,
                    Some(&json!({ "on_hand": on_hand })),
                    &[("if-match", &etag)],
                )
                .await?;
            if put.status.is_success() {
                return Ok(true);
            }
            if put.status != StatusCode::PRECONDITION_FAILED {
                return Err(format!("setting stock: {}", put.status));
            }
        }
        Err("five writes in a row lost the race".into())
    }

    /// Runs one journey of `kind`.
    pub async fn run(&self, kind: Kind) -> Outcome {
        match kind {
            Kind::Order | Kind::Declined => self.order(kind).await,
            Kind::IdempotentRetry => self.idempotent_retry().await,
            Kind::LastUnitRace => match self.race.try_lock() {
                Ok(_guard) => self.last_unit_race().await,
                // A race is running: this buyer places a plain order instead.
                Err(_) => self.order(Kind::Order).await,
            },
        }
    }

    async fn order(&self, kind: Kind) -> Outcome {
        let mut out = Outcome::new(kind);
        let mut visitor = Visitor::new(&self.traffic, &self.bff);
        // A visitor looks at the product first (and gets its session there).
        let _ = visitor
            .get(&format!("/api/products/{}", self.order_product))
            .await;
        let key = Uuid::now_v7().to_string();
        match place(&mut visitor, &self.order_product, &key).await {
            Ok(id) => {
                let approve = kind != Kind::Declined;
                let (status, trouble) = follow(&mut visitor, &id, Some(approve)).await;
                out.trouble = trouble;
                out.orders.push((id, status));
            }
            Err(e) => {
                out.unplaced = 1;
                out.trouble = Some(e);
            }
        }
        out
    }

    async fn idempotent_retry(&self) -> Outcome {
        let mut out = Outcome::new(Kind::IdempotentRetry);
        let mut visitor = Visitor::new(&self.traffic, &self.bff);
        let _ = visitor
            .get(&format!("/api/products/{}", self.order_product))
            .await;
        let key = Uuid::now_v7().to_string();
        let mut ids = Vec::new();
        for _ in 0..RETRIES {
            match place(&mut visitor, &self.order_product, &key).await {
                Ok(id) => ids.push(id),
                Err(e) => out.trouble = Some(e),
            }
        }
        // The same key at once from the same session: one answers, the others replay it or
        // are told it is in flight (409) and retry.
        let cookie_holder = &visitor;
        let together = futures::future::join_all((0..AT_ONCE).map(|_| async {
            let mut twin = cookie_holder.twin();
            place(&mut twin, &self.order_product, &key).await
        }))
        .await;
        for r in together {
            match r {
                Ok(id) => ids.push(id),
                Err(e) => out.trouble = Some(e),
            }
        }
        let mut distinct: Vec<&String> = ids.iter().collect();
        distinct.sort();
        distinct.dedup();
        if distinct.len() > 1 {
            out.violation = Some(format!(
                "one Idempotency-Key ({key}) gave {} orders: {distinct:?}",
                distinct.len()
            ));
        }
        match distinct.first() {
            Some(id) => {
                let id = (*id).clone();
                let (status, trouble) = follow(&mut visitor, &id, Some(true)).await;
                out.trouble = out.trouble.or(trouble);
                out.orders.push((id, status));
            }
            None => out.unplaced = 1,
        }
        out
    }

    async fn last_unit_race(&self) -> Outcome {
        let mut out = Outcome::new(Kind::LastUnitRace);
        if let Err(e) = self.restock(&self.last_unit_product, 2, 1).await {
            out.trouble = Some(format!("setting the last unit: {e}"));
            return out;
        }
        let buyer = || async {
            let mut visitor = Visitor::new(&self.traffic, &self.bff);
            let key = Uuid::now_v7().to_string();
            let placed = place(&mut visitor, &self.last_unit_product, &key).await;
            match placed {
                Ok(id) => {
                    let (status, trouble) = follow(&mut visitor, &id, Some(true)).await;
                    (Some((id, status)), trouble)
                }
                Err(e) => (None, Some(e)),
            }
        };
        let (one, two) = tokio::join!(buyer(), buyer());
        for (order, trouble) in [one, two] {
            match order {
                Some(o) => out.orders.push(o),
                None => out.unplaced += 1,
            }
            out.trouble = out.trouble.take().or(trouble);
        }
        let completed = out
            .orders
            .iter()
            .filter(|(_, s)| s.as_deref() == Some("Completed"))
            .count();
        if completed > 1 {
            out.violation = Some(format!(
                "{completed} orders completed for one unit: {:?}",
                out.orders
            ));
        }
        out
    }
}

/// Places one order of one unit of `product` with `key`, retrying with the same key while the
/// answer is missing, an error, 429 or 409 (the first is still in flight); the order id.
async fn place(visitor: &mut Visitor, product: &str, key: &str) -> Result<String, String> {
    let body = json!({ "lines": [{ "product_id": product, "quantity": 1 }], "provider": "stripe" });
    let mut last = String::new();
    let deadline = Instant::now() + PLACE_WITHIN;
    let mut attempt = 0u32;
    while attempt == 0 || Instant::now() < deadline {
        attempt += 1;
        if attempt > 1 {
            // 0.5, 1, 2, 4, 8, 8… s: long enough to outlast a short fault.
            let backoff = Duration::from_millis(500 << (attempt - 2).min(4));
            let jitter = rand::rng().random_range(0..250);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        }
        match visitor
            .call(
                Method::POST,
                "/api/orders",
                Some(&body),
                &[("idempotency-key", key)],
            )
            .await
        {
            Ok(a) if a.status.is_success() => {
                return a.body["order_id"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{} without an order_id", a.status));
            }
            Ok(a)
                if a.status.is_server_error()
                    || a.status == StatusCode::TOO_MANY_REQUESTS
                    || a.status == StatusCode::CONFLICT =>
            {
                last = format!("POST /api/orders answered {}", a.status);
            }
            Ok(a) => {
                return Err(format!(
                    "POST /api/orders answered {}: {}",
                    a.status, a.body["detail"]
                ));
            }
            Err(e) => last = format!("POST /api/orders: {e}"),
        }
    }
    Err(format!(
        "{last} ({attempt} tries with one key over {PLACE_WITHIN:?})"
    ))
}

const TERMINAL: [&str; 4] = ["Completed", "Rejected", "Cancelled", "RequiresReview"];

/// Follows order `id` until it is final, acting as the buyer on the PSP once its payment session
/// is open (`approve`, or decline); its final status and any trouble on the way. Until the buyer
/// has acted it watches the payment (a buyer waits for the payment page, not for orders to hear
/// of it), then the order; one call per look, looks spaced further apart while nothing changes,
/// so hundreds of buyers waiting out a fault do not become the next fault.
async fn follow(
    visitor: &mut Visitor,
    id: &str,
    mut act: Option<bool>,
) -> (Option<String>, Option<String>) {
    let deadline = Instant::now() + FOLLOW_WITHIN;
    let mut wait = POLL_FIRST;
    let mut trouble = None;
    let mut looks = 0u32;
    while Instant::now() < deadline {
        tokio::time::sleep(wait).await;
        wait = (wait * 3 / 2).min(POLL_MAX);
        looks += 1;
        // Every third look the order too: it may have ended without a payment (no stock).
        if let Some(approve) = act
            && !looks.is_multiple_of(3)
        {
            match pay(visitor, id, approve).await {
                Ok(true) => {
                    act = None;
                    wait = POLL_FIRST;
                }
                Ok(false) => {}
                Err(e) => trouble = Some(e),
            }
            continue;
        }
        match visitor.get(&format!("/api/orders/{id}")).await {
            Ok(a) if a.status.is_success() => {
                if let Some(status) = a.body["status"].as_str()
                    && TERMINAL.contains(&status)
                {
                    return (Some(status.to_owned()), trouble);
                }
            }
            Ok(a) => trouble = Some(format!("GET /api/orders/{{id}} answered {}", a.status)),
            Err(e) => trouble = Some(e),
        }
    }
    (None, Some(format!("not final within {FOLLOW_WITHIN:?}")))
}

/// The buyer's choice on the PSP's sandbox page for order `id`'s payment session: `Ok(true)`
/// once made, `Ok(false)` while there is no session to act on yet.
async fn pay(visitor: &mut Visitor, id: &str, approve: bool) -> Result<bool, String> {
    let p = visitor.get(&format!("/api/payments/{id}")).await?;
    if p.status == StatusCode::NOT_FOUND {
        return Ok(false);
    }
    if !p.status.is_success() {
        return Err(format!("GET /api/payments/{{id}} answered {}", p.status));
    }
    let (Some(session), Some(url)) = (
        p.body["session_id"].as_str(),
        p.body["payment_url"].as_str(),
    ) else {
        return Ok(false);
    };
    let Some((psp, _)) = url.rsplit_once("/pay/") else {
        return Err(format!("unexpected payment_url {url}"));
    };
    let verb = if approve { "approve" } else { "decline" };
    let action = format!("{psp}/sandbox/sessions/{session}/{verb}");
    match visitor.call(Method::POST, &action, None, &[]).await? {
        // Done, or already decided (an earlier try whose answer was lost).
        a if a.status.is_success() || a.status.is_client_error() => Ok(true),
        a => Err(format!("the PSP's {verb} answered {}", a.status)),
    }
}

/// Journeys by kind, orders by final state, client-side violations.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Tally {
    /// Per kind: started, as planned, with trouble.
    pub journeys: BTreeMap<String, KindTally>,
    /// Orders by final state; `not final` when a journey gave up following.
    pub orders: BTreeMap<String, u64>,
    /// Placements that got no order id after every retry.
    pub unplaced: u64,
    /// What the client saw broken.
    pub violations: Vec<String>,
    /// The most frequent troubles, with counts.
    pub troubles: BTreeMap<String, u64>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct KindTally {
    pub runs: u64,
    pub clean: u64,
    pub with_trouble: u64,
}

impl Tally {
    pub fn add(&mut self, o: &Outcome) {
        let k = self.journeys.entry(o.kind.as_str().to_owned()).or_default();
        k.runs += 1;
        if o.trouble.is_some() {
            k.with_trouble += 1;
        } else {
            k.clean += 1;
        }
        for (_, status) in &o.orders {
            let key = status.clone().unwrap_or_else(|| "not final".into());
            *self.orders.entry(key).or_default() += 1;
        }
        self.unplaced += u64::from(o.unplaced);
        if let Some(v) = &o.violation {
            self.violations.push(format!("{}: {v}", o.kind.as_str()));
        }
        if let Some(t) = &o.trouble {
            // Ids and numbers vary; the shape of the message is what repeats.
            let shape: String = t
                .split_whitespace()
                .map(|w| {
                    if w.chars().any(|c| c.is_ascii_digit()) && w.len() > 8 {
                        "…"
                    } else {
                        w
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            let shape: String = shape.chars().take(140).collect();
            *self.troubles.entry(shape).or_default() += 1;
        }
    }
}
