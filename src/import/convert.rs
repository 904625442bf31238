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
//! [`blit_reference`] is a plain per-pixel implementation of the same contract; tests
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

/// Clips the damage to the frame, dropping empty rectangles; returns them and their
/// total area.
fn clip_damage(damage: &[Rect], width: u32, height: u32) -> (Vec<Rect>, u64) {
    let rects: Vec<Rect> = damage
        .iter()
        .filter_map(|r| r.clip(width, height))
        .collect();
    let pixels = rects.iter().map(Rect::area).sum();
    (rects, pixels)
}

/// Bytes needed by `rows` rows of `row_bytes` at `stride`: `(rows - 1) × stride +
/// row_bytes`, or 0 for no rows; `None` on overflow.
fn needed_bytes(rows: u64, stride: usize, row_bytes: u64) -> Option<u64> {
    if rows == 0 {
        return Some(0);
    }
    let needed = (rows - 1)
        .checked_mul(stride as u64)?
        .checked_add(row_bytes)?;
    // Everything must also be addressable as usize.
    usize::try_from(needed).ok()?;
    Some(needed)
}

/// Checks that the source planes and the destination fit the frame.
fn validate(src: &Source, dst: &Dest) -> Result<(), ConvertError> {
    const PLANE_NAMES: [&str; 2] = ["plane 0", "plane 1"];
    let infos = src.format.planes();
    if src.planes.len() != infos.len() {
        return Err(ConvertError::PlaneCount {
            format: src.format,
            expected: infos.len(),
            got: src.planes.len(),
        });
    }
    for (index, (plane, info)) in src.planes.iter().zip(infos).enumerate() {
        let samples = u64::from(src.width.div_ceil(info.h_sub));
        let rows = u64::from(src.height.div_ceil(info.v_sub));
        let row_bytes = samples * u64::from(info.bytes_per_sample);
        if (plane.stride as u64) < row_bytes {
            return Err(ConvertError::SourceStride {
                plane: index,
                stride: plane.stride,
                samples,
                bytes_per_sample: info.bytes_per_sample,
            });
        }
        let needed = needed_bytes(rows, plane.stride, row_bytes).ok_or(ConvertError::Overflow {
            what: PLANE_NAMES.get(index).copied().unwrap_or("plane"),
            rows,
            stride: plane.stride,
        })?;
        if (plane.data.len() as u64) < needed {
            return Err(ConvertError::SourceTooShort {
                plane: index,
                len: plane.data.len(),
                rows,
                stride: plane.stride,
                needed,
            });
        }
    }
    let row_bytes = u64::from(src.width) * 4;
    if (dst.stride as u64) < row_bytes {
        return Err(ConvertError::DestStride {
            stride: dst.stride,
            width: src.width,
        });
    }
    let rows = u64::from(src.height);
    let needed = needed_bytes(rows, dst.stride, row_bytes).ok_or(ConvertError::Overflow {
        what: "destination",
        rows,
        stride: dst.stride,
    })?;
    if (dst.data.len() as u64) < needed {
        return Err(ConvertError::DestTooShort {
            len: dst.data.len(),
            rows: src.height,
            stride: dst.stride,
            needed,
        });
    }
    Ok(())
}

/// The row kernel for one (source, destination) format pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// Same layout: copy bytes.
    Copy,
    /// Same channel order, alpha forced to 0xFF.
    SetAlpha,
    /// R and B swapped, alpha kept.
    Swap,
    /// R and B swapped, alpha forced to 0xFF.
    SwapSetAlpha,
    /// 24-bit bytes B G R (DRM RGB888) → B G R 0xFF.
    Bgr24,
    /// 24-bit bytes R G B (DRM BGR888) → B G R 0xFF.
    Rgb24,
    /// RGB565 → B G R 0xFF.
    Rgb565,
    /// NV12 → B G R 0xFF.
    Nv12,
}

