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
    pub const A8B8G8R8: u32 = format(32, TYPE_ABGR, 8, 8, 8, 8);
    /// 16-bit `RRRRRGGGGGGBBBBB`, DRM RGB565.
    pub const R5G6B5: u32 = format(16, TYPE_ARGB, 0, 5, 6, 5);
    /// 24-bit value `0xBBGGRR`: bytes R G B, DRM BGR888.
    pub const B8G8R8: u32 = format(24, TYPE_ABGR, 0, 8, 8, 8);
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

/// Words starting at a page boundary, as the real buffers (a dma-buf mmap, a wl_shm
/// pool) do. Heap vectors start wherever malloc puts them, and the relative alignment of
/// source and destination alone changed `memcpy` tenfold between two builds here.
struct PageAligned {
    storage: Vec<u32>,
    start: usize,
    len: usize,
}

impl PageAligned {
    fn new(words: &[u32]) -> Self {
        const PAGE_WORDS: usize = 4096 / 4;
        let mut storage = vec![0u32; words.len() + PAGE_WORDS];
        let misalign = storage.as_ptr() as usize % 4096 / 4;
        let start = (PAGE_WORDS - misalign) % PAGE_WORDS;
        storage[start..start + words.len()].copy_from_slice(words);
        Self {
            storage,
            start,
            len: words.len(),
        }
    }

    fn get(&self) -> &[u32] {
        &self.storage[self.start..self.start + self.len]
    }

    fn get_mut(&mut self) -> &mut [u32] {
        &mut self.storage[self.start..self.start + self.len]
    }
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
            data: src_bytes[..].into(),
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

/// One timed operation: a label and a closure that runs it once.
type Op<'a> = (String, Box<dyn FnMut() + 'a>);

/// Runs every op in turn, round after round: per round one untimed run (so the op finds
/// caches in its own steady state) and then `per_round` timed runs. Returns each op's
/// median. Interleaving the rounds makes load from other processes hit all ops alike.
fn interleaved_medians(ops: &mut [Op], rounds: usize, per_round: usize) -> Vec<f64> {
    let mut samples = vec![Vec::with_capacity(rounds * per_round); ops.len()];
    for _ in 0..rounds {
        for (i, (_, op)) in ops.iter_mut().enumerate() {
            op();
            for _ in 0..per_round {
                let start = Instant::now();
                op();
                samples[i].push(start.elapsed().as_secs_f64());
            }
        }
    }
    samples
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect()
}

/// A pixman image over `height` rows of `stride` bytes at `bits`.
///
/// # Safety
/// `bits` must stay valid (and unmoved) until the image is unreferenced.
unsafe fn pixman_image(
    format: u32,
    width: u32,
    height: u32,
    bits: *mut u32,
    stride: usize,
) -> *mut pixman::Image {
    // SAFETY: the caller keeps `bits` alive; pixman only records the pointer here.
    let image = unsafe {
        pixman::pixman_image_create_bits(
            format,
            width as c_int,
            height as c_int,
            bits,
            stride as c_int,
        )
    };
    assert!(!image.is_null(), "pixman_image_create_bits failed");
    image
}

