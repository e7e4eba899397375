-- Every application of an event to the projection counts: a second one shows
-- as applied = 2, so a duplicate effect can be detected from the effect itself.
ALTER TABLE entity_items ADD COLUMN applied integer NOT NULL DEFAULT 1;
