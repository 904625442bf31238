//! `pshufb` kernels. Each is an `unsafe fn` only because it needs a CPU feature; the
//! memory accesses stay inside the rows they are given. Source rows are guest
//! memory, read through their raw pointer with unaligned loads (no reference).
use std::arch::x86_64::*;

use crate::sys::volatile::VolatileSlice;

use super::portable::{nv12_row, rgb565_words, staged, words24, words32};

/// Byte shuffle of four `BPP`-byte pixels (3 or 4) into one 16-byte lane of 32-bit
/// pixels: bytes 0 and 2 of each pixel swapped when `swap`; the fourth byte kept (32-bit)
/// or zeroed (24-bit, for an OR with 0xFF after).
const fn shuffle_mask<const BPP: usize>(swap: bool) -> [i8; 16] {
    let mut m = [0i8; 16];
    let mut p = 0;
    while p < 4 {
        let s = (p * BPP) as i8;
        m[p * 4] = if swap { s + 2 } else { s };
        m[p * 4 + 1] = s + 1;
        m[p * 4 + 2] = if swap { s } else { s + 2 };
        m[p * 4 + 3] = if BPP == 4 { s + 3 } else { -128 };
        p += 1;
    }
    m
}

/// Bytes `from..to` of 32-bit pixels that a vector loop leaves, by the portable loop.
fn rest32<const SWAP: bool, const ALPHA: bool>(
    src: VolatileSlice<'_>,
    dst: &mut [u8],
    from: usize,
    to: usize,
) {
    if let (Ok(s), Some(d)) = (
        src.subslice(from, to.saturating_sub(from)),
        dst.get_mut(from..to),
    ) {
        staged(s, 4, d, words32::<SWAP, ALPHA>);
    }
}

/// 32-bit pixels, AVX2: swap R/B when `SWAP`, OR alpha 0xFF when `ALPHA`.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn shuffle32_avx2<const SWAP: bool, const ALPHA: bool>(
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
    rest32::<SWAP, ALPHA>(src, dst, 0, i);
    // SAFETY: AVX2 is present (caller's contract); each load reads src[i..i + 32]
    // and each store writes dst[i..i + 32] with i + 32 ≤ n ≤ both lengths; the
    // unaligned load/store intrinsics have no alignment requirement.
    unsafe {
        let m = shuffle_mask::<4>(SWAP);
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
    rest32::<SWAP, ALPHA>(src, dst, i, n);
}

/// 32-bit pixels, SSSE3: swap R/B when `SWAP`, OR alpha 0xFF when `ALPHA`.
///
/// # Safety
/// The CPU must support SSSE3.
#[target_feature(enable = "ssse3")]
pub(super) unsafe fn shuffle32_ssse3<const SWAP: bool, const ALPHA: bool>(
    src: VolatileSlice<'_>,
    dst: &mut [u8],
) {
    let n = src.len().min(dst.len()) & !3;
    let mut i = 0;
    // SAFETY: SSSE3 is present (caller's contract); each load reads src[i..i + 16]
    // and each store writes dst[i..i + 16] with i + 16 ≤ n ≤ both lengths;
    // unaligned intrinsics.
    unsafe {
        let m = shuffle_mask::<4>(SWAP);
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
    rest32::<SWAP, ALPHA>(src, dst, i, n);
}

/// RGB565 → B G R 0xFF: the portable loop, compiled for AVX2 (the compiler
/// vectorises it 8 pixels at a time).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn rgb565_avx2(src: &[u8], dst: &mut [u8]) {
    rgb565_words(src, dst);
}

/// NV12 → B G R 0xFF: the portable row loop, compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn nv12_avx2(luma: &[u8], uv: &[u8], odd: bool, dst: &mut [u8]) {
    nv12_row(luma, uv, odd, dst);
}

/// 24-bit pixels → B G R 0xFF, SSSE3; `RGB` means source bytes R G B.
///
/// # Safety
/// The CPU must support SSSE3.
#[target_feature(enable = "ssse3")]
pub(super) unsafe fn rgb24_ssse3<const RGB: bool>(src: VolatileSlice<'_>, dst: &mut [u8]) {
    let pixels = (src.len() / 3).min(dst.len() / 4);
    let (mut si, mut di) = (0usize, 0usize);
    let mut done = 0usize;
    // SAFETY: SSSE3 is present (caller's contract). Each iteration loads
    // src[si..si + 16] (si + 16 ≤ 3 × pixels ≤ src.len(), checked by the loop
    // condition) and stores dst[di..di + 16] for 4 pixels (di + 16 = 4 × (done + 4)
    // ≤ 4 × pixels ≤ dst.len()); unaligned intrinsics.
    unsafe {
        let m = shuffle_mask::<3>(RGB);
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
        staged(s, 3, d, words24::<RGB>);
    }
}
