//! Benchmark of the gl=on frame cost against the gl=off copy, at 1920×1080 and
//! 3840×2160, in one run.
//!
//! ```text
//! cargo run --release --example bench_gl [-- --frames 40]
//! ```
//!
//! gl=on, per presented frame (the import is cached after the first frame, as in the
//! viewer): `EglImporter::import_export` (a cache hit) + `GlRenderer::draw` of the
//! whole frame into a window-sized offscreen target (`--window`, 1920×1080 by default:
//! the viewer's window does not grow with the guest's frame) + `glFinish`.
//! gl=off, per frame: `convert::blit` of the whole frame into a wl_shm-sized buffer.
//!
//! Times are CPU times (`clock_gettime` thread and process CPU clocks), not wall time: llvmpipe rasterises on the CPU,
//! in worker threads, so wall time would mix the two questions. Reported:
//! * **submit**: this thread's CPU time for import + draw call (what guestfb itself
//!   spends; with a GPU this is the whole CPU cost of gl=on);
//! * **total**: the whole process's CPU time including llvmpipe's rasterisation and
//!   texture sampling up to `glFinish` (a software GPU's cost; it grows with the
//!   number of pixels drawn, as a GPU's time would);
//! * **blit**: the gl=off copy, this thread's CPU time.
//!
//! Zero-copy means the *submit* cost does not grow with the frame: its 4K/1080p ratio
//! should stay near 1 (≤ 1.2), while a copy grows with the bytes (ratio ≈ 4).

use std::time::{Duration, Instant};

use guestfb::export::{ExportedFramebuffer, Exporter, PinManager, PinPolicy, PinPurpose};
use guestfb::format::PixelFormat;
use guestfb::import::convert::{blit, Dest, DestFormat, Rect, Source, SourcePlane};
use guestfb::import::egl::EglImporter;
use guestfb::import::CpuMapping;
use guestfb::present::gl::{DrawParams, Filter, GlRenderer, OffscreenTarget};
use guestfb::source::demo::{DemoConfig, DemoGuest};

