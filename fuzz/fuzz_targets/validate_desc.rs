//! Fuzzes framebuffer-description validation: any bytes become a description, which
//! must validate or fail with an error, never panic, and when accepted must lie inside
//! guest memory.
#![no_main]

use std::sync::{Arc, OnceLock};

use guestfb::export::{FramebufferDesc, GuestMemory, GuestRange, PlaneDesc};
use guestfb::rect::Rect;
use guestfb::sys::memfd::{Memfd, Seals};
use libfuzzer_sys::fuzz_target;

const RAM: u64 = 64 << 20;

fn memory() -> &'static GuestMemory {
    static MEMORY: OnceLock<GuestMemory> = OnceLock::new();
    MEMORY.get_or_init(|| {
        let memfd = Memfd::create("fuzz-ram").expect("memfd");
        memfd.set_size(RAM).expect("size");
        memfd.add_seals(Seals::SHRINK | Seals::GROW).expect("seal");
        let mut memory = GuestMemory::new();
        memory
            .add_region(0, RAM, Arc::new(memfd), 0)
            .expect("region");
        memory
    })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        let take = self.0.len().min(8);
        bytes[..take].copy_from_slice(&self.0[..take]);
        self.0 = &self.0[take..];
        u64::from_le_bytes(bytes)
    }
    fn u32(&mut self) -> u32 {
        self.u64() as u32
    }
    fn small(&mut self, max: u64) -> u64 {
        // Half of the values small, half anything: both kinds of bugs get found.
        let value = self.u64();
        if value & 1 == 0 {
            (value >> 1) % max
        } else {
            value >> 1
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Reader(data);
    let formats = [
        0x3432_5258u32,
        0x3231_564e,
        0x3631_4752,
        0x3432_4742,
        0x3432_4241,
    ];
    let fourcc = match input.u32() % 6 {
        5 => input.u32(),
        index => formats[index as usize],
    };
    let modifier = if input.u32() % 4 == 0 { input.u64() } else { 0 };
    let width = input.small(4096) as u32;
    let height = input.small(4096) as u32;
    let visible = (input.u32() % 3 == 0).then(|| Rect {
        x: input.small(4096) as u32,
        y: input.small(4096) as u32,
        width: input.small(4096) as u32,
        height: input.small(4096) as u32,
    });
    let planes = (0..input.u32() % 4)
        .map(|_| PlaneDesc {
            offset: input.small(1 << 24),
            stride: input.small(1 << 16) as u32,
        })
        .collect();
    let y0_top = input.u32() % 2 == 0;
    let ranges = (0..input.u32() % 5)
        .map(|_| GuestRange {
            addr: input.small(RAM + (1 << 20)),
            len: input.small(1 << 25),
        })
        .collect();
    let desc = FramebufferDesc {
        fourcc,
        modifier,
        width,
        height,
        visible,
        planes,
        y0_top,
        ranges,
    };
    if let Ok(fb) = desc.validate(memory()) {
        for plane in fb.planes() {
            assert!(plane.offset + plane.span() <= fb.len());
        }
        for piece in fb.pieces() {
            assert!(piece.end() <= RAM);
        }
    }
});