impl Kernel {
    fn select(src: PixelFormat, dst: DestFormat) -> Kernel {
        use DestFormat as D;
        use PixelFormat as P;
        match (src, dst) {
            (P::Xrgb8888, D::Xrgb8888) | (P::Argb8888, D::Argb8888) => Kernel::Copy,
            (P::Xrgb8888, D::Argb8888) | (P::Argb8888, D::Xrgb8888) => Kernel::SetAlpha,
            (P::Abgr8888, D::Argb8888) => Kernel::Swap,
            (P::Xbgr8888, _) | (P::Abgr8888, D::Xrgb8888) => Kernel::SwapSetAlpha,
            (P::Rgb888, _) => Kernel::Bgr24,
            (P::Bgr888, _) => Kernel::Rgb24,
            (P::Rgb565, _) => Kernel::Rgb565,
            (P::Nv12, _) => Kernel::Nv12,
        }
    }
}

/// Everything the row loop needs, shared by the worker threads.
struct Job<'a> {
    src: &'a Source<'a>,
    kernel: Kernel,
    simd: Simd,
    dst_stride: usize,
    rects: &'a [Rect],
}

/// `data[start..start + len]`, or an internal error naming the buffer and row.
fn sub<'s>(
    data: VolatileSlice<'s>,
    start: usize,
    len: usize,
    what: &'static str,
    row: usize,
) -> Result<VolatileSlice<'s>, ConvertError> {
    data.subslice(start, len)
        .map_err(|_| ConvertError::RowOutOfBounds {
            what,
            row: row as u64,
        })
}

