//! [`TriggerStore`](crate::store::triggers::TriggerStore) on SQLite: the shared
//! implementation over the single writer and the reader pool.

use super::SqliteStore;

crate::store::triggers::impl_trigger_store!(SqliteStore, sqlx::Sqlite, writer: writer, reader: reader, greatest: "MAX");
