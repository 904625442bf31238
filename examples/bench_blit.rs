//! Benchmark of the gl=off pixel path against memcpy and pixman, in one run.
//!
//! ```text
//! cargo run --release --no-default-features --example bench_blit [-- --quick]
//! ```
//!
//! For 1920×1080 and 3840×2160, full frame and one rectangle of 10% of the area, it
//! times (median of several runs after a warm-up):
//! * `memcpy`: one `copy_from_slice` of as many bytes as the blit writes;
//! * `blit` (default options: one thread) XRGB8888 → XRGB8888 (same format),
//!   XBGR8888 → XRGB8888 and XBGR8888 → ARGB8888 (swizzles);
//! * pixman `pixman_image_composite32(PIXMAN_OP_SRC)` for the same operations.
//!
//! It prints each time, the bandwidth relative to memcpy, the speed-up over pixman and
//! the cost of 10% damage relative to the full frame; then full frames on 1, 2 and 4
//! threads (`--threading` runs only that part).

use std::ffi::c_int;
use std::hint::black_box;
use std::time::Instant;

use guestfb::format::PixelFormat;
use guestfb::import::convert::{
    blit_with_options, BlitOptions, Dest, DestFormat, Rect, Simd, Source, SourcePlane,
};

mod pixman {
    //! The few pixman entry points the benchmark needs.
    use std::ffi::c_int;

    /// Opaque `pixman_image_t`.
    #[repr(C)]
    pub struct Image {
        _private: [u8; 0],
    }

    /// `PIXMAN_FORMAT(bpp, type, a, r, g, b)`.
    const fn format(bpp: u32, kind: u32, a: u32, r: u32, g: u32, b: u32) -> u32 {
        (bpp << 24) | (kind << 16) | (a << 12) | (r << 8) | (g << 4) | b
    }
    const TYPE_ARGB: u32 = 2;
    const TYPE_ABGR: u32 = 3;
    pub const X8R8G8B8: u32 = format(32, TYPE_ARGB, 0, 8, 8, 8);
    pub const A8R8G8B8: u32 = format(32, TYPE_ARGB, 8, 8, 8, 8);
    pub const X8B8G8R8: u32 = format(32, TYPE_ABGR, 0, 8, 8, 8);
    pub const OP_SRC: c_int = 1;

    #[link(name = "pixman-1")]
    extern "C" {
        pub fn pixman_image_create_bits(
            format: u32,
            width: c_int,
            height: c_int,
            bits: *mut u32,
            rowstride_bytes: c_int,
        ) -> *mut Image;
        pub fn pixman_image_unref(image: *mut Image) -> c_int;
        #[allow(clippy::too_many_arguments)]
        pub fn pixman_image_composite32(
            op: c_int,
            src: *mut Image,
            mask: *mut Image,
            dest: *mut Image,
            src_x: i32,
            src_y: i32,
            mask_x: i32,
            mask_y: i32,
            dest_x: i32,
            dest_y: i32,
            width: i32,
            height: i32,
        );
    }
}