impl Job<'_> {
    /// Converts the damaged parts of picture rows `[y0, y1)` into `band`, whose first
    /// byte is the start of destination row `band_y`.
    fn run_band(&self, band: &mut [u8], band_y: u32, y0: u32, y1: u32) -> Result<(), ConvertError> {
        let src = self.src;
        let bpp = src.format.bytes_per_pixel() as usize;
        let plane0 = src.planes.first().copied().unwrap_or(SourcePlane {
            data: VolatileSlice::empty(),
            stride: 0,
        });
        // NV12 rows are copied out of guest memory before conversion (see `nv12`).
        let (mut luma, mut chroma) = (Vec::new(), Vec::new());
        for rect in self.rects {
            let ry0 = rect.y.max(y0);
            let ry1 = (rect.bottom().min(u64::from(y1))) as u32;
            let x = rect.x as usize;
            let w = rect.width as usize;
            for y in ry0..ry1 {
                let mem_row = if src.y0_top { y } else { src.height - 1 - y } as usize;
                let d_start = (y - band_y) as usize * self.dst_stride + x * 4;
                let d_end = d_start + w * 4;
                let dst_row = band
                    .get_mut(d_start..d_end)
                    .ok_or(ConvertError::RowOutOfBounds {
                        what: "destination",
                        row: u64::from(y),
                    })?;
                let s_row = sub(
                    plane0.data,
                    mem_row * plane0.stride + x * bpp,
                    w * bpp,
                    "plane 0",
                    mem_row,
                )?;
                match self.kernel {
                    Kernel::Copy => {
                        s_row
                            .copy_to(dst_row)
                            .map_err(|_| ConvertError::RowOutOfBounds {
                                what: "destination",
                                row: u64::from(y),
                            })?
                    }
                    Kernel::SetAlpha => swizzle32(self.simd, false, s_row, dst_row),
                    Kernel::SwapSetAlpha => swizzle32(self.simd, true, s_row, dst_row),
                    Kernel::Swap => swap32_keep_alpha(self.simd, s_row, dst_row),
                    Kernel::Bgr24 => rgb24(self.simd, false, s_row, dst_row),
                    Kernel::Rgb24 => rgb24(self.simd, true, s_row, dst_row),
                    Kernel::Rgb565 => rgb565_row(self.simd, s_row, dst_row),
                    Kernel::Nv12 => {
                        let plane1 = src.planes.get(1).copied().unwrap_or(SourcePlane {
                            data: VolatileSlice::empty(),
                            stride: 0,
                        });
                        let c_row = mem_row / 2;
                        let c0 = x / 2;
                        let c1 = (x + w).div_ceil(2);
                        let uv = sub(
                            plane1.data,
                            c_row * plane1.stride + c0 * 2,
                            (c1 - c0) * 2,
                            "plane 1",
                            c_row,
                        )?;
                        let luma = stage(s_row, &mut luma);
                        let uv = stage(uv, &mut chroma);
                        nv12(self.simd, luma, uv, x % 2 == 1, dst_row);
                    }
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Row kernels. Each takes a source row and a destination row of the same pixel count
// (the callers slice them so); kernels never index past the shorter of the two.
//
// The source row is guest memory (a `VolatileSlice`), never a `&[u8]`. The SIMD kernels
// load from its raw pointer; the portable loops, written over slices, run on copies of
// it made through a small stack buffer (`staged`) or, for NV12's two planes, a scratch
// row (`stage`).

/// Pixels per chunk that [`staged`] copies out of guest memory at once (fits L1).
const STAGE_PIXELS: usize = 256;

/// Runs the slice kernel `kernel` over the source row `src` of `in_bpp`-byte pixels,
/// copying it out of guest memory [`STAGE_PIXELS`] pixels at a time, into `dst` (4
/// bytes per pixel).
#[inline(always)]
fn staged(
    src: VolatileSlice<'_>,
    in_bpp: usize,
    dst: &mut [u8],
    kernel: impl Fn(&[u8], &mut [u8]),
) {
    let mut buf = [0u8; STAGE_PIXELS * 4];
    let pixels = (src.len() / in_bpp).min(dst.len() / 4);
    for (chunk, out) in dst[..pixels * 4].chunks_mut(STAGE_PIXELS * 4).enumerate() {
        let bytes = &mut buf[..out.len() / 4 * in_bpp];
        // In range: chunk × STAGE_PIXELS + out.len() / 4 ≤ pixels ≤ src.len() / in_bpp.
        if src.read_at(chunk * STAGE_PIXELS * in_bpp, bytes).is_ok() {
            kernel(bytes, out);
        }
    }
}

/// Copies the source row `src` out of guest memory into `scratch`.
fn stage<'s>(src: VolatileSlice<'_>, scratch: &'s mut Vec<u8>) -> &'s [u8] {
    scratch.resize(src.len(), 0);
    // Same length: cannot fail.
    let _ = src.copy_to(scratch);
    scratch
}

/// 32-bit → 32-bit with alpha forced to 0xFF, R/B swapped when `swap`.
fn swizzle32(simd: Simd, swap: bool, src: VolatileSlice<'_>, dst: &mut [u8]) {
    match (simd, swap) {
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx2, true) => {
            // SAFETY: `Simd::Avx2` is only selected when AVX2 was detected at run time.
            unsafe { x86::shuffle32_avx2::<true, true>(src, dst) }
        }
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx2, false) => {
            // SAFETY: as above, AVX2 was detected.
            unsafe { x86::shuffle32_avx2::<false, true>(src, dst) }
        }
        #[cfg(target_arch = "x86_64")]
        (Simd::Ssse3, true) => {
            // SAFETY: `Simd::Ssse3` is only selected when SSSE3 was detected at run time.
            unsafe { x86::shuffle32_ssse3::<true, true>(src, dst) }
        }
        #[cfg(target_arch = "x86_64")]
        (Simd::Ssse3, false) => {
            // SAFETY: as above, SSSE3 was detected.
            unsafe { x86::shuffle32_ssse3::<false, true>(src, dst) }
        }
        (_, true) => staged(src, 4, dst, words32::<true, true>),
        (_, false) => staged(src, 4, dst, words32::<false, true>),
    }
}

/// 32-bit → 32-bit with R/B swapped and alpha kept.
fn swap32_keep_alpha(simd: Simd, src: VolatileSlice<'_>, dst: &mut [u8]) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => {
            // SAFETY: `Simd::Avx2` is only selected when AVX2 was detected at run time.
            unsafe { x86::shuffle32_avx2::<true, false>(src, dst) }
        }
        #[cfg(target_arch = "x86_64")]
        Simd::Ssse3 => {
            // SAFETY: `Simd::Ssse3` is only selected when SSSE3 was detected at run time.
            unsafe { x86::shuffle32_ssse3::<true, false>(src, dst) }
        }
        _ => staged(src, 4, dst, words32::<true, false>),
    }
}

