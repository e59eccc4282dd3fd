//! The catalog's HTTP API: products and inventory with ETags on every read and `If-Match` on
//! every write, product reads through the two-level cache (`X-Cache` says which level answered).

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lab_cache::{Source, TwoLevel, Versioned};
use lab_http::{Json, Path, Problem, Query};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::domain::{self, Currency, Invalid, ProductName, Sku};
use crate::occ;
use crate::products::{self, Inventory, NewProduct, Product, ProductChanges};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: sqlx::PgPool,
    pub cache: Arc<TwoLevel<CachedProduct>>,
    pub instance_id: Arc<str>,
    pub settings: Arc<crate::Settings>,
    pub http: reqwest::Client,
    /// This replica's own base URL, known once the listener is bound.
    pub self_url: Arc<std::sync::OnceLock<String>>,
    /// Checks identity's access tokens on the administrator's routes.
    pub verifier: lab_auth::Verifier,
    /// Who is an administrator: the `admin` role, or the break-glass token.
    pub admin: lab_auth::AdminGate,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/products", get(list_products).post(create_product))
        .route(
            "/products/{id}",
            get(get_product)
                .patch(update_product)
                .delete(delete_product),
        )
        .route(
            "/products/{id}/inventory",
            get(get_inventory).put(update_inventory),
        )
        .route("/cache/products/{id}", get(get_cache_state))
        .route("/invariants", get(crate::invariants::get_invariants))
        .merge(crate::demo::router())
        .with_state(state)
}

impl From<Invalid> for Problem {
    fn from(e: Invalid) -> Self {
        Problem::invalid_field(e.field, e.reason)
    }
}

/// A database failure: logged once here, answered as 503 (the database, not the request, is at fault).
pub fn db_problem(e: sqlx::Error) -> Problem {
    tracing::error!(error = %e, "database error");
    Problem::unavailable("postgres", lab_db::short_reason(&e))
}

fn product_not_found(id: Uuid) -> Problem {
    Problem::not_found(format!("no product {id}"))
}

/// A product as the cache holds it, with its JSON body rendered at most once per version:
/// a cached read then costs a lookup and a reference count, not a serialisation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CachedProduct {
    pub product: Product,
    #[serde(skip)]
    json: OnceLock<Bytes>,
    #[serde(skip)]
    etag: OnceLock<HeaderValue>,
}

impl CachedProduct {
    pub fn new(product: Product) -> Self {
        Self {
            product,
            json: OnceLock::new(),
            etag: OnceLock::new(),
        }
    }

    /// The JSON body, rendered on first use.
    pub fn json(&self) -> Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&self.product).unwrap_or_default()))
            .clone()
    }

    /// The `ETag` header value, built on first use.
    pub fn etag(&self) -> HeaderValue {
        self.etag
            .get_or_init(|| occ::etag_header(&self.product.xmin))
            .clone()
    }
}

/// Reads a product through the cache (or straight from the database when the cache is bypassed).
pub async fn read_product(
    state: &AppState,
    id: Uuid,
    single_flight: bool,
) -> Result<Option<(Arc<Versioned<CachedProduct>>, Source)>, Problem> {
    let pool = state.pool.clone();
    state
        .cache
        .get(
            id.hyphenated().encode_lower(&mut Uuid::encode_buffer()),
            single_flight,
            || async move {
                products::get(&pool, id)
                    .await
                    .map(|p| {
                        p.map(|p| Versioned {
                            version: p.version,
                            value: CachedProduct::new(p),
                        })
                    })
                    .map_err(|e| lab_db::short_reason(&e))
            },
        )
        .await
        .map_err(|reason| Problem::unavailable("postgres", reason))
}

fn with_etag(mut response: Response, xmin: &str, cache_control: &'static str) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::ETAG, occ::etag_header(xmin));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    response
}

/// Where a read came from: `l1`, `l2` or `db`.
pub static X_CACHE: axum::http::HeaderName = axum::http::HeaderName::from_static("x-cache");

/// Product representations may be cached by the browser but must be revalidated (cheap: 304).
const PRODUCT_CACHE_CONTROL: &str = "private, no-cache";
/// Stock moves with every order: never served from a browser cache without asking.
const INVENTORY_CACHE_CONTROL: &str = "no-store";

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Case-insensitive text in the name or SKU.
    q: Option<String>,
    /// 1-based page.
    page: Option<i64>,
    /// 1–100, default 20.
    per_page: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductPage {
    items: Vec<Product>,
    page: i64,
    per_page: i64,
    total: i64,
}

