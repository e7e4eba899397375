//! The entity-item contract both services share: [`domain`] parses input and
//! defines the stored item and its `EntityItemCreated` event (the same JSON on
//! the API and on the wire); [`api`] serves the read side, `GET
//! /api/EntityItems[/{id}]`, over any table of that shape.

pub mod api;
pub mod domain;

pub use domain::{EVENT_CREATED, Item, ItemName, NewItem};
