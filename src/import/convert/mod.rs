//! The gl=off pixel path: copy damaged rectangles of a guest framebuffer into a wl_shm
//! buffer, converting the pixel format and flipping y on the way.
//!
//! [`blit`] validates every size and stride with checked arithmetic, clips the damage to
//! the frame and then runs one row kernel per damaged row:
//!
//! * same format (XRGB8888 → XRGB8888, ARGB8888 → ARGB8888): `copy_from_slice` per row;
//! * 32-bit swizzles (XBGR/ABGR → XRGB/ARGB, XRGB ↔ ARGB with forced alpha): AVX2 or
//!   SSSE3 `pshufb` kernels picked at run time, with a portable word loop as fallback;
//! * 24-bit, RGB565 and NV12: tight branch-free loops (SSSE3 for the 24-bit formats).
//!
//! With [`BlitOptions::threaded`], large damage (more than
//! [`BlitOptions::min_bytes_per_thread`] of output per thread) is split into bands of rows
//! processed on scoped threads; [`blit`] stays on the calling thread (see
//! [`BlitOptions`] for the measurements behind that).
//!
//! `blit_reference` (in `reference`, built for guestfb's tests) is a plain per-pixel implementation of the same contract; tests
//! check that [`blit`] matches it bit for bit.
//!
//! # Pixel rules
//! * Damage rectangles are in picture coordinates (row 0 is the top of the picture) and
//!   are clipped to the frame; empty rectangles are ignored.
//! * `y0_top == false` means memory row 0 is the bottom of the picture (GL convention):
//!   picture row `y` reads memory row `height - 1 - y`. The destination is always top
//!   down.
//! * Formats without alpha produce alpha/X 0xFF. Formats with alpha keep it when the
//!   destination is ARGB8888 and get 0xFF in the X byte of an XRGB8888 destination, so
//!   screenshots are deterministic. The one exception is XRGB8888 → XRGB8888, a plain
//!   copy: the X byte passes through unchanged (compositors ignore it).
//! * RGB565 expands with bit replication: `(r << 3) | (r >> 2)`, `(g << 2) | (g >> 4)`.
//! * NV12 is BT.601 limited range, converted with the fixed-point formula of
//!   [`nv12_to_rgb`]; pixel (x, y) of memory row `r` uses the CbCr sample at
//!   (`x / 2`, `r / 2`).

use std::sync::OnceLock;

use crate::format::PixelFormat;

use crate::sys::volatile::VolatileSlice;

pub use crate::rect::Rect;

mod kernels;
mod portable;
#[cfg(any(test, feature = "testing"))]
pub(crate) mod reference;
mod validate;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use portable::nv12_to_rgb;

use kernels::{Job, Kernel};
use validate::{clip_damage, validate};

/// One plane of a source framebuffer: its bytes and the distance between rows.
///
/// The bytes are a [`VolatileSlice`]: guest memory that may change during the blit (a
/// `&[u8]` would promise it does not). Private bytes convert with `.into()`.
#[derive(Debug, Clone, Copy)]
pub struct SourcePlane<'a> {
    /// The plane's bytes, starting at its first memory row.
    pub data: VolatileSlice<'a>,
    /// Bytes from the start of one memory row to the start of the next.
    pub stride: usize,
}

/// A guest framebuffer to read from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// Pixel format of the planes.
    pub format: PixelFormat,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// One entry per plane of `format` (`format.planes().len()`).
    pub planes: &'a [SourcePlane<'a>],
    /// `true`: memory row 0 is the top of the picture; `false`: it is the bottom (GL).
    pub y0_top: bool,
}

/// The wl_shm formats the CPU path writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DestFormat {
    /// `WL_SHM_FORMAT_XRGB8888`: bytes B G R X.
    Xrgb8888,
    /// `WL_SHM_FORMAT_ARGB8888`: bytes B G R A (premultiplied, as the guest gave it).
    Argb8888,
}

impl DestFormat {
    /// The pixel format with the same memory layout.
    pub fn pixel_format(self) -> PixelFormat {
        match self {
            Self::Xrgb8888 => PixelFormat::Xrgb8888,
            Self::Argb8888 => PixelFormat::Argb8888,
        }
    }
}

/// A destination buffer (a mapped wl_shm buffer) of the same width and height as the
/// source.
#[derive(Debug)]
pub struct Dest<'a> {
    /// The buffer's bytes, starting at row 0 (the top of the picture).
    pub data: &'a mut [u8],
    /// Bytes from the start of one row to the start of the next.
    pub stride: usize,
    /// Pixel format to write.
    pub format: DestFormat,
}

