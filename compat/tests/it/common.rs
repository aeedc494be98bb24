//! Opening the same file on every path.

use bufwrite_compat::{BufferHeadPath, Mode, WalkCounter, WalkStats};
use bufwrite_engine::device::mem::Mem;
use bufwrite_engine::{File, FileOptions, Flat, IomapPath, OrderPolicy, WritePath};
use bufwrite_testkit::fill;
use std::sync::Arc;

/// Seed of the bytes a fresh device holds, so that anything exposed or
/// written in the wrong place shows.
pub const GARBAGE_SEED: u64 = 0xdead_beef;

/// The four paths, iomap first.
pub const PATHS: [&str; 4] = ["iomap", "bh-legacy", "bh-tailskip", "bh-seek"];

/// The write path called `name`, counting its walks into `walks` (the
/// buffer-head paths; iomap walks nothing).
pub fn path(name: &str, walks: &Arc<WalkCounter>) -> Box<dyn WritePath> {
    match Mode::from_name(name) {
        Some(m) => Box::new(BufferHeadPath::counting(m, walks.clone())),
        None => Box::new(IomapPath::new()),
    }
}

/// A file on its own Mem device.
pub struct Rig {
    pub file: File,
    /// The heads the file's writes walked (always zero on iomap).
    pub walks: Arc<WalkCounter>,
    pub mem: Arc<Mem>,
    pub base: u64,
    pub capacity: u64,
    /// The file's mapper.
    pub flat: Arc<Flat>,
}

impl Rig {
    /// A file on path `name` of `size` bytes at device offset `base`, in a
    /// region of `capacity`, on a device full of garbage (the same bytes for
    /// every rig, so that the initial contents agree).
    pub fn new(
        name: &str,
        bs: u32,
        order: OrderPolicy,
        base: u64,
        capacity: u64,
        size: u64,
    ) -> Rig {
        let mut bytes = vec![0u8; (base + capacity + (64 << 10)) as usize];
        fill(GARBAGE_SEED, 0, &mut bytes);
        let mem = Arc::new(Mem::from_bytes(bytes, 512));
        let flat = Arc::new(Flat::new(base, capacity, bs, size).unwrap());
        let walks = WalkCounter::new();
        let file = File::open(
            mem.clone(),
            flat.clone(),
            path(name, &walks),
            FileOptions { order },
        )
        .unwrap();
        Rig {
            file,
            walks,
            mem,
            base,
            capacity,
            flat,
        }
    }

    /// The device bytes of the file's region.
    pub fn region(&self) -> Vec<u8> {
        self.mem.snapshot(self.base, self.capacity)
    }

    /// The heads walked since the last [`reset_walks`](Rig::reset_walks).
    pub fn walk_stats(&self) -> WalkStats {
        self.walks.stats()
    }

    /// Starts counting walks from zero.
    pub fn reset_walks(&self) {
        self.walks.reset();
    }

    /// Device reads so far.
    pub fn reads(&self) -> u64 {
        self.file.device_stats().reads
    }
}

/// Runs `ops` on a file per path and a model per file (all fed the same
/// ops, so they stay equal): every read must match on every path, and after
/// every fsync, fdatasync and reopen every device must hold the model's
/// bytes (unwritten ranges read as zeroes). At the end nothing is dirty and
/// everything reads back from the device.
pub fn run_on_every_path(
    s: &bufwrite_testkit::Setup,
    ops: &[bufwrite_testkit::Op],
) -> Result<(), String> {
    run_on_every_path_with(s, ops, None)
}

/// [`run_on_every_path`], over Flat files (`delalloc` None) or over
/// delalloc files ([`Reserving`](bufwrite_testkit::Reserving),
/// room for every block, allocating with the policy given; the setup's
/// initial size is taken as 0): writes reserve, writeback allocates, and
/// every fsync checks the written blocks and that no reservation is left.
pub fn run_on_every_path_with(
    s: &bufwrite_testkit::Setup,
    ops: &[bufwrite_testkit::Op],
    delalloc: Option<bufwrite_engine::AllocPolicy>,
) -> Result<(), String> {
    use bufwrite_testkit::{apply_to, Model, Op, Reserving, Subject, TraceOp};
    let rigs: Vec<Rig> = PATHS
        .iter()
        .map(|p| Rig::new(p, s.bs, s.order, s.base, s.capacity, s.size))
        .collect();
    let initial = match delalloc {
        None => rigs[0].region()[..s.size as usize].to_vec(),
        Some(_) => Vec::new(),
    };
    let mut models: Vec<Model> = rigs
        .iter()
        .map(|_| Model::with_data(initial.clone(), s.capacity))
        .collect();
    // Each rig's own file stays idle; the subjects' files (and those each
    // reopen makes) are the ones under test.
    let mut subjects: Vec<Subject> = PATHS
        .iter()
        .zip(&rigs)
        .map(|(&name, rig)| {
            let walks = rig.walks.clone();
            let make = Box::new(move || path(name, &walks));
            let opts = FileOptions { order: s.order };
            match delalloc {
                None => Subject::flat(rig.mem.clone(), rig.flat.clone(), make, opts),
                Some(policy) => {
                    let limit = s.capacity / u64::from(s.bs);
                    let r = Reserving::new(s.base, s.capacity, s.bs, limit, policy);
                    Subject::reserving(rig.mem.clone(), Arc::new(r), make, opts)
                }
            }
            .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let all = [Op::Trace(TraceOp::Fsync), Op::DropCaches];
    for (i, op) in ops.iter().chain(all.iter()).enumerate() {
        for (subject, model) in subjects.iter_mut().zip(models.iter_mut()) {
            let name = subject.file().write_path_name();
            apply_to(subject, model, op).map_err(|e| format!("{name}: op {i}: {e}"))?;
        }
    }
    // After dropping the cache every byte comes back from the device.
    for (subject, model) in subjects.iter_mut().zip(models.iter_mut()) {
        let name = subject.file().write_path_name();
        if subject.file().mapping().cache.nr_dirty() != 0 {
            return Err(format!("{name}: dirty folios left after fsync"));
        }
        subject
            .check_device(model)
            .map_err(|e| format!("{name}: final device check: {e}"))?;
        let read_all = Op::Trace(TraceOp::Read {
            off: 0,
            len: model.size() + 100,
        });
        apply_to(subject, model, &read_all).map_err(|e| format!("{name}: final read: {e}"))?;
    }
    Ok(())
}
