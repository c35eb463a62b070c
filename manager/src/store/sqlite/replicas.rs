//! [`ReplicaStore`](crate::store::replicas::ReplicaStore) on SQLite: one writer
//! connection, so a claim is exclusive without row locks.

use super::SqliteStore;

crate::store::replicas::impl_replica_store!(SqliteStore, sqlx::Sqlite, writer: writer, reader: reader, lock: "", async_claim: false);
