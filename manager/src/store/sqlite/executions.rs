//! [`ExecutionStore`](crate::store::executions::ExecutionStore) on SQLite: the
//! shared implementation over the single writer and the reader pool.

use super::SqliteStore;

crate::store::executions::impl_execution_store!(SqliteStore, sqlx::Sqlite, writer: writer, reader: reader);
