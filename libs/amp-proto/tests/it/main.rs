//! Integration tests of amp-proto: the spec's test vectors, canonicalisation fixtures made by
//! jq and Node, and property tests.

mod fixtures;
mod props;
mod vectors;
