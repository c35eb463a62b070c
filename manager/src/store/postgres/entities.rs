//! [`EntityStore`](crate::store::entities::EntityStore) on PostgreSQL: the
//! shared implementation with row locks standing in for SQLite's single
//! writer — a delete or apply locks the row it changes (`FOR UPDATE`) and an
//! apply locks every row it references (`FOR SHARE`), so a reference and the
//! delete of its target never both commit.

use super::{PgStore, insert_audit};

crate::store::entities::impl_entity_store!(
    PgStore, sqlx::Postgres,
    begin: |this| this.pool.begin(),
    reader: pool,
    insert_audit: insert_audit,
    lock_update: " FOR UPDATE",
    lock_share: " FOR SHARE"
);
