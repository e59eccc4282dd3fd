-- One payment per order: the session at its provider, the provider's ids as they become known,
-- and the state it has reached (see src/state.rs; it only moves forward).
CREATE TABLE payments (
    order_id uuid PRIMARY KEY,
    -- `stripe` or `paypal`; NULL for the tombstone of a void that came before the session.
    provider text,
    state text NOT NULL,
    amount_minor bigint,
    currency text,
    -- Stripe checkout session `cs_…` / PayPal order id.
    session_id text,
    payment_url text,
    -- Stripe payment intent `pi_…`.
    intent_id text,
    -- PayPal authorization id.
    authorization_id text,
    -- PayPal capture id (Stripe captures the intent itself).
    capture_id text,
    -- Stripe `re_…` / PayPal refund id.
    refund_id text,
    authorized_minor bigint,
    authorized_currency text,
    captured_minor bigint,
    refunded_minor bigint,
    amount_mismatch boolean NOT NULL DEFAULT false,
    reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every webhook accepted and every command applied, with what it did. Webhooks are deduplicated
-- on (source, event_id): a provider's retry of the same event finds its row and changes nothing.
CREATE TABLE payment_events (
    id bigserial PRIMARY KEY,
    order_id uuid,
    -- `stripe`, `paypal` (webhooks) or `command`.
    source text NOT NULL,
    -- The provider's event id; NULL for commands.
    event_id text,
    kind text NOT NULL,
    -- `applied`, `ignored` (a state already passed, or a type we do not act on), `mismatch`, …
    outcome text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}',
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, event_id)
);
CREATE INDEX payment_events_order ON payment_events (order_id, id);

-- Which saga events were emitted for an order: each at most once, whichever path (command or
-- webhook, in any order, any number of times) reaches its state.
CREATE TABLE payment_emissions (
    order_id uuid NOT NULL,
    event text NOT NULL,
    message_id uuid NOT NULL,
    emitted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, event)
);
