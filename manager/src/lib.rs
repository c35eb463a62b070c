//! Dray manager.
