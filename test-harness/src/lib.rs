//! The test harness of netmachine: the deterministic simulator that drives
//! the engines through simulated ports, and multi-process clusters of real
//! `netmachine` nodes for end-to-end tests.

pub mod attacks;
pub mod cluster;
pub mod hostile;
pub mod sim;
