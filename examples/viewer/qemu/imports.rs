//! What every output of `--source qemu` shares: QEMU's buffers turned into exports
//! (dma-buf imports cached per buffer and layout, sealed memfds exported), the path
//! each frame took, and the per-console counters of the exit line.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use guestfb::export::{
    BufferId, ExportedFramebuffer, Exporter, FramebufferDesc, GuestMemory, PeerPages, PinManager,
    PinPolicy, PinPurpose,
};
use guestfb::import::dmabuf::DmaBufImage;
use guestfb::source::qemu::SharedFrame;
use guestfb::sys::dmabuf::DmaBuf;

use crate::presenter::{Error, Stats};

/// How a console's current picture reaches the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramePath {
    /// QEMU's dma-buf (a virtio-gpu blob's udmabuf via `ScanoutMap`, or a gl=on
    /// `ScanoutDMABUF`) shown as it is.
    DmabufImport,
    /// QEMU's sealed surface memfd exported as a udmabuf by guestfb's `Exporter`.
    MemfdExport,
    /// Pixels copied: pixel data over the socket, an unsealed memfd mapped, or a
    /// dma-buf the output could not show as it is.
    Copy,
}

impl FramePath {
    fn name(self) -> &'static str {
        match self {
            Self::DmabufImport => "dma-buf import",
            Self::MemfdExport => "memfd export",
            Self::Copy => "copy",
        }
    }
}

/// The pages of QEMU's guest RAM (`--qemu-ram`): nothing in a udmabuf tells, and a
/// kernel quirk (Linux 6.11–6.15's udmabuf vmap) reads hugetlb folios wrong on KMS
/// drivers that scan out through a CPU mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QemuRam {
    /// Not known: on a kernel with the quirk, KMS copies QEMU's udmabufs.
    Auto,
    /// 4 KiB pages (`memory-backend-memfd` without `hugetlb=on`).
    #[value(name = "4k")]
    Small,
    /// hugetlb pages (`memory-backend-memfd,hugetlb=on`).
    Hugetlb,
}

impl QemuRam {
    fn large_folios(self) -> Option<bool> {
        match self {
            Self::Auto => None,
            Self::Small => Some(false),
            Self::Hugetlb => Some(true),
        }
    }
}

/// What makes one dma-buf import the same as another: the buffer and its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ImportKey {
    inode: u64,
    offset: u32,
    stride: u32,
    width: u32,
    height: u32,
    fourcc: u32,
}

/// Up to this many dma-buf imports are kept per console (a guest flipping between two
/// or three buffers imports each once).
const IMPORT_CACHE: usize = 4;

/// One console's exports of QEMU's buffers, most recently used last.
pub struct Imports {
    console: u32,
    ram: QemuRam,
    pins: PinManager,
    cache: Vec<(ImportKey, ExportedFramebuffer)>,
    next_buffer_id: u64,
    /// Dma-bufs imported (cache misses).
    pub imports: u64,
    /// Scanouts of a dma-buf already imported.
    pub hits: u64,
}

impl Imports {
    /// An empty cache for `console` of a guest whose RAM is `ram`.
    pub fn new(console: u32, ram: QemuRam) -> Self {
        Self {
            console,
            ram,
            pins: PinManager::new(PinPolicy::default()),
            cache: Vec::new(),
            next_buffer_id: 1,
            imports: 0,
            hits: 0,
        }
    }

    /// The pin manager whose semantics decide whether QEMU's udmabufs are long-term
    /// pinned.
    pub fn pins(&self) -> &PinManager {
        &self.pins
    }

    /// The export of a QEMU dma-buf scanout: cached per buffer and layout, so a guest
    /// flipping between two blobs imports each once. The second value is an import the
    /// cache let go of (the presenter may forget it).
    pub fn dmabuf(
        &mut self,
        image: DmaBufImage<OwnedFd>,
        method: &str,
        exporter: &str,
    ) -> Result<(ExportedFramebuffer, Option<BufferId>), Error> {
        let desc = image.framebuffer_desc();
        let mut planes = image.planes.into_iter();
        let first = planes.next().ok_or("a dma-buf scanout without planes")?;
        let inode = rustix::fs::fstat(&first.fd)?.st_ino;
        for plane in planes {
            if rustix::fs::fstat(&plane.fd)?.st_ino != inode {
                return Err("the planes are in different dma-bufs; only one buffer per \
                            scanout is shown"
                    .into());
            }
        }
        let key = ImportKey {
            inode,
            offset: first.offset,
            stride: first.stride,
            width: image.width,
            height: image.height,
            fourcc: image.format.fourcc() as u32,
        };
        if let Some(index) = self.cache.iter().position(|(k, _)| *k == key) {
            let entry = self.cache.remove(index);
            let export = entry.1.clone();
            self.cache.push(entry);
            self.hits += 1;
            return Ok((export, None));
        }
        let udmabuf = exporter == "udmabuf";
        let pages = PeerPages {
            // A udmabuf pins its pages long-term on kernels whose probe says so.
            longterm: udmabuf && self.pins.semantics().longterm_pin.is_longterm(),
            // QEMU's udmabufs hold guest RAM pages, of the kind `--qemu-ram` says.
            large_folios: if udmabuf {
                self.ram.large_folios()
            } else {
                Some(false)
            },
        };
        let buffer_id = self.next_buffer_id;
        self.next_buffer_id += 1;
        let export = ExportedFramebuffer::from_peer_dmabuf(
            buffer_id,
            DmaBuf::from_fd(first.fd)?,
            &desc,
            pages,
        )?;
        println!(
            "viewer: console {}: QEMU dma-buf ({}, {exporter}, {}x{} {}) imported as buffer {buffer_id}",
            self.console,
            method,
            image.width,
            image.height,
            export.layout().format(),
        );
        self.imports += 1;
        self.cache.push((key, export.clone()));
        let evicted = (self.cache.len() > IMPORT_CACHE).then(|| self.cache.remove(0).1.buffer_id());
        Ok((export, evicted))
    }

