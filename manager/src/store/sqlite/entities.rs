//! [`EntityStore`](crate::store::entities::EntityStore) on SQLite: the shared
//! implementation; writes take the single writer up front (`BEGIN IMMEDIATE`),
//! so no row locks are needed.

use super::{SqliteStore, insert_audit};

crate::store::entities::impl_entity_store!(
    SqliteStore, sqlx::Sqlite,
    begin: |this| this.writer.begin_with("BEGIN IMMEDIATE"),
    reader: reader,
    insert_audit: insert_audit,
    lock_update: "",
    lock_share: ""
);
