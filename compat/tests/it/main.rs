//! bufwrite-compat integration tests, one binary: walk counts and read-in
//! counts per mode, the four paths against the model, the buffer-head
//! paths under a small cache budget with the flusher on and with
//! writeback in flight or failing (`wbstate`), and (opt-in, root) the
//! kernel-side setup of the `kernel_bh_cost` example.

mod alloc;
mod common;
mod faults;
mod kernel_setup;
mod model;
mod review;
mod walks;
mod wbstate;
