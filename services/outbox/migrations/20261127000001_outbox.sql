-- Rows wait here until the broker has Accepted them; the relay deletes them then.
CREATE TABLE outbox (
    id              uuid PRIMARY KEY,            -- UUIDv7: time-ordered, and the AMQP message_id
    event_type      text        NOT NULL,        -- AMQP subject, e.g. EntityItemCreated
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    traceparent     text,
    attempts        integer     NOT NULL DEFAULT 0,  -- sends the broker did not accept
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);

-- The relay claims `WHERE next_attempt_at <= now() ORDER BY id`.
CREATE INDEX outbox_due ON outbox (next_attempt_at, id);

-- Rows given up on after the retry limit: kept, counted, never silently dropped.
CREATE TABLE outbox_dead_letter (
    id              uuid PRIMARY KEY,
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL,
    traceparent     text,
    attempts        integer     NOT NULL,
    last_error      text,
    dead_lettered_at timestamptz NOT NULL DEFAULT now()
);
