//! Integration tests of the engine against the model harness.

use bufwrite_engine::testing::{apply, check_device, Model, Op};
use bufwrite_engine::{device::mem::Mem, File, FileOptions, Flat, IomapPath};
use std::sync::Arc;

#[test]
fn harness_smoke() {
    let dev = Arc::new(Mem::new(1 << 20));
    let flat = Arc::new(Flat::new(0, 1 << 20, 4096, 0).unwrap());
    let file = File::open(dev.clone(), flat, Box::new(IomapPath::new()), FileOptions::default()).unwrap();
    let mut model = Model::new(1 << 20);
    for op in [Op::Pwrite { off: 5000, len: 300, seed: 7 }, Op::Read { off: 0, len: 6000 }, Op::Fsync] {
        apply(&file, &mut model, &op).unwrap();
    }
    check_device(&dev.snapshot(0, model.size()), &model).unwrap();
}