/// CPU time used so far by this thread (`CLOCK_THREAD_CPUTIME_ID`) or the whole process
/// (`CLOCK_PROCESS_CPUTIME_ID`). These clocks are exact; `getrusage` is not (it reads
/// the scheduler's runtime without the running slice, so work moves between samples).
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the pointer it is given.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn thread_cpu() -> Duration {
    cpu_time(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn process_cpu() -> Duration {
    cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID)
}

#[derive(Debug, Default, Clone, Copy)]
struct Costs {
    import: Duration,
    submit: Duration,
    total: Duration,
    wall: Duration,
    blit: Duration,
    blit_wall: Duration,
}

fn per_frame(d: Duration, frames: u32) -> f64 {
    d.as_secs_f64() * 1e3 / f64::from(frames)
}

fn measure(
    gl: &mut (EglImporter, GlRenderer),
    (width, height): (u32, u32),
    (window_width, window_height): (u32, u32),
    frames: u32,
) -> Result<Costs, Box<dyn std::error::Error>> {
    let mut guest = DemoGuest::new(DemoConfig {
        width,
        height,
        format: PixelFormat::Xrgb8888,
        ..DemoConfig::default()
    })?;
    let exporter = Exporter::new(
        guest.memory().clone(),
        PinManager::new(PinPolicy::default()),
    );
    let export: ExportedFramebuffer = exporter.export(1, &guest.desc(), PinPurpose::Scanout)?;
    let (importer, renderer) = gl;
    // Each size has its own exporter, whose first export is again (buffer 1,
    // generation 1): drop the previous size's image so the cache cannot confuse them.
    importer.clear();
    let target = OffscreenTarget::new(importer.gl(), window_width, window_height)?;
    let params = DrawParams {
        src: Rect::full(width, height),
        y0_top: true,
        target_width: window_width,
        target_height: window_height,
        filter: Filter::Nearest,
    };
    let finish = |importer: &EglImporter| {
        // SAFETY: glFinish on the importer's current context.
        unsafe { glow::HasContext::finish(importer.gl()) }
    };
    // Warm-up: the first frame imports (eglCreateImage) and compiles llvmpipe's shaders.
    for _ in 0..3 {
        let texture = importer.import_export(&export)?;
        target.bind(importer.gl());
        renderer.draw(importer.gl(), &texture, &params)?;
        finish(importer);
    }
    let created = importer.stats().images_created;
    let mut costs = Costs::default();
    for _ in 0..frames {
        guest.step();
        let (t0, p0, w0) = (thread_cpu(), process_cpu(), Instant::now());
        let texture = importer.import_export(&export)?;
        costs.import += thread_cpu() - t0;
        target.bind(importer.gl());
        renderer.draw(importer.gl(), &texture, &params)?;
        let t1 = thread_cpu();
        finish(importer);
        costs.submit += t1 - t0;
        costs.total += process_cpu() - p0;
        costs.wall += w0.elapsed();
    }
    assert_eq!(
        importer.stats().images_created,
        created,
        "a frame re-imported: the cache did not hold"
    );
    target.destroy(importer.gl());

    // gl=off: the whole frame converted into a wl_shm-sized XRGB8888 buffer.
    let stride = width as usize * 4;
    let mut shm = vec![0u8; stride * height as usize];
    let mapping = CpuMapping::new(export.clone());
    let full = [Rect::full(width, height)];
    let copy = |shm: &mut [u8]| {
        mapping.read(|bytes, layout| {
            let plane = layout.planes()[0];
            blit(
                &Source {
                    format: layout.format(),
                    width,
                    height,
                    planes: &[SourcePlane {
                        data: bytes
                            .subslice(plane.offset as usize, bytes.len() - plane.offset as usize)
                            .expect("validated plane offset"),
                        stride: plane.stride as usize,
                    }],
                    y0_top: true,
                },
                &mut Dest {
                    data: shm,
                    stride,
                    format: DestFormat::Xrgb8888,
                },
                &full,
            )
            .map(|_| ())
        })
    };
    copy(&mut shm)??;
    for _ in 0..frames {
        guest.step();
        let (t0, w0) = (thread_cpu(), Instant::now());
        copy(&mut shm)??;
        costs.blit += thread_cpu() - t0;
        costs.blit_wall += w0.elapsed();
    }
    Ok(costs)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut frames = 40u32;
    let mut window = (1920, 1080);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--frames" => frames = args.next().ok_or("--frames N")?.parse()?,
            "--window" => {
                let text = args.next().ok_or("--window WxH")?;
                let (w, h) = text.split_once('x').ok_or("--window WxH")?;
                window = (w.parse()?, h.parse()?);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let importer = EglImporter::headless()?;
    println!(
        "EGL: {:?}; {frames} frames per size; window {}x{}",
        importer.platform(),
        window.0,
        window.1
    );
    let renderer = GlRenderer::new(importer.gl())?;
    let mut gl = (importer, renderer);
    let sizes = [(1920, 1080), (3840, 2160)];
    let mut results = Vec::new();
    println!(
        "{:>10} | {:>12} {:>12} {:>12} | {:>12} {:>12}   (ms per frame)",
        "size", "gl submit", "gl total", "gl wall", "blit cpu", "blit wall"
    );
    for (width, height) in sizes {
        let c = measure(&mut gl, (width, height), window, frames)?;
        println!(
            "{:>10} | {:>12.3} {:>12.3} {:>12.3} | {:>12.3} {:>12.3}",
            format!("{width}x{height}"),
            per_frame(c.submit, frames),
            per_frame(c.total, frames),
            per_frame(c.wall, frames),
            per_frame(c.blit, frames),
            per_frame(c.blit_wall, frames),
        );
        results.push(c);
    }
    let ratio = |f: fn(&Costs) -> Duration| {
        f(&results[1]).as_secs_f64() / f(&results[0]).as_secs_f64().max(1e-12)
    };
    println!(
        "import (cache hit) per frame: {:.4} ms at 1080p, {:.4} ms at 4K",
        per_frame(results[0].import, frames),
        per_frame(results[1].import, frames)
    );
    println!("4K / 1080p ratios (pixels: 4.00):");
    println!(
        "  gl=on import (cache hit, our CPU):           {:.2}",
        ratio(|c| c.import)
    );
    println!(
        "  gl=on submit (import + draw call, our CPU): {:.2}",
        ratio(|c| c.submit)
    );
    println!(
        "  gl=on total (incl. llvmpipe rasterisation): {:.2}",
        ratio(|c| c.total)
    );
    println!(
        "  gl=off blit (CPU copy):                      {:.2}",
        ratio(|c| c.blit)
    );
    for (c, (w, h)) in results.iter().zip(sizes) {
        println!(
            "  {w}x{h}: gl=off blit / gl=on submit = {:.1}x, gl=off blit / gl=on total = {:.2}x",
            c.blit.as_secs_f64() / c.submit.as_secs_f64().max(1e-12),
            c.blit.as_secs_f64() / c.total.as_secs_f64().max(1e-12),
        );
    }
    Ok(())
}