/// Lists products, paged, optionally filtered by text.
#[utoipa::path(get, path = "/products", tag = "catalog", params(ListQuery), responses(
    (status = 200, body = ProductPage), (status = 422, body = Problem)))]
pub async fn list_products(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, Problem> {
    let page = query.page.unwrap_or(1);
    let per_page = query.per_page.unwrap_or(20);
    if !(1..=10_000).contains(&page) {
        return Err(Problem::invalid_field("page", "between 1 and 10000"));
    }
    if !(1..=100).contains(&per_page) {
        return Err(Problem::invalid_field("per_page", "between 1 and 100"));
    }
    if query.q.as_ref().is_some_and(|q| q.chars().count() > 100) {
        return Err(Problem::invalid_field("q", "at most 100 characters"));
    }
    let q = query.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let (items, total) = products::list(&state.pool, q, per_page, (page - 1) * per_page)
        .await
        .map_err(db_problem)?;
    // The page's ETag covers every row on it: any write to one of them changes it.
    let tag = items.iter().fold(total as u64, |acc, p| {
        acc.wrapping_mul(31)
            .wrapping_add(p.xmin.parse::<u64>().unwrap_or(0))
            .wrapping_add(p.version as u64)
    });
    let response = Json(ProductPage {
        items,
        page,
        per_page,
        total,
    })
    .into_response();
    Ok(with_etag(response, &tag.to_string(), PRODUCT_CACHE_CONTROL))
}

/// One product, from L1, L2 or the database (`X-Cache`), with its ETag; 304 for a matching
/// `If-None-Match`.
#[utoipa::path(get, path = "/products/{id}", tag = "catalog", responses(
    (status = 200, body = Product), (status = 304), (status = 404, body = Problem)))]
pub async fn get_product(
    State(state): State<AppState>,
    ProductId(id): ProductId,
    if_none_match: IfNoneMatch,
) -> Result<Response, Problem> {
    product_response(&state, id, &if_none_match).await
}

/// `GET /products/{id}` served in front of the router (lab-http's fast path: the same
/// middleware, none of the routing work): the catalog's hottest request, every product page and
/// every price snapshot. Ids that are not UUIDs go to the routed [`get_product`] for its answer.
pub fn fast_product_reads(state: AppState) -> lab_http::FastRoute {
    lab_http::FastRoute {
        prefix: "/products/",
        template: "/products/{id}",
        accept: |segment| Uuid::try_parse(segment).is_ok(),
        handler: Arc::new(move |req: axum::extract::Request| {
            let state = state.clone();
            Box::pin(async move {
                let segment = req.uri().path().rsplit('/').next().unwrap_or_default();
                let Ok(id) = Uuid::try_parse(segment) else {
                    return product_not_found(Uuid::nil()).into_response();
                };
                let if_none_match = IfNoneMatch(req.headers().get(header::IF_NONE_MATCH).cloned());
                product_response(&state, id, &if_none_match)
                    .await
                    .into_response()
            })
        }),
    }
}

async fn product_response(
    state: &AppState,
    id: Uuid,
    if_none_match: &IfNoneMatch,
) -> Result<Response, Problem> {
    let (cached, source) = read_product(state, id, state.settings.single_flight)
        .await?
        .ok_or_else(|| product_not_found(id))?;
    let product = &cached.value;
    // Sized for every header this response will carry, the platform's included (content type,
    // length, ETag, cache control, X-Cache, request and instance ids): growing the map from its
    // default size was a few percent of a cached read (callgrind).
    let mut headers = HeaderMap::with_capacity(8);
    let mut response = if if_none_match.matches(&product.product.xmin) {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Response::new(axum::body::Body::from(product.json()))
    };
    headers.insert(X_CACHE.clone(), HeaderValue::from_static(source.as_str()));
    headers.insert(header::ETAG, product.etag());
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(PRODUCT_CACHE_CONTROL),
    );
    *response.headers_mut() = headers;
    Ok(response)
}

