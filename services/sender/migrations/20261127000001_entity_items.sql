CREATE TABLE entity_items (
    id         uuid PRIMARY KEY,          -- UUIDv7, so id order is creation order (the paging cursor)
    name       text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    value      numeric     NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