/// Portable 32-bit word loop: swap bytes 0 and 2 when `SWAP`, OR 0xFF000000 when
/// `ALPHA`. No branches per pixel; the compiler vectorises it.
#[inline]
fn words32<const SWAP: bool, const ALPHA: bool>(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(4)) {
        let v = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        let mut out = if SWAP {
            (v & 0xFF00_FF00) | ((v >> 16) & 0xFF) | ((v & 0xFF) << 16)
        } else {
            v
        };
        if ALPHA {
            out |= 0xFF00_0000;
        }
        d.copy_from_slice(&out.to_le_bytes());
    }
}

/// 24-bit → B G R 0xFF; `RGB` means source bytes R G B (DRM BGR888), otherwise B G R.
fn rgb24(simd: Simd, rgb: bool, src: VolatileSlice<'_>, dst: &mut [u8]) {
    match (simd, rgb) {
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx2 | Simd::Ssse3, true) => {
            // SAFETY: both levels are only selected when SSSE3 (implied by AVX2) was
            // detected at run time.
            unsafe { x86::rgb24_ssse3::<true>(src, dst) }
        }
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx2 | Simd::Ssse3, false) => {
            // SAFETY: as above.
            unsafe { x86::rgb24_ssse3::<false>(src, dst) }
        }
        (_, true) => staged(src, 3, dst, words24::<true>),
        (_, false) => staged(src, 3, dst, words24::<false>),
    }
}

/// Portable 24-bit loop (see [`rgb24`]).
#[inline]
fn words24<const RGB: bool>(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(3).zip(dst.chunks_exact_mut(4)) {
        let (b, g, r) = if RGB {
            (s[2], s[1], s[0])
        } else {
            (s[0], s[1], s[2])
        };
        d.copy_from_slice(&[b, g, r, 0xFF]);
    }
}

/// RGB565 → B G R 0xFF with bit replication.
fn rgb565_row(simd: Simd, src: VolatileSlice<'_>, dst: &mut [u8]) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => staged(src, 2, dst, |s, d| {
            // SAFETY: `Simd::Avx2` is only selected when AVX2 was detected at run time.
            unsafe { x86::rgb565_avx2(s, d) }
        }),
        _ => staged(src, 2, dst, rgb565_words),
    }
}

/// Portable RGB565 loop: plain u32 arithmetic the compiler vectorises.
#[inline(always)]
fn rgb565_words(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(2).zip(dst.chunks_exact_mut(4)) {
        let v = u32::from(u16::from_le_bytes([s[0], s[1]]));
        let r = v >> 11;
        let g = (v >> 5) & 0x3F;
        let b = v & 0x1F;
        let out = 0xFF00_0000
            | (((r << 3) | (r >> 2)) << 16)
            | (((g << 2) | (g >> 4)) << 8)
            | ((b << 3) | (b >> 2));
        d.copy_from_slice(&out.to_le_bytes());
    }
}

/// One RGB565 pixel to bytes B G R 0xFF.
#[inline(always)]
fn rgb565_to_bgrx(v: u16) -> [u8; 4] {
    let v = u32::from(v);
    let r = v >> 11;
    let g = (v >> 5) & 0x3F;
    let b = v & 0x1F;
    [
        ((b << 3) | (b >> 2)) as u8,
        ((g << 2) | (g >> 4)) as u8,
        ((r << 3) | (r >> 2)) as u8,
        0xFF,
    ]
}

