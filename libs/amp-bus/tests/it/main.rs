//! Integration tests of amp-bus: the conformance suite on the in-process backend, and the
//! in-process backend's own semantics.

mod conformance;
mod in_process;
mod recorder;
