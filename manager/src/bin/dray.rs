//! dray CLI.
fn main() {}
