//! Test support shared by every backend (feature `testing`).
//!
//! - [`conformance`]: the backend-neutral contract suite.

pub mod conformance;
