-- Users, their refresh-token families (sessions), and the security events worth keeping.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    -- Stored lower-cased (the service normalises), so uniqueness is case-insensitive.
    email         text NOT NULL UNIQUE CHECK (email = lower(email) AND char_length(email) <= 254),
    -- An Argon2id PHC string: algorithm, parameters, salt and hash together.
    password_hash text NOT NULL,
    roles         text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- One row per refresh token ever issued. Only a SHA-256 of the token is kept: the token is 256
-- random bits, so a fast hash is enough and lookups stay indexable. A token is used once
-- (`used_at`); presenting a used one again revokes its whole family.
CREATE TABLE refresh_tokens (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
    -- The session: every token rotated from one login shares it.
    family_id  uuid NOT NULL,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The access token issued alongside, so ending the session can revoke it too.
    access_jti uuid NOT NULL,
    access_exp timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_live_by_user ON refresh_tokens (user_id) WHERE revoked_at IS NULL;

-- Reuse of a refresh token, sessions revoked by an administrator, key rotations.
CREATE TABLE security_events (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind    text NOT NULL,
    user_id uuid,
    detail  jsonb NOT NULL DEFAULT '{}',
    at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX security_events_by_user ON security_events (user_id, at);