/// The `{id}` of `/products/{id}`, parsed straight from the URI path. axum's `Path` goes through
/// serde and collects the route's parameters on every request (a few percent of a cached read,
/// callgrind); a UUID needs none of that. Anything else (percent-encoded, malformed) takes the
/// `Path` extractor's way, so its problem+json answer is the same as every other route's.
pub struct ProductId(pub Uuid);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ProductId {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let last = parts.uri.path().rsplit('/').next().unwrap_or_default();
        if let Ok(id) = Uuid::try_parse(last) {
            return Ok(Self(id));
        }
        let Path(id) = Path::<Uuid>::from_request_parts(parts, state).await?;
        Ok(Self(id))
    }
}

/// The `If-None-Match` header alone (extracting the whole `HeaderMap` would copy it per read).
pub struct IfNoneMatch(Option<HeaderValue>);

impl IfNoneMatch {
    fn matches(&self, xmin: &str) -> bool {
        occ::not_modified(self.0.as_ref(), xmin)
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IfNoneMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(header::IF_NONE_MATCH).cloned()))
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    sku: String,
    name: String,
    #[serde(default)]
    description: String,
    price_minor: i64,
    currency: String,
    #[serde(default)]
    initial_stock: i64,
    #[serde(default)]
    demo: bool,
}

/// Creates a product and its stock (administrators only).
#[utoipa::path(post, path = "/products", tag = "catalog", request_body = CreateProduct, responses(
    (status = 201, body = Product), (status = 401, body = Problem), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_product(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateProduct>,
) -> Result<Response, Problem> {
    caller.require_admin("create products")?;
    let new = NewProduct {
        id: Uuid::now_v7(),
        sku: Sku::parse(&body.sku)?.as_str().to_owned(),
        name: ProductName::parse(&body.name)?.into_inner(),
        description: domain::parse_description(&body.description)?,
        price_minor: domain::parse_price(body.price_minor)?,
        currency: Currency::parse(&body.currency)?.as_str(),
        demo: body.demo,
        initial_stock: domain::parse_stock("initial_stock", body.initial_stock)?,
    };
    let product = products::create(&state.pool, &new)
        .await
        .map_err(db_problem)?
        .ok_or_else(|| {
            Problem::typed(StatusCode::CONFLICT, "duplicate-sku", "SKU already exists")
                .detail(format!("a product with SKU {} exists", new.sku))
        })?;
    let mut response = (StatusCode::CREATED, Json(&product)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/products/{}", product.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(with_etag(response, &product.xmin, PRODUCT_CACHE_CONTROL))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProduct {
    name: Option<String>,
    description: Option<String>,
    price_minor: Option<i64>,
    currency: Option<String>,
}

/// Why a conditional write matched no row: gone, not the caller's to change, or stale.
async fn explain_miss(state: &AppState, id: Uuid, caller: &Caller) -> Problem {
    match products::get(&state.pool, id).await {
        Ok(None) => product_not_found(id),
        Ok(Some(current)) if !current.demo && !caller.admin => forbidden_edit(),
        Ok(Some(current)) => {
            let xmin = current.xmin.clone();
            occ::stale(current, &xmin)
        }
        Err(e) => db_problem(e),
    }
}

fn forbidden_edit() -> Problem {
    Problem::new(StatusCode::FORBIDDEN)
        .detail("only demo products may be changed without the administrator role")
}

/// Checks the caller may change product `id` before the conditional write.
async fn authorize_edit(state: &AppState, id: Uuid, caller: &Caller) -> Result<(), Problem> {
    if caller.admin {
        return Ok(());
    }
    match products::get(&state.pool, id).await.map_err(db_problem)? {
        None => Err(product_not_found(id)),
        Some(p) if !p.demo => Err(forbidden_edit()),
        Some(_) => Ok(()),
    }
}

/// Changes a product if `If-Match` still names its current version: 428 without it, 412 with
/// the current row when another write got there first.
#[utoipa::path(patch, path = "/products/{id}", tag = "catalog", request_body = UpdateProduct, responses(
    (status = 200, body = Product), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
pub async fn update_product(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<UpdateProduct>,
) -> Result<Response, Problem> {
    let xmins = occ::if_match(&headers)?;
    let changes = ProductChanges {
        name: body
            .name
            .as_deref()
            .map(ProductName::parse)
            .transpose()?
            .map(ProductName::into_inner),
        description: body
            .description
            .as_deref()
            .map(domain::parse_description)
            .transpose()?,
        price_minor: body.price_minor.map(domain::parse_price).transpose()?,
        currency: body
            .currency
            .as_deref()
            .map(Currency::parse)
            .transpose()?
            .map(Currency::as_str),
    };
    authorize_edit(&state, id, &caller).await?;
    let Some(product) = products::update(&state.pool, id, &xmins, &changes)
        .await
        .map_err(db_problem)?
    else {
        return Err(explain_miss(&state, id, &caller).await);
    };
    state
        .cache
        .invalidate(&id.to_string(), product.version)
        .await;
    let response = Json(&product).into_response();
    Ok(with_etag(response, &product.xmin, PRODUCT_CACHE_CONTROL))
}

/// Deletes a product and its stock (administrators only), if `If-Match` is current.
#[utoipa::path(delete, path = "/products/{id}", tag = "catalog", responses(
    (status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 412, body = Problem), (status = 428, body = Problem)))]
