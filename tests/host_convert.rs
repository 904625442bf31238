//! Host tests of the gl=off pixel path: `blit` against the scalar reference, concrete
//! pixel values per format, and input validation.

use guestfb::format::{PixelFormat, ALL_FORMATS};
use guestfb::import::convert::{
    blit, blit_with_options, nv12_to_rgb, BlitOptions, ConvertError, Dest, DestFormat, Rect, Simd,
    Source, SourcePlane,
};
use guestfb::testing::blit_reference;
use proptest::prelude::*;

const SENTINEL: u8 = 0xA5;

/// Deterministic filler bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Plane buffers for `format` at `width` × `height`: stride = row bytes + pad, and the
/// last row exactly as long as the row bytes plus `tail` extra bytes.
fn planes(
    format: PixelFormat,
    width: u32,
    height: u32,
    pads: [usize; 2],
    tail: usize,
    seed: u64,
) -> Vec<(Vec<u8>, usize)> {
    format
        .planes()
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let row = width.div_ceil(info.h_sub) as usize * info.bytes_per_sample as usize;
            let rows = height.div_ceil(info.v_sub) as usize;
            let stride = row + pads[i];
            let len = (rows - 1) * stride + row + tail;
            (noise(seed.wrapping_add(i as u64 * 7919), len), stride)
        })
        .collect()
}

fn source_planes(bufs: &[(Vec<u8>, usize)]) -> Vec<SourcePlane<'_>> {
    bufs.iter()
        .map(|(data, stride)| SourcePlane {
            data: data[..].into(),
            stride: *stride,
        })
        .collect()
}

fn dest_format(i: usize) -> DestFormat {
    [DestFormat::Xrgb8888, DestFormat::Argb8888][i % 2]
}

#[derive(Debug, Clone)]
struct Case {
    format: PixelFormat,
    dest: DestFormat,
    width: u32,
    height: u32,
    pads: [usize; 2],
    dst_pad: usize,
    tail: usize,
    y0_top: bool,
    damage: Vec<Rect>,
    seed: u64,
    simd: Simd,
    threads: usize,
}

fn case() -> impl Strategy<Value = Case> {
    let rect =
        (0u32..90, 0u32..70, 0u32..90, 0u32..70).prop_map(|(x, y, w, h)| Rect::new(x, y, w, h));
    let huge = prop_oneof![
        Just(Rect::new(u32::MAX, 0, u32::MAX, 5)),
        Just(Rect::new(3, 2, u32::MAX, u32::MAX)),
        Just(Rect::new(0, 0, u32::MAX, u32::MAX)),
    ];
    let any_rect = prop_oneof![8 => rect, 1 => huge];
    (
        0usize..ALL_FORMATS.len(),
        0usize..2,
        1u32..=70,
        1u32..=50,
        (0usize..=9, 0usize..=9, 0usize..=9, 0usize..=3),
        any::<bool>(),
        prop::collection::vec(any_rect, 0..6),
        any::<u64>(),
        0usize..3,
        1usize..=3,
    )
        .prop_map(
            |(
                f,
                d,
                width,
                height,
                (p0, p1, dst_pad, tail),
                y0_top,
                damage,
                seed,
                simd,
                threads,
            )| Case {
                format: ALL_FORMATS[f],
                dest: dest_format(d),
                width,
                height,
                pads: [p0, p1],
                dst_pad,
                tail,
                y0_top,
                damage,
                seed,
                simd: [Simd::Portable, Simd::Ssse3, Simd::Avx2][simd],
                threads,
            },
        )
}

