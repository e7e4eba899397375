-- `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header): the first
-- answer to a key, kept for the retention (IDEMPOTENCY_RETENTION, 24 h).
-- Written in the transaction of the item it answers, so a key and its item
-- commit together or not at all; the primary key makes a concurrent request
-- with the same key wait for the first and then replay its answer.
CREATE TABLE idempotency_keys (
    key          text PRIMARY KEY,
    request_hash bytea       NOT NULL,   -- SHA-256 of the request body
    response     text        NOT NULL,   -- the 201 body, replayed as it was
    item_id      uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
