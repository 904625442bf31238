//! Long-run leak checks: what a process holds that a leak would grow, and a loop of
//! export → show → revoke cycles over a demo framebuffer, measured after a warm-up.

use std::sync::{Arc, Mutex};

use guestfb::export::{DiscardMode, ExportedFramebuffer, Exporter, PinManager, PinPolicy};
use guestfb::export::{PinPurpose, Revocation};
use guestfb::format::PixelFormat;
use guestfb::source::demo::{Buffering, DemoConfig, DemoGuest};

/// Cycles per run: 10 000, or `GUESTFB_CYCLES`.
pub fn cycles() -> u64 {
    std::env::var("GUESTFB_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// What a process holds that a leak would grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub fds: usize,
    pub udmabufs: usize,
    pub pinned_bytes: u64,
    pub pins: usize,
    /// Images the importer made and has not destroyed (0 without one).
    pub live_images: u64,
}

pub fn held(pins: &PinManager, live_images: u64) -> Held {
    let mut fds = 0;
    let mut udmabufs = 0;
    for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
        fds += 1;
        let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if info
            .lines()
            .any(|l| l.starts_with("exp_name:") && l.ends_with("udmabuf"))
        {
            udmabufs += 1;
        }
    }
    Held {
        fds,
        udmabufs,
        pinned_bytes: pins.pinned_bytes(),
        pins: pins.pin_count(),
        live_images,
    }
}

pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// What a run saw.
#[derive(Debug)]
pub struct Soak {
    pub before: Held,
    pub after: Held,
    /// RSS in KiB before the run and after each tenth of it.
    pub rss: Vec<u64>,
    pub per_second: f64,
}

/// How a cycle shows an export and lets go of it: `show` (import and present it; the
/// cycle's number given), `forget` (a revocation's buffer id), `live` (images held).
pub trait Shower {
    fn show(&mut self, export: &ExportedFramebuffer, cycle: u64);
    fn forget(&mut self, buffer_id: u64);
    fn live(&self) -> u64;
}

/// `cycles` export → show → revoke cycles of a 160×96 demo framebuffer (4 KiB or
/// hugetlb RAM), after 20 to warm up: export (populate, long-term pin, udmabuf), show,
/// revoke (a discard: the export is revoked, `forget` told, the pages punched out).
pub fn run(cycles: u64, hugetlb: bool, shower: &mut dyn Shower) -> Soak {
    let guest = DemoGuest::new(DemoConfig {
        width: 160,
        height: 96,
        format: PixelFormat::Xrgb8888,
        stride_padding: 64,
        y0_top: true,
        hugetlb: hugetlb.then_some(2 << 20),
        scattered: false,
        buffering: Buffering::Single,
    })
    .expect("demo guest");
    let exporter = Exporter::new(
        guest.memory().clone(),
        PinManager::new(PinPolicy {
            budget: u64::MAX,
            allow_without_longterm: false,
        }),
    );
    let revoked: Arc<Mutex<Vec<Revocation>>> = Arc::default();
    let sink = revoked.clone();
    exporter
        .pins()
        .on_revoke(move |r| sink.lock().unwrap().push(*r));
    let size = guest.memfd().size().expect("memfd size");
    let cycle = |shower: &mut dyn Shower, i: u64| {
        let export = exporter
            .export(1, &guest.desc(), PinPurpose::Scanout)
            .expect("export");
        shower.show(&export, i);
        exporter
            .pins()
            .discard(guest.memfd(), 0, size, DiscardMode::Revoke)
            .expect("discard with revoke");
        for r in std::mem::take(&mut *revoked.lock().unwrap()) {
            shower.forget(r.buffer_id);
        }
        assert!(export.is_revoked());
    };
    for i in 0..20 {
        cycle(shower, i);
    }
    let before = held(exporter.pins(), shower.live());
    let mut rss = vec![rss_kib()];
    let started = std::time::Instant::now();
    for i in 0..cycles {
        cycle(shower, i);
        if (i + 1) % (cycles / 10).max(1) == 0 {
            rss.push(rss_kib());
        }
    }
    let per_second = cycles as f64 / started.elapsed().as_secs_f64();
    let after = held(exporter.pins(), shower.live());
    Soak {
        before,
        after,
        rss,
        per_second,
    }
}
