//! Export cost of 8 MiB of guest RAM from 2 MiB hugetlb pages vs 4 KiB pages, measured
//! in one run (needs /dev/udmabuf: run it in the guest tier with
//! `scripts/guest/run.sh target/release/examples/bench_export`).
//!
//! Each iteration exports the framebuffer (populate, budget, UDMABUF_CREATE(_LIST),
//! long-term pin) and drops it (unpin). The memfd is made once per backing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guestfb::export::{Exporter, FramebufferDesc, GuestMemory, PinManager, PinPolicy, PinPurpose};
use guestfb::format::PixelFormat;
use guestfb::sys::memfd::{Memfd, Seals};

const SIZE: u64 = 8 << 20;
const ITERATIONS: usize = 200;

fn exporter(memfd: Memfd) -> Exporter {
    memfd.set_size(SIZE).expect("memfd size");
    memfd.add_seals(Seals::SHRINK | Seals::GROW).expect("seal");
    let mut memory = GuestMemory::new();
    memory
        .add_region(0, SIZE, Arc::new(memfd), 0)
        .expect("region");
    let policy = PinPolicy {
        budget: u64::MAX,
        allow_without_longterm: false,
    };
    Exporter::new(Arc::new(memory), PinManager::new(policy))
}

fn median_export(exporter: &Exporter) -> Duration {
    // 2048×1024 XRGB8888 = 8 MiB.
    let desc = FramebufferDesc::packed(PixelFormat::Xrgb8888, 2048, 1024, 8192, 0);
    let mut times: Vec<Duration> = (0..ITERATIONS)
        .map(|id| {
            let start = Instant::now();
            let export = exporter
                .export(id as u64, &desc, PinPurpose::Scanout)
                .expect("export");
            drop(export);
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    if !guestfb::sys::udmabuf::Udmabuf::is_present() {
        eprintln!("bench_export needs /dev/udmabuf: run it through scripts/guest/run.sh");
        std::process::exit(2);
    }
    let small = exporter(Memfd::create("bench-4k").expect("memfd"));
    let huge = exporter(Memfd::create_hugetlb("bench-2m", 2 << 20).expect("hugetlb memfd"));
    // Warm both (first population), then alternate rounds to share any drift.
    median_export(&small);
    median_export(&huge);
    let (mut small_total, mut huge_total) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..3 {
        small_total += median_export(&small);
        huge_total += median_export(&huge);
    }
    println!("export + unpin of 8 MiB, median of {ITERATIONS}, 3 alternating rounds:");
    println!(
        "  4 KiB pages : {:>8.1} us",
        small_total.as_secs_f64() * 1e6 / 3.0
    );
    println!(
        "  2 MiB pages : {:>8.1} us",
        huge_total.as_secs_f64() * 1e6 / 3.0
    );
    println!(
        "  ratio 2 MiB / 4 KiB = {:.3}",
        huge_total.as_secs_f64() / small_total.as_secs_f64()
    );
}