/// Runs `blit` (with the case's SIMD level and threading) and `blit_reference` on the
/// same input; returns both destinations.
fn run_both(c: &Case) -> (Vec<u8>, Vec<u8>) {
    let bufs = planes(c.format, c.width, c.height, c.pads, c.tail, c.seed);
    let planes = source_planes(&bufs);
    let src = Source {
        format: c.format,
        width: c.width,
        height: c.height,
        planes: &planes,
        y0_top: c.y0_top,
    };
    let stride = c.width as usize * 4 + c.dst_pad;
    let len = (c.height as usize - 1) * stride + c.width as usize * 4;
    let mut fast = vec![SENTINEL; len];
    let mut slow = vec![SENTINEL; len];
    let options = BlitOptions {
        max_threads: c.threads,
        min_bytes_per_thread: 1,
        max_simd: c.simd,
    };
    let a = blit_with_options(
        &src,
        &mut Dest {
            data: &mut fast,
            stride,
            format: c.dest,
        },
        &c.damage,
        &options,
    )
    .expect("valid input");
    let b = blit_reference(
        &src,
        &mut Dest {
            data: &mut slow,
            stride,
            format: c.dest,
        },
        &c.damage,
    )
    .expect("valid input");
    assert_eq!((a.rects, a.pixels, a.bytes), (b.rects, b.pixels, b.bytes));
    (fast, slow)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn blit_matches_reference(c in case()) {
        let (fast, slow) = run_both(&c);
        let stride = c.width as usize * 4 + c.dst_pad;
        // Untouched outside the damage.
        let clipped: Vec<Rect> = c.damage.iter().filter_map(|r| r.clip(c.width, c.height)).collect();
        for (i, &byte) in fast.iter().enumerate() {
            let (y, x) = ((i / stride) as u32, ((i % stride) / 4) as u32);
            let inside = (i % stride) < c.width as usize * 4
                && clipped.iter().any(|r| r.intersect(&Rect::new(x, y, 1, 1)).is_some());
            if !inside {
                prop_assert_eq!(byte, SENTINEL, "byte {} (x {}, y {}) outside the damage changed", i, x, y);
            }
        }
        prop_assert!(fast == slow, "blit differs from reference for {:?}", c);
    }

    /// Arbitrary (mostly invalid) geometry: never a panic, and whenever `blit` accepts
    /// it, it agrees with the reference.
    #[test]
    fn arbitrary_geometry_never_panics(
        f in 0usize..ALL_FORMATS.len(),
        d in 0usize..2,
        width in prop_oneof![0u32..80, Just(u32::MAX), Just(1 << 30)],
        height in prop_oneof![0u32..60, Just(u32::MAX), Just(1 << 30)],
        nplanes in 0usize..4,
        lens in prop::collection::vec(0usize..6000, 4),
        strides in prop::collection::vec(prop_oneof![0usize..400, Just(usize::MAX), Just(usize::MAX / 3)], 4),
        dst_len in 0usize..20000,
        dst_stride in prop_oneof![0usize..400, Just(usize::MAX)],
        damage in prop::collection::vec((any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()), 0..4),
    ) {
        let bufs: Vec<Vec<u8>> = lens.iter().map(|&l| noise(l as u64, l)).collect();
        let planes: Vec<SourcePlane> = (0..nplanes)
            .map(|i| SourcePlane { data: bufs[i][..].into(), stride: strides[i] })
            .collect();
        let damage: Vec<Rect> = damage.into_iter().map(|(x, y, w, h)| Rect::new(x % 100, y % 100, w, h)).collect();
        let src = Source { format: ALL_FORMATS[f], width, height, planes: &planes, y0_top: f % 2 == 0 };
        let mut a = vec![0u8; dst_len];
        let mut b = vec![0u8; dst_len];
        let ra = blit(&src, &mut Dest { data: &mut a, stride: dst_stride, format: dest_format(d) }, &damage);
        let rb = blit_reference(&src, &mut Dest { data: &mut b, stride: dst_stride, format: dest_format(d) }, &damage);
        prop_assert_eq!(ra.is_ok(), rb.is_ok());
        prop_assert!(a == b);
    }
}

