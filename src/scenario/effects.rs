//! Duplicate effects, counted from the effect itself: the receiver's
//! projection counts every application of an event on the item's row
//! (`entity_items.applied`), so an item applied twice shows as `applied = 2`,
//! whichever life of the receiver's process applied it and however its
//! counters were reset in between.

use super::{Ctx, demo};

impl Ctx {
    /// Applications beyond the first of the items `ids` (acknowledged item ids).
    pub(super) async fn duplicate_effects(&self, ids: &[String]) -> Result<u64, String> {
        let pool = self.receiver_db.as_ref().ok_or("the receiver's database URL is not valid")?;
        demo::extra_applications(pool, ids).await
    }
}
