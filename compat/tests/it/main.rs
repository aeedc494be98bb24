//! bufwrite-compat integration tests, one binary: walk counts and read-in
//! counts per mode, and the four paths against the model.

mod common;
mod faults;
mod model;
mod review;
mod walks;