    /// A sealed memfd surface as a udmabuf export (zero copy on the viewer's side);
    /// `Err` says why not, and the frame is then copied.
    pub fn memfd(&mut self, frame: &SharedFrame) -> Result<ExportedFramebuffer, String> {
        let frame = frame.lock();
        let Some((memfd, offset)) = frame.sealed_memfd() else {
            return Err(
                "QEMU's surface memfd is not sealed with F_SEAL_SHRINK (QEMU 10 \
                        does not seal its surfaces), which udmabuf requires"
                    .to_owned(),
            );
        };
        if !self.pins.has_udmabuf() {
            return Err("no /dev/udmabuf on this host".to_owned());
        }
        let size = memfd.size().map_err(|e| e.to_string())?;
        let page = memfd.page_size();
        let mut memory = GuestMemory::new();
        memory
            .add_region(0, size / page * page, memfd.clone(), 0)
            .map_err(|e| e.to_string())?;
        let desc = FramebufferDesc::packed(
            frame.format(),
            frame.width(),
            frame.height(),
            frame.stride(),
            offset,
        );
        let buffer_id = self.next_buffer_id;
        self.next_buffer_id += 1;
        // Rare (QEMU 10 never seals its surfaces): a pin manager for this memfd alone.
        Exporter::new(Arc::new(memory), PinManager::new(self.pins.policy()))
            .export(buffer_id, &desc, PinPurpose::Scanout)
            .map_err(|e| e.to_string())
    }

    /// The most recent dma-buf import (an `UpdateDMABUF` after a `Disable` shows it).
    pub fn last(&self) -> Option<&ExportedFramebuffer> {
        self.cache.last().map(|(_, export)| export)
    }

    /// Drops every dma-buf import (the display went off or changed size) and returns
    /// their buffer ids.
    pub fn clear(&mut self) -> Vec<BufferId> {
        self.cache
            .drain(..)
            .map(|(_, export)| export.buffer_id())
            .collect()
    }
}

/// Per-console counters, printed at exit.
#[derive(Debug, Default)]
pub struct HeadStats {
    pub frames: Stats,
    by_path: [u64; 3],
    /// QEMU's update → the frame that showed it on screen (frame callback, page flip).
    pub latencies: Vec<Duration>,
}

impl HeadStats {
    /// Counts one presented frame that took `path`.
    pub fn presented(&mut self, path: FramePath) {
        self.frames.frames += 1;
        self.by_path[path as usize] += 1;
    }

    /// The exit line of `console`, which the tests read:
    /// `viewer: console N: F frames in S s (a dma-buf import, b memfd export, c copy),
    /// I dma-buf imports, H import cache hits, B bytes copied per frame, presenter P;
    /// update to screen X ms median, Y ms p99; process CPU Z ms per frame`.
    pub fn print(
        &mut self,
        console: u32,
        imports: &Imports,
        presenter: &str,
        wall: Duration,
        cpu: Duration,
    ) {
        let median = quantile_ms(&mut self.latencies, 0.5);
        let p99 = quantile_ms(&mut self.latencies, 0.99);
        let frames = self.frames.frames;
        println!(
            "viewer: console {console}: {frames} frames in {:.2} s ({} {}, {} {}, {} {}), {} \
             dma-buf imports, {} import cache hits, {:.0} bytes copied per frame, presenter \
             {presenter}; update to screen {median:.1} ms median, {p99:.1} ms p99; process \
             CPU {:.2} ms per frame",
            wall.as_secs_f64(),
            self.by_path[FramePath::DmabufImport as usize],
            FramePath::DmabufImport.name(),
            self.by_path[FramePath::MemfdExport as usize],
            FramePath::MemfdExport.name(),
            self.by_path[FramePath::Copy as usize],
            FramePath::Copy.name(),
            imports.imports,
            imports.hits,
            self.frames.bytes as f64 / frames.max(1) as f64,
            cpu.as_secs_f64() * 1e3 / frames.max(1) as f64,
        );
    }
}

/// The `q`-quantile of `values` (sorted in place), in milliseconds.
fn quantile_ms(values: &mut [Duration], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort();
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index].as_secs_f64() * 1e3
}

/// User + system CPU time of this process (all its threads).
pub fn process_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `struct rusage` into the buffer it is given.
    let usage = match unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } {
        // SAFETY: a zeroed rusage is valid, and getrusage filled it on success.
        0 => unsafe { usage.assume_init() },
        _ => return Duration::ZERO,
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}
