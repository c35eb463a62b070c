//! Dray delegate.