/// Median wall time in seconds of `iters` runs of `f` after `warm` warm-up runs.
fn median_secs(warm: usize, iters: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warm {
        f();
    }
    let mut times: Vec<f64> = (0..iters)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Filler bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// u32 storage (pixman wants 4-byte aligned bits), viewed as bytes.
fn words(len_bytes: usize) -> Vec<u32> {
    let bytes = noise(len_bytes);
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn as_bytes(words: &[u32]) -> &[u8] {
    // SAFETY: u32 has no padding and every byte pattern is a valid u8; the length is
    // the same memory measured in bytes.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), words.len() * 4) }
}

fn as_bytes_mut(words: &mut [u32]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`, and the exclusive borrow is carried over.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), words.len() * 4) }
}

struct Row {
    label: String,
    secs: f64,
    bytes: u64,
    memcpy: f64,
    pixman: Option<f64>,
    full: Option<f64>,
}

/// Times XBGR8888 → XRGB8888 full frames with 1, 2 and 4 threads, interleaved round by
/// round so that load from other processes hits every setting alike.
fn threading(quick: bool) {
    println!("\nthreading (XBGR→XRGB full frame, medians of interleaved rounds):");
    println!(
        "{:<12} {:>10} {:>10} {:>10}",
        "size", "1 thread", "2 threads", "4 threads"
    );
    for (width, height) in [(1920u32, 1080u32), (3840, 2160)] {
        let stride = width as usize * 4;
        let src_bytes = noise(stride * height as usize);
        let mut dst_bytes = vec![0u8; stride * height as usize];
        let planes = [SourcePlane {
            data: &src_bytes,
            stride,
        }];
        let src = Source {
            format: PixelFormat::Xbgr8888,
            width,
            height,
            planes: &planes,
            y0_top: true,
        };
        let rounds = if quick { 3 } else { 15 };
        let mut times = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (slot, threads) in [1usize, 2, 4].into_iter().enumerate() {
                let options = BlitOptions {
                    max_threads: threads,
                    min_bytes_per_thread: 1,
                    ..BlitOptions::default()
                };
                times[slot].push(median_secs(1, 5, || {
                    let mut dst = Dest {
                        data: &mut dst_bytes,
                        stride,
                        format: DestFormat::Xrgb8888,
                    };
                    blit_with_options(&src, &mut dst, &[Rect::full(width, height)], &options)
                        .expect("blit");
                    black_box(&mut dst);
                }));
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2] * 1e3
        };
        println!(
            "{:<12} {:>8.3}ms {:>8.3}ms {:>8.3}ms",
            format!("{width}×{height}"),
            median(&mut times[0]),
            median(&mut times[1]),
            median(&mut times[2])
        );
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--threading") {
        threading(quick);
        return;
    }
    let simd = Simd::detected();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("guestfb blit benchmark: SIMD level {simd:?}, {threads} CPU(s) available");
    println!("times are medians; memcpy = one copy_from_slice of the bytes the blit writes\n");

    let mut rows: Vec<Row> = Vec::new();
    for (width, height) in [(1920u32, 1080u32), (3840, 2160)] {
        let iters = if quick {
            5
        } else if width > 2000 {
            21
        } else {
            41
        };
        let warm = if quick { 1 } else { 3 };
        let stride = width as usize * 4;
        let len = stride * height as usize;
        let src_words = words(len);
        let mut dst_words = vec![0u32; len / 4];
        let mut copy_dst = vec![0u8; len];
        let src_bytes = as_bytes(&src_words);

        // A 10% rectangle: sqrt(0.1) of each side, centred.
        let dw = (f64::from(width) * 0.1f64.sqrt()).round() as u32;
        let dh = (f64::from(height) * 0.1f64.sqrt()).round() as u32;
        let damages = [
            ("full", Rect::full(width, height)),
            (
                "10%",
                Rect::new((width - dw) / 2, (height - dh) / 2, dw, dh),
            ),
        ];
        let mut full_times: std::collections::HashMap<String, f64> = Default::default();
        for (damage_name, rect) in damages {
            let bytes = rect.area() * 4;
            let memcpy = median_secs(warm, iters, || {
                copy_dst[..bytes as usize].copy_from_slice(&src_bytes[..bytes as usize]);
                black_box(&mut copy_dst);
            });
            let mut push = |rows: &mut Vec<Row>, name: &str, secs: f64, pixman: Option<f64>| {
                let key = format!("{width}x{height} {name}");
                let full = if damage_name == "full" {
                    full_times.insert(key, secs);
                    None
                } else {
                    full_times.get(&key).copied()
                };
                rows.push(Row {
                    label: format!("{width}×{height} {damage_name:>4}  {name}"),
                    secs,
                    bytes,
                    memcpy,
                    pixman,
                    full,
                });
            };
            push(&mut rows, "memcpy", memcpy, None);

            let cases = [
                (
                    "XRGB→XRGB",
                    PixelFormat::Xrgb8888,
                    DestFormat::Xrgb8888,
                    pixman::X8R8G8B8,
                    pixman::X8R8G8B8,
                ),
                (
                    "XBGR→XRGB",
                    PixelFormat::Xbgr8888,
                    DestFormat::Xrgb8888,
                    pixman::X8B8G8R8,
                    pixman::X8R8G8B8,
                ),
                (
                    "XBGR→ARGB",
                    PixelFormat::Xbgr8888,
                    DestFormat::Argb8888,
                    pixman::X8B8G8R8,
                    pixman::A8R8G8B8,
                ),
            ];
            for (name, format, dest, pix_src, pix_dst) in cases {
                // pixman first, so our row can show the speed-up.
                // SAFETY: both images wrap live buffers of `height` rows of `stride`
                // bytes (u32-aligned) for the duration of the calls and are unreferenced
                // before the buffers are touched again.
                let pixman_secs = unsafe {
                    let s = pixman::pixman_image_create_bits(
                        pix_src,
                        width as c_int,
                        height as c_int,
                        src_words.as_ptr().cast_mut(),
                        stride as c_int,
                    );
                    let d = pixman::pixman_image_create_bits(
                        pix_dst,
                        width as c_int,
                        height as c_int,
                        dst_words.as_mut_ptr(),
                        stride as c_int,
                    );
                    assert!(
                        !s.is_null() && !d.is_null(),
                        "pixman_image_create_bits failed"
                    );
                    let secs = median_secs(warm, iters, || {
                        pixman::pixman_image_composite32(
                            pixman::OP_SRC,
                            s,
                            std::ptr::null_mut(),
                            d,
                            rect.x as i32,
                            rect.y as i32,
                            0,
                            0,
                            rect.x as i32,
                            rect.y as i32,
                            rect.width as i32,
                            rect.height as i32,
                        );
                    });
                    pixman::pixman_image_unref(s);
                    pixman::pixman_image_unref(d);
                    secs
                };
                let planes = [SourcePlane {
                    data: src_bytes,
                    stride,
                }];
                let src = Source {
                    format,
                    width,
                    height,
                    planes: &planes,
                    y0_top: true,
                };
                let dst_bytes = as_bytes_mut(&mut dst_words);
                let mut run = |options: BlitOptions| {
                    median_secs(warm, iters, || {
                        let mut dst = Dest {
                            data: dst_bytes,
                            stride,
                            format: dest,
                        };
                        blit_with_options(&src, &mut dst, &[rect], &options).expect("blit");
                        black_box(&mut dst);
                    })
                };
                let ours = run(BlitOptions::default());
                push(&mut rows, &format!("pixman {name}"), pixman_secs, None);
                push(
                    &mut rows,
                    &format!("blit   {name}"),
                    ours,
                    Some(pixman_secs),
                );
            }
        }
    }

    println!(
        "{:<44} {:>9} {:>8} {:>8} {:>9} {:>9}",
        "case", "ms", "GB/s", "×memcpy", "×pixman", "÷full"
    );
    for row in &rows {
        let gbs = row.bytes as f64 / row.secs / 1e9;
        let vs_memcpy = row.memcpy / row.secs;
        let vs_pixman = row
            .pixman
            .map_or(String::from("-"), |p| format!("{:.2}", p / row.secs));
        let vs_full = row
            .full
            .map_or(String::from("-"), |f| format!("{:.3}", row.secs / f));
        println!(
            "{:<44} {:>9.3} {:>8.2} {:>8.2} {:>9} {:>9}",
            row.label,
            row.secs * 1e3,
            gbs,
            vs_memcpy,
            vs_pixman,
            vs_full
        );
    }
    threading(quick);
}
