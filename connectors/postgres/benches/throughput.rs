//! Sink throughput benchmark (placeholder until the measurement lands).
fn main() {}