/// What a blit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlitStats {
    /// Damage rectangles left after clipping (empty and outside ones dropped).
    pub rects: usize,
    /// Pixels written (overlapping rectangles count once per rectangle).
    pub pixels: u64,
    /// Destination bytes written (`pixels × 4`).
    pub bytes: u64,
    /// Threads that did the work (1 when the calling thread did it alone).
    pub threads: usize,
}

/// Why a blit was refused. Nothing is written when validation fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// The source has the wrong number of planes for its format.
    #[error("{format} has {expected} plane(s), the source gives {got}")]
    PlaneCount {
        /// The source format.
        format: PixelFormat,
        /// Planes the format has.
        expected: usize,
        /// Planes given.
        got: usize,
    },
    /// A source plane's stride is shorter than one row of samples.
    #[error("plane {plane} stride {stride} < {samples} samples × {bytes_per_sample} bytes")]
    SourceStride {
        /// Plane index.
        plane: usize,
        /// The stride given.
        stride: usize,
        /// Samples in one row of the plane.
        samples: u64,
        /// Bytes per sample.
        bytes_per_sample: u32,
    },
    /// A source plane's slice is shorter than its rows need.
    #[error("plane {plane} has {len} bytes, {rows} rows at stride {stride} need {needed}")]
    SourceTooShort {
        /// Plane index.
        plane: usize,
        /// Bytes given.
        len: usize,
        /// Rows in the plane.
        rows: u64,
        /// The plane's stride.
        stride: usize,
        /// Bytes needed: `(rows - 1) × stride + row bytes`.
        needed: u64,
    },
    /// The destination stride is shorter than one row of pixels.
    #[error("destination stride {stride} < width {width} × 4 bytes")]
    DestStride {
        /// The stride given.
        stride: usize,
        /// Frame width in pixels.
        width: u32,
    },
    /// The destination slice is shorter than the frame needs.
    #[error("destination has {len} bytes, {rows} rows at stride {stride} need {needed}")]
    DestTooShort {
        /// Bytes given.
        len: usize,
        /// Rows (frame height).
        rows: u32,
        /// The destination stride.
        stride: usize,
        /// Bytes needed: `(rows - 1) × stride + width × 4`.
        needed: u64,
    },
    /// A size computation does not fit in the address space.
    #[error("{what}: {rows} rows at stride {stride} overflow the address space")]
    Overflow {
        /// Which buffer ("plane 0", "destination").
        what: &'static str,
        /// Rows of that buffer.
        rows: u64,
        /// Its stride.
        stride: usize,
    },
    /// A row fell outside its buffer after validation (a bug in this module).
    #[error("internal error: row {row} of {what} is out of bounds")]
    RowOutOfBounds {
        /// Which buffer.
        what: &'static str,
        /// Memory row.
        row: u64,
    },
}

/// The widest instruction set the kernels may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Simd {
    /// Portable Rust only (what the compiler makes of plain word loops).
    Portable,
    /// SSSE3 `pshufb` kernels (x86-64 with SSSE3).
    Ssse3,
    /// AVX2 `vpshufb` kernels (x86-64 with AVX2).
    Avx2,
}

impl Simd {
    /// The widest level this CPU supports (detected once).
    pub fn detected() -> Simd {
        static DETECTED: OnceLock<Simd> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    return Simd::Avx2;
                }
                if std::arch::is_x86_feature_detected!("ssse3") {
                    return Simd::Ssse3;
                }
            }
            Simd::Portable
        })
    }
}

/// Tuning knobs for [`blit_with_options`]; [`blit`] uses the defaults.
///
/// The default is single-threaded: on the 2-vCPU development VM (shared with other
/// work) splitting a full XBGR→XRGB frame over 2 threads was slower at 1080p (0.17 →
/// 0.24 ms, the frame is cache-resident and one core already copies at ~60 GB/s) and at
/// 4K (1.5 → 2.0 ms). [`BlitOptions::threaded`] turns the band split on for hosts with
/// idle cores and more memory bandwidth than one core can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlitOptions {
    /// Most threads to use; 0 means `min(available_parallelism, 4)`.
    pub max_threads: usize,
    /// Output bytes each extra thread must have to be worth starting.
    pub min_bytes_per_thread: u64,
    /// The widest instruction set to use (capped by what the CPU has).
    pub max_simd: Simd,
}

impl Default for BlitOptions {
    fn default() -> Self {
        Self {
            max_threads: 1,
            min_bytes_per_thread: 16 << 20,
            max_simd: Simd::Avx2,
        }
    }
}

