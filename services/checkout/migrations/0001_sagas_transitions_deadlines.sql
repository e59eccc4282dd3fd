-- The checkout saga's durable state: one row per order's saga, its append-only history, and the
-- deadline it is waiting on (ARCHITECTURE.md §5). Completed sagas are kept with their history.

CREATE TABLE sagas (
    order_id       uuid PRIMARY KEY,
    state          text NOT NULL CHECK (state IN (
                       'Initiated', 'StockReserved', 'PaymentSessionCreated', 'PaymentAuthorized',
                       'Captured', 'Completed', 'Rejected', 'Cancelled', 'RequiresReview')),
    -- Bumped by every transition: writers compare-and-set on it (optimistic concurrency).
    version        bigint NOT NULL DEFAULT 1,
    total_minor    bigint NOT NULL CHECK (total_minor >= 0),
    currency       text NOT NULL,
    -- Which PSP the customer chose (`stripe`, `paypal`).
    provider       text NOT NULL,
    customer       text NOT NULL,
    -- The order's lines as placed: [{product_id, quantity, unit_price_minor}], sent with ReserveStock.
    lines          jsonb NOT NULL,
    refund_issued  boolean NOT NULL DEFAULT false,
    commit_retries smallint NOT NULL DEFAULT 0 CHECK (commit_retries >= 0),
    -- The order's flow (OrderPlaced's correlation id): commands a deadline issues join it too.
    correlation_id uuid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- The admin list filters by state, newest first.
CREATE INDEX sagas_by_state ON sagas (state, updated_at DESC);

-- Every event the saga saw, applied or ignored, in order.
CREATE TABLE saga_transitions (
    order_id   uuid NOT NULL REFERENCES sagas (order_id),
    seq        integer NOT NULL CHECK (seq >= 1),
    -- NULL for the transition that started the saga.
    from_state text,
    to_state   text NOT NULL,
    -- The saga event (`StockReserved`, `Timeout`, …) or `OrderPlaced`.
    event      text NOT NULL,
    -- The event with its data (amounts, reasons, the state a timeout was for).
    detail     jsonb NOT NULL DEFAULT '{}',
    -- The message that caused it; for a deadline, the id its commands name as their cause.
    message_id uuid NOT NULL,
    -- Commands issued on this step, by name.
    commands   text[] NOT NULL DEFAULT '{}',
    -- Why the event changed nothing (late, duplicate, out of order); NULL when it applied.
    ignored    text,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (order_id, seq)
);

-- At most one pending deadline per saga: the one of the state it is in. Rows, not delayed
-- messages, so they survive restarts; the poller claims due ones with SKIP LOCKED.
CREATE TABLE saga_deadlines (
    order_id uuid PRIMARY KEY REFERENCES sagas (order_id),
    state    text NOT NULL,
    due_at   timestamptz NOT NULL
);

CREATE INDEX saga_deadlines_due ON saga_deadlines (due_at);
