//! [`ReplicaStore`](crate::store::replicas::ReplicaStore) on PostgreSQL: claims
//! lock the rows they take and skip rows another replica holds.

use super::PgStore;

crate::store::replicas::impl_replica_store!(PgStore, sqlx::Postgres, writer: pool, reader: pool, lock: " FOR UPDATE SKIP LOCKED", async_claim: true);
