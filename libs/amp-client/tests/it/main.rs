//! The SDK and the `amp` binary against real servers on 127.0.0.1: the whole provider
//! (the test kit's in-process `Ampd`) for REST, and a small WebSocket server speaking the frames
//! of SPEC-CHECKLIST Part 2.2 and §4.8 for push.

mod cli;
mod common;
mod load;
mod sdk;
mod ws;
