-- lab-messaging's tables, applied into each service's own schema by `lab_messaging::migrate`
-- (tracked in `_lab_messaging_migrations`, apart from the service's own migrations).

-- Events and commands written in the caller's transaction, waiting for the relay.
CREATE TABLE lab_outbox (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  UUID NOT NULL UNIQUE,
    routing_key TEXT NOT NULL,
    envelope    JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    sent_at     TIMESTAMPTZ
);
-- The relay only ever scans unsent rows, oldest first.
CREATE INDEX lab_outbox_pending ON lab_outbox (id) WHERE sent_at IS NULL;

-- One row per message a consumer has applied: a redelivery finds its row and changes nothing.
CREATE TABLE lab_inbox (
    consumer    TEXT NOT NULL,
    message_id  UUID NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Messages a consumer gave up on, with the error, until someone replays them.
CREATE TABLE lab_dead_letters (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer     TEXT NOT NULL,
    message_id   UUID NOT NULL,
    message_type TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    body         BYTEA NOT NULL,
    error        TEXT NOT NULL,
    attempts     INT NOT NULL,
    dead_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    replayed_at  TIMESTAMPTZ,
    replay_count INT NOT NULL DEFAULT 0,
    UNIQUE (consumer, message_id)
);

-- One row: the relay's durable pause flag, read by every replica before each batch.
CREATE TABLE lab_relay_control (
    singleton  BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    paused     BOOLEAN NOT NULL DEFAULT false,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO lab_relay_control DEFAULT VALUES;
