//! The engine's integration tests, one binary: the File API and its
//! invariants (`engine`), the model proptests on every backend (`model`),
//! allocation over delalloc and Flat mappers (`alloc`), the devices
//! (`devices`, `faulty`, `uring`, `stream`) and the safety of opening them
//! (`open_safety`).

mod alloc;
mod common;
mod devices;
mod engine;
mod faulty;
mod model;
mod open_safety;
mod stream;
mod uring;