/// Forces the band split on a frame big enough for the default thresholds.
#[test]
fn threaded_blit_matches_reference() {
    for format in ALL_FORMATS {
        for y0_top in [true, false] {
            let c = Case {
                format,
                dest: DestFormat::Argb8888,
                width: 777,
                height: 701,
                pads: [13, 6],
                dst_pad: 8,
                tail: 0,
                y0_top,
                damage: vec![Rect::new(5, 3, 700, 690), Rect::new(100, 650, 2000, 2000)],
                seed: 42,
                simd: Simd::Avx2,
                threads: 4,
            };
            let (fast, slow) = run_both(&c);
            assert!(fast == slow, "{format} y0_top {y0_top}");
        }
    }
}

/// Converts one pixel of `bytes` (plane 0; plane 1 for NV12) with both implementations.
fn one_pixel(format: PixelFormat, dest: DestFormat, plane0: &[u8], plane1: &[u8]) -> [u8; 4] {
    let mut planes = vec![SourcePlane {
        data: plane0.into(),
        stride: plane0.len(),
    }];
    if format == PixelFormat::Nv12 {
        planes.push(SourcePlane {
            data: plane1.into(),
            stride: plane1.len(),
        });
    }
    let src = Source {
        format,
        width: 1,
        height: 1,
        planes: &planes,
        y0_top: true,
    };
    let mut out = [0u8; 4];
    let mut reference = [0u8; 4];
    blit(
        &src,
        &mut Dest {
            data: &mut out,
            stride: 4,
            format: dest,
        },
        &[Rect::full(1, 1)],
    )
    .unwrap();
    blit_reference(
        &src,
        &mut Dest {
            data: &mut reference,
            stride: 4,
            format: dest,
        },
        &[Rect::full(1, 1)],
    )
    .unwrap();
    assert_eq!(out, reference);
    out
}

#[test]
fn pixel_values_per_format() {
    use DestFormat::{Argb8888 as A, Xrgb8888 as X};
    use PixelFormat as P;
    let rgbx = [0x11, 0x22, 0x33, 0x44];
    // (format, dest, source bytes, expected B G R A bytes)
    let table: &[(PixelFormat, DestFormat, &[u8], [u8; 4])] = &[
        (P::Xrgb8888, X, &rgbx, [0x11, 0x22, 0x33, 0x44]), // plain copy
        (P::Xrgb8888, A, &rgbx, [0x11, 0x22, 0x33, 0xFF]),
        (P::Argb8888, A, &rgbx, [0x11, 0x22, 0x33, 0x44]),
        (P::Argb8888, X, &rgbx, [0x11, 0x22, 0x33, 0xFF]),
        (P::Xbgr8888, X, &rgbx, [0x33, 0x22, 0x11, 0xFF]),
        (P::Xbgr8888, A, &rgbx, [0x33, 0x22, 0x11, 0xFF]),
        (P::Abgr8888, A, &rgbx, [0x33, 0x22, 0x11, 0x44]),
        (P::Abgr8888, X, &rgbx, [0x33, 0x22, 0x11, 0xFF]),
        // DRM BGR888: bytes R G B.
        (P::Bgr888, X, &[0x11, 0x22, 0x33], [0x33, 0x22, 0x11, 0xFF]),
        // DRM RGB888: bytes B G R.
        (P::Rgb888, A, &[0x11, 0x22, 0x33], [0x11, 0x22, 0x33, 0xFF]),
        (P::Rgb565, X, &0xF800u16.to_le_bytes(), [0, 0, 0xFF, 0xFF]),
        (P::Rgb565, A, &0x07E0u16.to_le_bytes(), [0, 0xFF, 0, 0xFF]),
        (P::Rgb565, X, &0x001Fu16.to_le_bytes(), [0xFF, 0, 0, 0xFF]),
        (
            P::Rgb565,
            X,
            &0x8410u16.to_le_bytes(),
            [0x84, 0x82, 0x84, 0xFF],
        ),
    ];
    for (format, dest, bytes, want) in table {
        assert_eq!(
            one_pixel(*format, *dest, bytes, &[]),
            *want,
            "{format} → {dest:?}"
        );
    }
    // NV12: white, black, and the saturated primaries of limited range.
    assert_eq!(
        one_pixel(P::Nv12, X, &[235], &[128, 128]),
        [255, 255, 255, 0xFF]
    );
    assert_eq!(one_pixel(P::Nv12, A, &[16], &[128, 128]), [0, 0, 0, 0xFF]);
    assert_eq!(
        one_pixel(P::Nv12, X, &[126], &[128, 128]),
        [128, 128, 128, 0xFF]
    );
    assert_eq!(nv12_to_rgb(81, 90, 240), [255, 0, 0]);
    assert_eq!(nv12_to_rgb(41, 240, 110), [0, 0, 255]);
    assert_eq!(nv12_to_rgb(255, 128, 128), [255, 255, 255]); // clamped
}

