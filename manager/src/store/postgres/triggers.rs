//! [`TriggerStore`](crate::store::triggers::TriggerStore) on PostgreSQL: the
//! shared implementation over the one pool.

use super::PgStore;

crate::store::triggers::impl_trigger_store!(PgStore, sqlx::Postgres, writer: pool, reader: pool, greatest: "GREATEST");
