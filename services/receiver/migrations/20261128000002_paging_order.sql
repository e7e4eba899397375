-- Paging follows the order rows became visible, not the id order: an item
-- whose transaction commits after a later-created one would otherwise fall
-- behind a cursor already past it. `txid` is the inserting transaction;
-- a page only shows rows whose transaction is older than every transaction
-- still running (pg_snapshot_xmin), so nothing can appear behind it later.
ALTER TABLE entity_items ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX entity_items_paging ON entity_items (txid, id);
