//! Integration tests of the cluster binaries' shared connection, against real `nats-server`
//! processes (the test kit).

mod security;
mod shared_limits;