#[test]
fn y_flip_and_nv12_chroma_rows() {
    // 2×4 NV12, memory rows bottom-up: picture row 0 reads memory row 3, whose chroma is
    // CbCr row 1.
    let luma = [16, 16, 16, 16, 16, 16, 235, 235];
    let chroma = [128, 128, 128, 255]; // row 0: grey; row 1: Cr = 255 (red push)
    let planes = [
        SourcePlane {
            data: luma[..].into(),
            stride: 2,
        },
        SourcePlane {
            data: chroma[..].into(),
            stride: 2,
        },
    ];
    let src = Source {
        format: PixelFormat::Nv12,
        width: 2,
        height: 4,
        planes: &planes,
        y0_top: false,
    };
    let mut out = vec![0u8; 32];
    blit(
        &src,
        &mut Dest {
            data: &mut out,
            stride: 8,
            format: DestFormat::Xrgb8888,
        },
        &[Rect::full(2, 4)],
    )
    .unwrap();
    let [r, g, b] = nv12_to_rgb(235, 128, 255);
    assert_eq!(&out[..4], &[b, g, r, 0xFF]);
    let [r, g, b] = nv12_to_rgb(16, 128, 255);
    assert_eq!(&out[8..12], &[b, g, r, 0xFF]); // memory row 2, chroma row 1
    assert_eq!(&out[16..20], &[0, 0, 0, 0xFF]); // memory row 1, grey chroma
}