/// Chroma terms of [`nv12_to_rgb`] for one CbCr sample: (R, G, B) additions.
#[inline(always)]
fn chroma_terms(cb: u8, cr: u8) -> (i32, i32, i32) {
    let d = i32::from(cb) - 128;
    let e = i32::from(cr) - 128;
    (409 * e, -100 * d - 208 * e, 516 * d)
}

/// Applies precomputed chroma terms to one luma sample: bytes B G R 0xFF.
#[inline(always)]
fn yuv_terms_to_bgrx(y: u8, (rv, guv, bu): (i32, i32, i32)) -> [u8; 4] {
    let c = 298 * (i32::from(y) - 16) + 128;
    [
        ((c + bu) >> 8).clamp(0, 255) as u8,
        ((c + guv) >> 8).clamp(0, 255) as u8,
        ((c + rv) >> 8).clamp(0, 255) as u8,
        0xFF,
    ]
}

/// BT.601 limited range Y'CbCr → R'G'B', 8-bit fixed point (the definition both [`blit`]
/// and [`blit_reference`] use):
///
/// ```text
/// C = Y - 16, D = Cb - 128, E = Cr - 128
/// R = clamp((298 C + 409 E + 128) >> 8)
/// G = clamp((298 C - 100 D - 208 E + 128) >> 8)
/// B = clamp((298 C + 516 D + 128) >> 8)
/// ```
pub fn nv12_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let [b, g, r, _] = yuv_terms_to_bgrx(y, chroma_terms(cb, cr));
    [r, g, b]
}

/// One NV12 row (see [`nv12_row`]), compiled for AVX2 when the CPU has it.
fn nv12(simd: Simd, luma: &[u8], uv: &[u8], odd: bool, dst: &mut [u8]) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => {
            // SAFETY: `Simd::Avx2` is only selected when AVX2 was detected at run time.
            unsafe { x86::nv12_avx2(luma, uv, odd, dst) }
        }
        _ => nv12_row(luma, uv, odd, dst),
    }
}

