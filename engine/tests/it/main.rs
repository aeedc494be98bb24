//! The engine's integration tests, one binary: the File API and its
//! invariants (`engine`), the model proptests on every backend (`model`),
//! allocation over delalloc and Flat mappers (`alloc`), the devices
//! (`devices`, `faulty`, `uring`, `stream`), the safety of opening them
//! (`open_safety`), and the writeback and memory machinery: budgets and
//! reclaim, the flusher, throttling, folios under writeback, errseq
//! (`wbstate`).

mod alloc;
mod common;
mod devices;
mod engine;
mod faulty;
mod model;
mod open_safety;
mod stream;
mod uring;
mod wbstate;