impl BlitOptions {
    /// Splits damage of more than 16 MiB of output (a 4K frame is 33 MiB) over up to
    /// `min(available_parallelism, 4)` threads.
    pub fn threaded() -> Self {
        Self {
            max_threads: 0,
            ..Self::default()
        }
    }
}

/// Copies the damaged rectangles of `src` into `dst`, converting to `dst.format` and
/// flipping y when `src.y0_top` is false. Pixels outside the damage are not touched.
///
/// Errors (before anything is written) when the planes, strides or buffer lengths do not
/// fit the frame.
pub fn blit(src: &Source, dst: &mut Dest, damage: &[Rect]) -> Result<BlitStats, ConvertError> {
    blit_with_options(src, dst, damage, &BlitOptions::default())
}

/// [`blit`] with explicit threading and instruction-set limits.
pub fn blit_with_options(
    src: &Source,
    dst: &mut Dest,
    damage: &[Rect],
    options: &BlitOptions,
) -> Result<BlitStats, ConvertError> {
    validate(src, dst)?;
    let (rects, pixels) = clip_damage(damage, src.width, src.height);
    let mut stats = BlitStats {
        rects: rects.len(),
        pixels,
        bytes: pixels * 4,
        threads: 1,
    };
    if rects.is_empty() {
        return Ok(stats);
    }
    let simd = options.max_simd.min(Simd::detected());
    let job = Job {
        src,
        kernel: Kernel::select(src.format, dst.format),
        simd,
        dst_stride: dst.stride,
        rects: &rects,
    };

    let threads = thread_count(options, stats.bytes);
    // Rows [y_min, y_max) hold all the damage.
    let y_min = rects.iter().map(|r| r.y).min().unwrap_or(0);
    let y_max = rects
        .iter()
        .map(|r| r.bottom())
        .max()
        .unwrap_or(0)
        .min(u64::from(src.height)) as u32;
    let threads = threads.min((y_max - y_min) as usize).max(1);
    if threads == 1 {
        job.run_band(dst.data, 0, 0, src.height)?;
        return Ok(stats);
    }

    // Split [y_min, y_max) into bands of whole rows, one per thread; each band gets the
    // destination rows it owns as its own mutable slice.
    let rows = y_max - y_min;
    let mut bands = Vec::with_capacity(threads);
    let mut rest: &mut [u8] = dst.data;
    let mut rest_y = 0u32;
    for t in 0..threads {
        let b0 = y_min + (u64::from(rows) * t as u64 / threads as u64) as u32;
        let b1 = y_min + (u64::from(rows) * (t as u64 + 1) / threads as u64) as u32;
        // Drop rows above the band; validation guarantees (height - 1) × stride + row
        // bytes fit, so whole strides before a row that exists are in bounds.
        let skip = (b0 - rest_y) as usize * dst.stride;
        let tail = std::mem::take(&mut rest);
        let tail = tail.get_mut(skip..).ok_or(ConvertError::RowOutOfBounds {
            what: "destination",
            row: u64::from(b0),
        })?;
        let band;
        if t + 1 == threads {
            band = tail;
        } else {
            let len = ((b1 - b0) as usize * dst.stride).min(tail.len());
            let (head, tail) = tail.split_at_mut(len);
            band = head;
            rest = tail;
        }
        rest_y = b1;
        bands.push((band, b0, b1));
    }
    let job = &job;
    let results: Vec<Result<(), ConvertError>> = std::thread::scope(|scope| {
        let mut bands = bands.into_iter();
        let first = bands.next();
        let handles: Vec<_> = bands
            .map(|(band, b0, b1)| scope.spawn(move || job.run_band(band, b0, b0, b1)))
            .collect();
        let mut results = Vec::with_capacity(threads);
        if let Some((band, b0, b1)) = first {
            results.push(job.run_band(band, b0, b0, b1));
        }
        for handle in handles {
            results.push(handle.join().unwrap_or(Err(ConvertError::RowOutOfBounds {
                what: "worker thread",
                row: 0,
            })));
        }
        results
    });
    results.into_iter().collect::<Result<(), _>>()?;
    stats.threads = threads;
    Ok(stats)
}

fn thread_count(options: &BlitOptions, bytes: u64) -> usize {
    static PARALLELISM: OnceLock<usize> = OnceLock::new();
    let max = if options.max_threads == 0 {
        (*PARALLELISM.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get())))
            .min(4)
    } else {
        options.max_threads
    };
    let by_size = bytes / options.min_bytes_per_thread.max(1);
    (by_size.min(max as u64) as usize).max(1)
}