#[test]
fn errors_are_typed() {
    let data = [0u8; 100];
    let dst_ok = || vec![0u8; 4 * 4 * 4];
    let run = |format, width, height, planes: &[SourcePlane], dst: &mut [u8], stride| {
        let src = Source {
            format,
            width,
            height,
            planes,
            y0_top: true,
        };
        blit(
            &src,
            &mut Dest {
                data: dst,
                stride,
                format: DestFormat::Xrgb8888,
            },
            &[Rect::full(width, height)],
        )
    };
    // Wrong plane count.
    let one = [SourcePlane {
        data: data[..].into(),
        stride: 4,
    }];
    assert_eq!(
        run(PixelFormat::Nv12, 4, 4, &one, &mut dst_ok(), 16),
        Err(ConvertError::PlaneCount {
            format: PixelFormat::Nv12,
            expected: 2,
            got: 1
        })
    );
    assert!(matches!(
        run(PixelFormat::Xrgb8888, 4, 4, &[], &mut dst_ok(), 16),
        Err(ConvertError::PlaneCount { .. })
    ));
    // Small stride.
    let small = [SourcePlane {
        data: data[..].into(),
        stride: 15,
    }];
    let err = run(PixelFormat::Xrgb8888, 4, 4, &small, &mut dst_ok(), 16).unwrap_err();
    assert_eq!(
        err,
        ConvertError::SourceStride {
            plane: 0,
            stride: 15,
            samples: 4,
            bytes_per_sample: 4
        }
    );
    assert_eq!(err.to_string(), "plane 0 stride 15 < 4 samples × 4 bytes");
    // Short plane: 4 rows at stride 32 need 3 × 32 + 16 = 112 > 100.
    let short = [SourcePlane {
        data: data[..].into(),
        stride: 32,
    }];
    let err = run(PixelFormat::Xrgb8888, 4, 4, &short, &mut dst_ok(), 16).unwrap_err();
    assert_eq!(
        err,
        ConvertError::SourceTooShort {
            plane: 0,
            len: 100,
            rows: 4,
            stride: 32,
            needed: 112
        }
    );
    assert!(err.to_string().contains("112"));
    // Short chroma plane.
    let luma = [0u8; 16];
    let nv = [
        SourcePlane {
            data: luma[..].into(),
            stride: 4,
        },
        SourcePlane {
            data: data[..7].into(),
            stride: 4,
        },
    ];
    assert!(matches!(
        run(PixelFormat::Nv12, 4, 4, &nv, &mut dst_ok(), 16),
        Err(ConvertError::SourceTooShort {
            plane: 1,
            needed: 8,
            ..
        })
    ));
    // Destination stride and length.
    let ok = [SourcePlane {
        data: data[..].into(),
        stride: 16,
    }];
    assert_eq!(
        run(PixelFormat::Xrgb8888, 4, 4, &ok, &mut dst_ok(), 12),
        Err(ConvertError::DestStride {
            stride: 12,
            width: 4
        })
    );
    assert_eq!(
        run(PixelFormat::Xrgb8888, 4, 4, &ok, &mut [0u8; 63], 16),
        Err(ConvertError::DestTooShort {
            len: 63,
            rows: 4,
            stride: 16,
            needed: 64
        })
    );
    // Overflowing strides.
    let huge = [SourcePlane {
        data: data[..].into(),
        stride: usize::MAX,
    }];
    assert!(matches!(
        run(PixelFormat::Xrgb8888, 4, 4, &huge, &mut dst_ok(), 16),
        Err(ConvertError::Overflow { .. })
    ));
    // Nothing is written on error.
    let mut dst = vec![SENTINEL; 64];
    let _ = run(PixelFormat::Xrgb8888, 4, 4, &short, &mut dst, 16);
    assert!(dst.iter().all(|&b| b == SENTINEL));
}

#[test]
fn rect_helpers_and_stats() {
    let r = Rect::new(10, 10, 20, 20);
    assert_eq!(r.area(), 400);
    assert_eq!(
        r.intersect(&Rect::new(25, 0, 100, 15)),
        Some(Rect::new(25, 10, 5, 5))
    );
    assert_eq!(r.intersect(&Rect::new(30, 10, 5, 5)), None); // touching edge
    assert_eq!(r.clip(15, 100), Some(Rect::new(10, 10, 5, 20)));
    assert_eq!(r.clip(10, 100), None);
    assert_eq!(
        Rect::new(u32::MAX, u32::MAX, u32::MAX, u32::MAX).clip(u32::MAX, u32::MAX),
        None
    );
    assert_eq!(
        Rect::new(1, 1, u32::MAX, u32::MAX).clip(8, 4),
        Some(Rect::new(1, 1, 7, 3))
    );
    assert!(Rect::new(3, 3, 0, 9).is_empty());

    let data = [0u8; 8 * 4 * 4];
    let planes = [SourcePlane {
        data: data[..].into(),
        stride: 32,
    }];
    let src = Source {
        format: PixelFormat::Xbgr8888,
        width: 8,
        height: 4,
        planes: &planes,
        y0_top: true,
    };
    let mut out = vec![0u8; 128];
    let stats = blit(
        &src,
        &mut Dest {
            data: &mut out,
            stride: 32,
            format: DestFormat::Xrgb8888,
        },
        &[
            Rect::new(6, 2, 10, 10),
            Rect::new(0, 0, 0, 3),
            Rect::new(9, 0, 2, 2),
            Rect::new(0, 0, 1, 1),
        ],
    )
    .unwrap();
    assert_eq!(stats.rects, 2);
    assert_eq!(stats.pixels, 5);
    assert_eq!(stats.bytes, 20);
    assert_eq!(stats.threads, 1);
}