pub async fn delete_product(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    caller.require_admin("delete products")?;
    let xmins = occ::if_match(&headers)?;
    if !products::delete(&state.pool, id, &xmins)
        .await
        .map_err(db_problem)?
    {
        return Err(explain_miss(&state, id, &caller).await);
    }
    // A deleted row's version is unknown here; i64::MAX keeps any in-flight load out for good.
    state.cache.invalidate(&id.to_string(), i64::MAX).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A product's stock with its ETag.
#[utoipa::path(get, path = "/products/{id}/inventory", tag = "catalog", responses(
    (status = 200, body = Inventory), (status = 404, body = Problem)))]
pub async fn get_inventory(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Response, Problem> {
    let inventory = products::inventory(&state.pool, id)
        .await
        .map_err(db_problem)?
        .ok_or_else(|| product_not_found(id))?;
    let xmin = inventory.xmin.clone();
    Ok(with_etag(
        Json(inventory).into_response(),
        &xmin,
        INVENTORY_CACHE_CONTROL,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetInventory {
    /// Units free to reserve; the difference to the current value counts as received.
    on_hand: i64,
}

/// Sets the free stock if `If-Match` is current (the race demo's write).
#[utoipa::path(put, path = "/products/{id}/inventory", tag = "catalog", request_body = SetInventory, responses(
    (status = 200, body = Inventory), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    (status = 412, body = Problem), (status = 422, body = Problem), (status = 428, body = Problem)))]
pub async fn update_inventory(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    caller: Caller,
    headers: HeaderMap,
    Json(body): Json<SetInventory>,
) -> Result<Response, Problem> {
    let xmins = occ::if_match(&headers)?;
    let on_hand = domain::parse_stock("on_hand", body.on_hand)?;
    authorize_edit(&state, id, &caller).await?;
    match products::set_on_hand(&state.pool, id, &xmins, on_hand)
        .await
        .map_err(db_problem)?
    {
        Some(inventory) => {
            let xmin = inventory.xmin.clone();
            Ok(with_etag(
                Json(inventory).into_response(),
                &xmin,
                INVENTORY_CACHE_CONTROL,
            ))
        }
        None => match products::inventory(&state.pool, id)
            .await
            .map_err(db_problem)?
        {
            None => Err(product_not_found(id)),
            Some(current) => {
                let xmin = current.xmin.clone();
                Err(occ::stale(current, &xmin))
            }
        },
    }
}

/// What this replica's cache holds for a product.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CacheState {
    pub instance: String,
    /// Version in this replica's L1, if any.
    pub l1_version: Option<i64>,
    /// Version in L2 (Redis), if any.
    pub l2_version: Option<i64>,
    /// Whether this replica hears other replicas' invalidations.
    pub subscribed: bool,
}

/// This replica's L1 and the shared L2 for one product (the cache demo shows both replicas).
#[utoipa::path(get, path = "/cache/products/{id}", tag = "catalog", responses((status = 200, body = CacheState)))]
pub async fn get_cache_state(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Json<CacheState> {
    Json(cache_state(&state, id).await)
}

pub async fn cache_state(state: &AppState, id: Uuid) -> CacheState {
    let key = id.to_string();
    CacheState {
        instance: state.instance_id.to_string(),
        l1_version: state.cache.peek_l1(&key).map(|e| e.version),
        l2_version: state
            .cache
            .peek_l2(&key)
            .await
            .ok()
            .flatten()
            .map(|e| e.version),
        subscribed: state.cache.subscribed(),
    }
}
