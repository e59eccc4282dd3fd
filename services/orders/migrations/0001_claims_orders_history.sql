-- Idempotency claims: one row per (scope, key), so "one claim per key" is the primary key.
-- `scope` keeps the public claims API (`claims`) apart from order placement (`order:<customer>`),
-- so nobody can squat another customer's Idempotency-Key through POST /claims.
CREATE TABLE claims (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    -- Changes only when an expired claim is taken again.
    claim_id   UUID NOT NULL UNIQUE,
    claimed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, key)
);

-- Orders, written in the same transaction as their claim and their OrderPlaced outbox row.
CREATE TABLE orders (
    id              UUID PRIMARY KEY,
    customer        TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    -- The claim that created it: a repeat of the key finds the order through it.
    claim_id        UUID NOT NULL UNIQUE,
    status          TEXT NOT NULL DEFAULT 'Pending'
                    CHECK (status IN ('Pending', 'Completed', 'Rejected', 'Cancelled', 'RequiresReview')),
    provider        TEXT NOT NULL CHECK (provider IN ('stripe', 'paypal')),
    currency        TEXT NOT NULL,
    total_minor     BIGINT NOT NULL CHECK (total_minor >= 0),
    placed_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- When the saga's terminal transition set the final status.
    finished_at     TIMESTAMPTZ
);
CREATE INDEX orders_by_customer ON orders (customer, placed_at DESC);

-- Lines with the prices snapshotted from catalog when the order was placed.
CREATE TABLE order_lines (
    order_id         UUID NOT NULL REFERENCES orders (id),
    line_no          INT NOT NULL,
    product_id       UUID NOT NULL,
    name             TEXT NOT NULL,
    quantity         INT NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    unit_price_minor BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    PRIMARY KEY (order_id, line_no)
);

-- Every saga transition orders has seen, keyed by the message that reported it (a replay is a no-op).
CREATE TABLE order_history (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id      UUID NOT NULL REFERENCES orders (id),
    message_id    UUID NOT NULL UNIQUE,
    from_state    TEXT NOT NULL,
    to_state      TEXT NOT NULL,
    event         TEXT NOT NULL,
    terminal      BOOLEAN NOT NULL,
    compensations TEXT[] NOT NULL DEFAULT '{}',
    occurred_at   TIMESTAMPTZ NOT NULL,
    recorded_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX order_history_by_order ON order_history (order_id, occurred_at, id);
