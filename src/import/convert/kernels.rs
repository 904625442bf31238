//! The row loop and the kernel dispatch: one kernel per (source, destination) format
//! pair, at the SIMD level the CPU has.
//!
//! Each kernel takes a source row and a destination row of the same pixel count (the
//! row loop slices them so); kernels never index past the shorter of the two. The source
//! row is guest memory (a `VolatileSlice`), never a `&[u8]`: the SIMD kernels (`x86`)
//! load from its raw pointer; the portable loops, written over slices, run on copies of
//! it made through a small stack buffer (`portable::staged`) or, for NV12's two planes,
//! a scratch row (`portable::stage`).

use crate::format::PixelFormat;
use crate::rect::Rect;
use crate::sys::volatile::VolatileSlice;

use super::portable::{self, stage, staged};
use super::validate::sub;
#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{ConvertError, DestFormat, Simd, Source, SourcePlane};

/// The row kernel for one (source, destination) format pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
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
    pub(super) fn select(src: PixelFormat, dst: DestFormat) -> Kernel {
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
pub(super) struct Job<'a> {
    pub(super) src: &'a Source<'a>,
    pub(super) kernel: Kernel,
    pub(super) simd: Simd,
    pub(super) dst_stride: usize,
    pub(super) rects: &'a [Rect],
}

impl Job<'_> {
    /// Converts the damaged parts of picture rows `[y0, y1)` into `band`, whose first
    /// byte is the start of destination row `band_y`.
    pub(super) fn run_band(
        &self,
        band: &mut [u8],
        band_y: u32,
        y0: u32,
        y1: u32,
    ) -> Result<(), ConvertError> {
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

/// 32-bit → 32-bit with alpha forced to 0xFF, R/B swapped when `swap`.
fn swizzle32(simd: Simd, swap: bool, src: VolatileSlice<'_>, dst: &mut [u8]) {
    if swap {
        shuffle32::<true, true>(simd, src, dst);
    } else {
        shuffle32::<false, true>(simd, src, dst);
    }
}

/// 32-bit → 32-bit with R/B swapped and alpha kept.
fn swap32_keep_alpha(simd: Simd, src: VolatileSlice<'_>, dst: &mut [u8]) {
    shuffle32::<true, false>(simd, src, dst);
}

/// 32-bit → 32-bit: R/B swapped when `SWAP`, alpha forced to 0xFF when `ALPHA`, by the
/// best kernel the CPU has.
fn shuffle32<const SWAP: bool, const ALPHA: bool>(
    simd: Simd,
    src: VolatileSlice<'_>,
    dst: &mut [u8],
) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => {
            // SAFETY: `Simd::Avx2` is only selected when AVX2 was detected at run time.
            unsafe { x86::shuffle32_avx2::<SWAP, ALPHA>(src, dst) }
        }
        #[cfg(target_arch = "x86_64")]
        Simd::Ssse3 => {
            // SAFETY: `Simd::Ssse3` is only selected when SSSE3 was detected at run time.
            unsafe { x86::shuffle32_ssse3::<SWAP, ALPHA>(src, dst) }
        }
        _ => staged(src, 4, dst, portable::words32::<SWAP, ALPHA>),
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
        (_, true) => staged(src, 3, dst, portable::words24::<true>),
        (_, false) => staged(src, 3, dst, portable::words24::<false>),
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
        _ => staged(src, 2, dst, portable::rgb565_words),
    }
}

/// One NV12 row (see [`nv12_row`]), compiled for AVX2 when the CPU has it.
fn nv12(simd: Simd, luma: &[u8], uv: &[u8], odd: bool, dst: &mut [u8]) {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::Avx2 => {
            // SAFETY: `Simd::Avx2` is only selected when AVX2 was detected at run time.
            unsafe { x86::nv12_avx2(luma, uv, odd, dst) }
        }
        _ => portable::nv12_row(luma, uv, odd, dst),
    }
}
