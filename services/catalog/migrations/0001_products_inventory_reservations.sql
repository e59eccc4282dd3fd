-- Products, their stock, and per-order reservations.
--
-- Stock is conserved at every instant: received = on_hand + reserved + sold, where `received`
-- counts every unit ever put into stock (the initial quantity and each restock or correction).
-- The CHECK constraints make a negative count impossible whatever the code does.

CREATE TABLE products (
    id          uuid PRIMARY KEY,
    sku         text NOT NULL UNIQUE CHECK (sku ~ '^[A-Z0-9][A-Z0-9-]{1,63}$'),
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 120),
    description text NOT NULL DEFAULT '' CHECK (char_length(description) <= 2000),
    price_minor bigint NOT NULL CHECK (price_minor >= 0),
    currency    char(3) NOT NULL,
    -- Demo products may be edited by any visitor; the rest only by an administrator.
    demo        boolean NOT NULL DEFAULT false,
    -- Bumped by every write; orders cache entries and invalidations (xmin is not monotonic).
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX products_name_search ON products (lower(name) text_pattern_ops);

CREATE TABLE inventory (
    product_id uuid PRIMARY KEY REFERENCES products (id) ON DELETE CASCADE,
    on_hand    integer NOT NULL CHECK (on_hand >= 0),
    reserved   integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    sold       integer NOT NULL DEFAULT 0 CHECK (sold >= 0),
    received   bigint  NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stock_is_conserved CHECK (received = on_hand + reserved + sold)
);

CREATE TABLE reservations (
    order_id   uuid NOT NULL,
    product_id uuid NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    quantity   integer NOT NULL CHECK (quantity > 0),
    state      text NOT NULL CHECK (state IN ('reserved', 'committed', 'released')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, product_id)
);

-- One row per order that asked for stock: the answer it got, so a repeated command gets the
-- same answer without touching stock again.
CREATE TABLE reservation_outcomes (
    order_id   uuid PRIMARY KEY,
    reserved   boolean NOT NULL,
    -- For a refusal: the lines that were short, as [{product_id, requested, available}].
    shortfall  jsonb NOT NULL DEFAULT '[]',
    reason     text,
    created_at timestamptz NOT NULL DEFAULT now()
);
