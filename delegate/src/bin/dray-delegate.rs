//! dray-delegate.
fn main() {}