/// (label, source, destination, pixman source, pixman destination). Sources are packed
/// (stride = width × bytes per pixel) and read from the start of one noise buffer.
const CASES: [(&str, PixelFormat, DestFormat, u32, u32); 6] = [
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
    (
        "ABGR→ARGB",
        PixelFormat::Abgr8888,
        DestFormat::Argb8888,
        pixman::A8B8G8R8,
        pixman::A8R8G8B8,
    ),
    (
        "RGB565→XRGB",
        PixelFormat::Rgb565,
        DestFormat::Xrgb8888,
        pixman::R5G6B5,
        pixman::X8R8G8B8,
    ),
    (
        "BGR888→XRGB",
        PixelFormat::Bgr888,
        DestFormat::Xrgb8888,
        pixman::B8G8R8,
        pixman::X8R8G8B8,
    ),
];

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--threading") {
        threading(quick);
        return;
    }
    let simd = Simd::detected();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("guestfb blit benchmark: SIMD level {simd:?}, {threads} CPU(s) available");
    println!("medians of interleaved rounds (1 warm-up + 3 timed runs of each op per round);");
    println!("memcpy = one copy_from_slice of as many bytes as the blit writes,");
    println!("memcpy rows = copy_from_slice per row of the damage rectangle\n");
    println!(
        "{:<40} {:>8} {:>7} {:>8} {:>8} {:>7}",
        "case", "ms", "GB/s", "×memcpy", "×pixman", "÷full"
    );

    for (width, height) in [(1920u32, 1080u32), (3840, 2160)] {
        let rounds = if quick {
            2
        } else if width > 2000 {
            9
        } else {
            21
        };
        let stride = width as usize * 4;
        let len = stride * height as usize;
        let src_words = PageAligned::new(&words(len));
        let src_bytes = as_bytes(src_words.get());
        let dst_words = std::cell::RefCell::new(PageAligned::new(&vec![0u32; len / 4]));
        let dst_ptr = dst_words.borrow_mut().get_mut().as_mut_ptr();

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
        let mut full_times: Vec<f64> = Vec::new();
        for (damage_index, (damage_name, rect)) in damages.into_iter().enumerate() {
            let bytes = rect.area() * 4;
            let mut ops: Vec<Op> = Vec::new();
            // Every op writes the same destination buffer, so that they all find it in
            // the same cache state.
            let dst_cell = &dst_words;
            ops.push((
                "memcpy".into(),
                Box::new(move || {
                    let mut words = dst_cell.borrow_mut();
                    let dst = as_bytes_mut(words.get_mut());
                    dst[..bytes as usize].copy_from_slice(&src_bytes[..bytes as usize]);
                    black_box(dst);
                }),
            ));
            ops.push((
                "memcpy rows".into(),
                Box::new(move || {
                    let mut words = dst_cell.borrow_mut();
                    let dst = as_bytes_mut(words.get_mut());
                    let (x, w) = (rect.x as usize * 4, rect.width as usize * 4);
                    for y in rect.y as usize..rect.bottom() as usize {
                        let at = y * stride + x;
                        dst[at..at + w].copy_from_slice(&src_bytes[at..at + w]);
                    }
                    black_box(dst);
                }),
            ));
            let mut images = Vec::new();
            for (name, format, dest, pix_src, pix_dst) in CASES {
                // Packed rows: the natural stride of the source format.
                let src_stride = width as usize * format.bytes_per_pixel() as usize;
                // SAFETY: both buffers outlive the images (unreferenced below) and are
                // never reallocated.
                let (s, d) = unsafe {
                    (
                        pixman_image(
                            pix_src,
                            width,
                            height,
                            src_words.get().as_ptr().cast_mut(),
                            src_stride,
                        ),
                        pixman_image(pix_dst, width, height, dst_ptr, stride),
                    )
                };
                images.extend([s, d]);
                ops.push((
                    format!("pixman {name}"),
                    Box::new(move || {
                        // SAFETY: live images over live buffers; the rectangle lies inside
                        // both.
                        unsafe {
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
                            )
                        }
                    }),
                ));
                let dst_words = &dst_words;
                ops.push((
                    format!("blit   {name}"),
                    Box::new(move || {
                        let planes = [SourcePlane {
                            data: src_bytes.into(),
                            stride: src_stride,
                        }];
                        let src = Source {
                            format,
                            width,
                            height,
                            planes: &planes,
                            y0_top: true,
                        };
                        let mut words = dst_words.borrow_mut();
                        let mut dst = Dest {
                            data: as_bytes_mut(words.get_mut()),
                            stride,
                            format: dest,
                        };
                        blit_with_options(&src, &mut dst, &[rect], &BlitOptions::default())
                            .expect("blit");
                        black_box(&mut dst);
                    }),
                ));
            }
            // NV12 has no pixman counterpart: only ours.
            let dst_words_nv12 = &dst_words;
            ops.push((
                "blit   NV12→XRGB".into(),
                Box::new(move || {
                    let luma = width as usize * height as usize;
                    let planes = [
                        SourcePlane {
                            data: src_bytes[..luma].into(),
                            stride: width as usize,
                        },
                        SourcePlane {
                            data: src_bytes[luma..luma + luma / 2].into(),
                            stride: width as usize,
                        },
                    ];
                    let src = Source {
                        format: PixelFormat::Nv12,
                        width,
                        height,
                        planes: &planes,
                        y0_top: true,
                    };
                    let mut words = dst_words_nv12.borrow_mut();
                    let mut dst = Dest {
                        data: as_bytes_mut(words.get_mut()),
                        stride,
                        format: DestFormat::Xrgb8888,
                    };
                    blit_with_options(&src, &mut dst, &[rect], &BlitOptions::default())
                        .expect("blit");
                    black_box(&mut dst);
                }),
            ));
            let times = interleaved_medians(&mut ops, rounds, 3);
            let labels: Vec<String> = ops.into_iter().map(|(label, _)| label).collect();
            for image in images {
                // SAFETY: created above, unreferenced once; the closures using it are gone.
                unsafe { pixman::pixman_image_unref(image) };
            }
            let memcpy = times[0];
            for (i, (label, secs)) in labels.iter().zip(&times).enumerate() {
                // Ours directly follows its pixman counterpart.
                let after_pixman = i > 0 && labels[i - 1].starts_with("pixman");
                let vs_pixman = if label.starts_with("blit") && after_pixman {
                    format!("{:.2}", times[i - 1] / secs)
                } else {
                    "-".into()
                };
                let vs_full = if damage_index == 0 {
                    full_times.push(*secs);
                    "-".into()
                } else {
                    format!("{:.3}", secs / full_times[i])
                };
                println!(
                    "{:<40} {:>8.3} {:>7.2} {:>8.2} {:>8} {:>7}",
                    format!("{width}×{height} {damage_name:>4}  {label}"),
                    secs * 1e3,
                    bytes as f64 / secs / 1e9,
                    memcpy / secs,
                    vs_pixman,
                    vs_full
                );
            }
        }
    }
    threading(quick);
}
