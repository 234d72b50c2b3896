//! kfix: the command-line entry point.
mod diag;
mod quote;
mod yaml;
fn main() {}