/// One NV12 row. `luma` holds the damaged samples, `uv` the CbCr pairs from the one of
/// the first damaged pixel on; `odd` says the first pixel sits at an odd column (so it
/// is the second user of `uv[0..2]`).
#[inline(always)]
fn nv12_row(luma: &[u8], uv: &[u8], odd: bool, dst: &mut [u8]) {
    let (mut luma, mut uv, mut dst) = (luma, uv, dst);
    if odd {
        let whole = std::mem::take(&mut dst);
        if let (Some((&y, luma_rest)), [cb, cr, uv_rest @ ..], Some((d, dst_rest))) =
            (luma.split_first(), uv, whole.split_first_chunk_mut::<4>())
        {
            *d = yuv_terms_to_bgrx(y, chroma_terms(*cb, *cr));
            luma = luma_rest;
            uv = uv_rest;
            dst = dst_rest;
        }
    }
    let pairs = luma.chunks_exact(2);
    let last = pairs.remainder();
    let mut uv_pairs = uv.chunks_exact(2);
    let mut dst_pairs = dst.chunks_exact_mut(8);
    for ((y, c), d) in pairs.zip(uv_pairs.by_ref()).zip(dst_pairs.by_ref()) {
        let terms = chroma_terms(c[0], c[1]);
        d[..4].copy_from_slice(&yuv_terms_to_bgrx(y[0], terms));
        d[4..].copy_from_slice(&yuv_terms_to_bgrx(y[1], terms));
    }
    if let (Some(&y), Some(c), Some(d)) = (
        last.first(),
        uv_pairs.next(),
        dst_pairs.into_remainder().first_chunk_mut::<4>(),
    ) {
        *d = yuv_terms_to_bgrx(y, chroma_terms(c[0], c[1]));
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! `pshufb` kernels. Each is an `unsafe fn` only because it needs a CPU feature; the
    //! memory accesses stay inside the rows they are given. Source rows are guest
    //! memory, read through their raw pointer with unaligned loads (no reference).
    use std::arch::x86_64::*;

    use crate::sys::volatile::VolatileSlice;

    /// Byte shuffle for one 16-byte lane of 32-bit pixels: swap bytes 0 and 2 of each
    /// pixel when `swap`, else identity.
    const fn mask32(swap: bool) -> [i8; 16] {
        let mut m = [0i8; 16];
        let mut i = 0;
        while i < 4 {
            let base = (i * 4) as i8;
            if swap {
                m[i * 4] = base + 2;
                m[i * 4 + 2] = base;
            } else {
                m[i * 4] = base;
                m[i * 4 + 2] = base + 2;
            }
            m[i * 4 + 1] = base + 1;
            m[i * 4 + 3] = base + 3;
            i += 1;
        }
        m
    }

    /// 32-bit pixels, AVX2: swap R/B when `SWAP`, OR alpha 0xFF when `ALPHA`.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn shuffle32_avx2<const SWAP: bool, const ALPHA: bool>(
        src: VolatileSlice<'_>,
        dst: &mut [u8],
    ) {
        let n = src.len().min(dst.len()) & !3;
        // Bring the stores to a 32-byte boundary (when the destination is 4-byte aligned,
        // as wl_shm rows are) so that no store splits a cache line.
        let misalign = dst.as_ptr() as usize & 31;
        let mut i = if misalign % 4 == 0 {
            ((32 - misalign) & 31).min(n)
        } else {
            0
        };
        if let (Ok(s), Some(d)) = (src.subslice(0, i), dst.get_mut(..i)) {
            super::staged(s, 4, d, super::words32::<SWAP, ALPHA>);
        }
        // SAFETY: AVX2 is present (caller's contract); each load reads src[i..i + 32]
        // and each store writes dst[i..i + 32] with i + 32 ≤ n ≤ both lengths; the
        // unaligned load/store intrinsics have no alignment requirement.
        unsafe {
            let m = mask32(SWAP);
            let m128 = _mm_loadu_si128(m.as_ptr().cast());
            let mask = _mm256_broadcastsi128_si256(m128);
            let alpha = _mm256_set1_epi32(if ALPHA { 0xFF00_0000u32 as i32 } else { 0 });
            let sp = src.as_ptr();
            let dp = dst.as_mut_ptr();
            while i + 64 <= n {
                let a = _mm256_loadu_si256(sp.add(i).cast());
                let b = _mm256_loadu_si256(sp.add(i + 32).cast());
                let (a, b) = if SWAP {
                    (_mm256_shuffle_epi8(a, mask), _mm256_shuffle_epi8(b, mask))
                } else {
                    (a, b)
                };
                let (a, b) = if ALPHA {
                    (_mm256_or_si256(a, alpha), _mm256_or_si256(b, alpha))
                } else {
                    (a, b)
                };
                _mm256_storeu_si256(dp.add(i).cast(), a);
                _mm256_storeu_si256(dp.add(i + 32).cast(), b);
                i += 64;
            }
            while i + 32 <= n {
                let a = _mm256_loadu_si256(sp.add(i).cast());
                let a = if SWAP {
                    _mm256_shuffle_epi8(a, mask)
                } else {
                    a
                };
                let a = if ALPHA { _mm256_or_si256(a, alpha) } else { a };
                _mm256_storeu_si256(dp.add(i).cast(), a);
                i += 32;
            }
        }
        if let (Ok(s), Some(d)) = (src.subslice(i, n - i), dst.get_mut(i..n)) {
            super::staged(s, 4, d, super::words32::<SWAP, ALPHA>);
        }
    }

    /// 32-bit pixels, SSSE3: swap R/B when `SWAP`, OR alpha 0xFF when `ALPHA`.
    ///
    /// # Safety
    /// The CPU must support SSSE3.
    #[target_feature(enable = "ssse3")]
    pub unsafe fn shuffle32_ssse3<const SWAP: bool, const ALPHA: bool>(
        src: VolatileSlice<'_>,
        dst: &mut [u8],
    ) {
        let n = src.len().min(dst.len()) & !3;
        let mut i = 0;
        // SAFETY: SSSE3 is present (caller's contract); each load reads src[i..i + 16]
        // and each store writes dst[i..i + 16] with i + 16 ≤ n ≤ both lengths;
        // unaligned intrinsics.
        unsafe {
            let m = mask32(SWAP);
            let mask = _mm_loadu_si128(m.as_ptr().cast());
            let alpha = _mm_set1_epi32(if ALPHA { 0xFF00_0000u32 as i32 } else { 0 });
            let sp = src.as_ptr();
            let dp = dst.as_mut_ptr();
            while i + 16 <= n {
                let a = _mm_loadu_si128(sp.add(i).cast());
                let a = if SWAP { _mm_shuffle_epi8(a, mask) } else { a };
                let a = if ALPHA { _mm_or_si128(a, alpha) } else { a };
                _mm_storeu_si128(dp.add(i).cast(), a);
                i += 16;
            }
        }
        if let (Ok(s), Some(d)) = (src.subslice(i, n - i), dst.get_mut(i..n)) {
            super::staged(s, 4, d, super::words32::<SWAP, ALPHA>);
        }
    }

    /// RGB565 → B G R 0xFF: the portable loop, compiled for AVX2 (the compiler
    /// vectorises it 8 pixels at a time).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn rgb565_avx2(src: &[u8], dst: &mut [u8]) {
        super::rgb565_words(src, dst);
    }

    /// NV12 → B G R 0xFF: the portable row loop, compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn nv12_avx2(luma: &[u8], uv: &[u8], odd: bool, dst: &mut [u8]) {
        super::nv12_row(luma, uv, odd, dst);
    }

    /// 24-bit pixels → B G R 0xFF, SSSE3; `RGB` means source bytes R G B.
    ///
    /// # Safety
    /// The CPU must support SSSE3.
    #[target_feature(enable = "ssse3")]
    pub unsafe fn rgb24_ssse3<const RGB: bool>(src: VolatileSlice<'_>, dst: &mut [u8]) {
        let pixels = (src.len() / 3).min(dst.len() / 4);
        let (mut si, mut di) = (0usize, 0usize);
        let mut done = 0usize;
        // SAFETY: SSSE3 is present (caller's contract). Each iteration loads
        // src[si..si + 16] (si + 16 ≤ 3 × pixels ≤ src.len(), checked by the loop
        // condition) and stores dst[di..di + 16] for 4 pixels (di + 16 = 4 × (done + 4)
        // ≤ 4 × pixels ≤ dst.len()); unaligned intrinsics.
        unsafe {
            let mut m = [0i8; 16];
            let mut p = 0;
            while p < 4 {
                let s = (p * 3) as i8;
                if RGB {
                    m[p * 4] = s + 2;
                    m[p * 4 + 2] = s;
                } else {
                    m[p * 4] = s;
                    m[p * 4 + 2] = s + 2;
                }
                m[p * 4 + 1] = s + 1;
                m[p * 4 + 3] = -128; // zero, then OR 0xFF
                p += 1;
            }
            let mask = _mm_loadu_si128(m.as_ptr().cast());
            let alpha = _mm_set1_epi32(0xFF00_0000u32 as i32);
            let sp = src.as_ptr();
            let dp = dst.as_mut_ptr();
            // 16 source bytes hold 5⅓ pixels; 4 are used, so require 16 readable.
            while si + 16 <= pixels * 3 && done + 4 <= pixels {
                let a = _mm_loadu_si128(sp.add(si).cast());
                let a = _mm_or_si128(_mm_shuffle_epi8(a, mask), alpha);
                _mm_storeu_si128(dp.add(di).cast(), a);
                si += 12;
                di += 16;
                done += 4;
            }
        }
        if let (Ok(s), Some(d)) = (
            src.subslice(si, pixels * 3 - si),
            dst.get_mut(di..pixels * 4),
        ) {
            super::staged(s, 3, d, super::words24::<RGB>);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reference implementation.

/// The bytes (B, G, R, X/A) that picture pixel `x` of memory row `mem_row` becomes.
fn reference_pixel(
    src: &Source,
    dst: DestFormat,
    x: usize,
    mem_row: usize,
) -> Result<[u8; 4], ConvertError> {
    let plane0 = src.planes.first().ok_or(ConvertError::PlaneCount {
        format: src.format,
        expected: src.format.planes().len(),
        got: 0,
    })?;
    let bpp = src.format.bytes_per_pixel() as usize;
    let mut p = [0u8; 4];
    sub(
        plane0.data,
        mem_row * plane0.stride + x * bpp,
        bpp,
        "plane 0",
        mem_row,
    )?
    .copy_to(&mut p[..bpp])
    .map_err(|_| ConvertError::RowOutOfBounds {
        what: "plane 0",
        row: mem_row as u64,
    })?;
    let keep_alpha = dst == DestFormat::Argb8888;
    let alpha = |a: u8| if keep_alpha { a } else { 0xFF };
    Ok(match src.format {
        PixelFormat::Xrgb8888 => match dst {
            // A plain copy: the X byte passes through.
            DestFormat::Xrgb8888 => [p[0], p[1], p[2], p[3]],
            DestFormat::Argb8888 => [p[0], p[1], p[2], 0xFF],
        },
        PixelFormat::Argb8888 => [p[0], p[1], p[2], alpha(p[3])],
        PixelFormat::Xbgr8888 => [p[2], p[1], p[0], 0xFF],
        PixelFormat::Abgr8888 => [p[2], p[1], p[0], alpha(p[3])],
        PixelFormat::Rgb888 => [p[0], p[1], p[2], 0xFF],
        PixelFormat::Bgr888 => [p[2], p[1], p[0], 0xFF],
        PixelFormat::Rgb565 => rgb565_to_bgrx(u16::from_le_bytes([p[0], p[1]])),
        PixelFormat::Nv12 => {
            let plane1 = src.planes.get(1).ok_or(ConvertError::PlaneCount {
                format: src.format,
                expected: 2,
                got: src.planes.len(),
            })?;
            let c_row = mem_row / 2;
            let mut c = [0u8; 2];
            sub(
                plane1.data,
                c_row * plane1.stride + (x / 2) * 2,
                2,
                "plane 1",
                c_row,
            )?
            .copy_to(&mut c)
            .map_err(|_| ConvertError::RowOutOfBounds {
                what: "plane 1",
                row: c_row as u64,
            })?;
            let [r, g, b] = nv12_to_rgb(p[0], c[0], c[1]);
            [b, g, r, 0xFF]
        }
    })
}

/// A plain per-pixel implementation of [`blit`] (same contract, same results), for
/// tests and benchmarks. Slow on purpose: one pixel at a time, no specialisation.
#[doc(hidden)]
pub fn blit_reference(
    src: &Source,
    dst: &mut Dest,
    damage: &[Rect],
) -> Result<BlitStats, ConvertError> {
    validate(src, dst)?;
    let (rects, pixels) = clip_damage(damage, src.width, src.height);
    for rect in &rects {
        for y in rect.y..(rect.bottom() as u32) {
            let mem_row = if src.y0_top { y } else { src.height - 1 - y } as usize;
            for x in rect.x..(rect.right() as u32) {
                let px = reference_pixel(src, dst.format, x as usize, mem_row)?;
                let at = y as usize * dst.stride + x as usize * 4;
                let out = at
                    .checked_add(4)
                    .and_then(|end| dst.data.get_mut(at..end))
                    .ok_or(ConvertError::RowOutOfBounds {
                        what: "destination",
                        row: u64::from(y),
                    })?;
                out.copy_from_slice(&px);
            }
        }
    }
    Ok(BlitStats {
        rects: rects.len(),
        pixels,
        bytes: pixels * 4,
        threads: 1,
    })
}
