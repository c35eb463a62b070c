//! [`ExecutionStore`](crate::store::executions::ExecutionStore) on PostgreSQL:
//! the shared implementation over the one pool.

use super::PgStore;

crate::store::executions::impl_execution_store!(PgStore, sqlx::Postgres, writer: pool, reader: pool);
