-- One row per message ever committed: a redelivered message_id finds its row
-- and has no second effect.
CREATE TABLE inbox (
    message_id   text PRIMARY KEY,
    subject      text        NOT NULL,
    trace_id     text,
    received_at  timestamptz NOT NULL DEFAULT now()
);

-- The projection of EntityItemCreated events.
CREATE TABLE entity_items (
    id          uuid PRIMARY KEY,
    name        text        NOT NULL,
    value       numeric     NOT NULL,
    created_at  timestamptz NOT NULL,           -- when the sender stored it
    message_id  text        NOT NULL REFERENCES inbox (message_id),
    received_at timestamptz NOT NULL DEFAULT now()
);
