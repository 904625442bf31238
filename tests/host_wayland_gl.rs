//! The gl=on and passthrough presenters against a real headless weston with its GL
//! renderer (llvmpipe), checked by screenshots, pixel for pixel.
//!
//! There is no /dev/udmabuf on the host, so exports are memfd pieces and both presenters
//! use the host-only fallback (the single-piece memfd passed as a linear dma-buf, which
//! Mesa 25 accepts). The same code paths take real udmabufs in the guest.
#![cfg(feature = "wayland-egl")]

mod common;

use std::time::{Duration, Instant};

use common::weston::{Renderer, Screenshot, Weston, WestonConfig};
use guestfb::export::{ExportedFramebuffer, Exporter, PinManager, PinPolicy, PinPurpose};
use guestfb::format::{Modifier, PixelFormat};
use guestfb::import::dmabuf::DmaBufImageError;
use guestfb::import::egl::TextureImportError;
use guestfb::present::gl::Filter;
use guestfb::present::wayland::{
    DmaBufPresenter, EglPresenter, GlPresentError, PassthroughError, Presenter, PresenterEvent,
    PresenterOptions,
};
use guestfb::rect::Rect;
use guestfb::source::demo::{pattern_rgb, Buffering, DemoConfig, DemoGuest, FIRST_BUFFER_ID};

const TIMEOUT: Duration = Duration::from_secs(20);

struct Guest {
    guest: DemoGuest,
    exporter: Exporter,
}

impl Guest {
    fn new(config: DemoConfig) -> Self {
        let guest = DemoGuest::new(config).expect("demo guest");
        let exporter = Exporter::new(
            guest.memory().clone(),
            PinManager::new(PinPolicy::default()),
        );
        Self { guest, exporter }
    }

    fn export(&self) -> ExportedFramebuffer {
        self.exporter
            .export(1, &self.guest.desc(), PinPurpose::Scanout)
            .expect("export")
    }
}

fn config(width: u32, height: u32, format: PixelFormat, y0_top: bool) -> DemoConfig {
    DemoConfig {
        width,
        height,
        format,
        y0_top,
        stride_padding: 64,
        ..DemoConfig::default()
    }
}

/// Asserts the screenshot equals the demo guest's frame `frame`, pixel for pixel.
fn assert_shows_demo(shot: &Screenshot, width: u32, height: u32, frame: u64, what: &str) {
    assert_eq!((shot.width, shot.height), (width, height), "{what}: size");
    let mut wrong = 0;
    let mut first = None;
    for y in 0..height {
        for x in 0..width {
            let [r, g, b] = pattern_rgb(width, height, frame, x, y);
            let want = u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b);
            let got = shot.pixel(x, y);
            if want != got {
                wrong += 1;
                first.get_or_insert((x, y, want, got));
            }
        }
    }
    if let Some((x, y, want, got)) = first {
        panic!(
            "{what}: {wrong} pixels differ; first at ({x}, {y}): want {want:06x}, got {got:06x}"
        );
    }
}

fn wait_until(what: &str, weston: &Weston, mut dispatch: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !dispatch() {
        assert!(
            Instant::now() < deadline,
            "{what} after {TIMEOUT:?}; weston log:\n{}",
            weston.log()
        );
    }
}

fn egl_presenter(weston: &Weston, width: u32, height: u32) -> EglPresenter {
    let mut presenter = EglPresenter::connect(
        PresenterOptions::new(width, height).with_socket(weston.socket_path()),
    )
    .unwrap_or_else(|e| panic!("EglPresenter: {e}; weston log:\n{}", weston.log()));
    presenter.set_filter(Filter::Nearest);
    presenter
}

/// Presents `export` and waits for its frame callback.
fn show_gl(presenter: &mut EglPresenter, weston: &Weston, export: &ExportedFramebuffer) {
    wait_until("EGL presenter not ready", weston, || {
        presenter
            .dispatch(Some(Duration::from_millis(50)))
            .expect("dispatch");
        presenter.is_ready()
    });
    assert!(presenter.present(Some(export)).expect("present"));
    assert!(!presenter.is_ready(), "ready before the frame callback");
    wait_until("no frame callback", weston, || {
        presenter
            .dispatch(Some(Duration::from_millis(50)))
            .expect("dispatch")
            .iter()
            .any(|e| matches!(e, PresenterEvent::FrameDone { .. }))
    });
}

#[test]
fn egl_presenter_shows_the_guest_exactly_in_both_orientations() {
    let (w, h) = (320, 240);
    for y0_top in [true, false] {
        let weston = Weston::start(WestonConfig::kiosk(w, h, Renderer::Gl));
        let mut guest = Guest::new(config(w, h, PixelFormat::Xrgb8888, y0_top));
        let mut presenter = egl_presenter(&weston, w, h);
        let export = guest.export();
        show_gl(&mut presenter, &weston, &export);
        assert_eq!(presenter.window_size(), Some((w, h)));
        assert_shows_demo(
            &weston.screenshot(),
            w,
            h,
            0,
            &format!("gl y0_top={y0_top}"),
        );
        // Next frame: the same import (cache hit), new pixels.
        let created = presenter.egl_importer().stats().images_created;
        guest.guest.step();
        show_gl(&mut presenter, &weston, &export);
        assert_shows_demo(
            &weston.screenshot(),
            w,
            h,
            1,
            &format!("gl frame 1 y0_top={y0_top}"),
        );
        let stats = presenter.egl_importer().stats();
        assert_eq!(stats.images_created, created, "second frame re-imported");
        assert!(stats.cache_hits >= 1);
    }
}

#[test]
fn egl_presenter_letterboxes_a_frame_of_another_aspect() {
    // 4:3 output, 2:1 frame: bars above and below, picture scaled (not compared exactly).
    let (w, h) = (320, 240);
    let weston = Weston::start(WestonConfig::kiosk(w, h, Renderer::Gl));
    let guest = Guest::new(config(160, 80, PixelFormat::Xrgb8888, true));
    let mut presenter = egl_presenter(&weston, w, h);
    show_gl(&mut presenter, &weston, &guest.export());
    let shot = weston.screenshot();
    // 160x80 → 320x160 centred: rows 0..40 and 200..240 black.
    for x in (0..w).step_by(7) {
        assert_eq!(shot.pixel(x, 0), 0, "top bar at x={x}");
        assert_eq!(shot.pixel(x, 39), 0, "top bar at x={x}");
        assert_eq!(shot.pixel(x, 200), 0, "bottom bar at x={x}");
    }
    // 2x nearest scaling: picture pixel (px, py) at (2px, 40 + 2py).
    for (px, py) in [(0, 0), (10, 10), (159, 79), (80, 40)] {
        let [r, g, b] = pattern_rgb(160, 80, 0, px, py);
        let want = u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b);
        assert_eq!(
            shot.pixel(2 * px, 40 + 2 * py),
            want,
            "picture pixel ({px}, {py})"
        );
    }
}

#[test]
fn egl_presenter_refuses_a_scattered_memfd_export_clearly() {
    let (w, h) = (128, 64);
    let weston = Weston::start(WestonConfig::kiosk(w, h, Renderer::Gl));
    let guest = Guest::new(DemoConfig {
        scattered: true,
        ..config(w, h, PixelFormat::Xrgb8888, true)
    });
    let mut presenter = egl_presenter(&weston, w, h);
    wait_until("EGL presenter not ready", &weston, || {
        presenter
            .dispatch(Some(Duration::from_millis(50)))
            .expect("dispatch");
        presenter.is_ready()
    });
    let export = guest.export();
    match presenter.present(Some(&export)) {
        Err(GlPresentError::Import(TextureImportError::Source(DmaBufImageError::Scattered {
            pieces,
            ..
        }))) => assert_eq!(pieces, 2),
        other => panic!("expected a Scattered error, got {other:?}"),
    }
}

fn passthrough(weston: &Weston, width: u32, height: u32) -> DmaBufPresenter {
    DmaBufPresenter::connect(PresenterOptions::new(width, height).with_socket(weston.socket_path()))
        .unwrap_or_else(|e| panic!("DmaBufPresenter: {e}; weston log:\n{}", weston.log()))
}

fn show_passthrough(
    presenter: &mut DmaBufPresenter,
    weston: &Weston,
    export: &ExportedFramebuffer,
    damage: &[Rect],
) {
    wait_until("passthrough presenter not ready", weston, || {
        presenter
            .dispatch(Some(Duration::from_millis(50)))
            .expect("dispatch");
        presenter.is_ready()
    });
    assert!(presenter.present(export, damage).expect("present"));
    wait_until("no frame callback", weston, || {
        presenter
            .dispatch(Some(Duration::from_millis(50)))
            .expect("dispatch")
            .iter()
            .any(|e| matches!(e, PresenterEvent::FrameDone { .. }))
    });
}

#[test]
fn passthrough_shows_the_guest_exactly_when_the_format_is_offered() {
    let (w, h) = (320, 240);
    for y0_top in [true, false] {
        let weston = Weston::start(WestonConfig::kiosk(w, h, Renderer::Gl));
        let mut presenter = passthrough(&weston, w, h);
        let offered = presenter.offered_formats();
        eprintln!("weston offers {} format/modifier pairs", offered.len());
        assert!(
            presenter
                .accepts(PixelFormat::Xrgb8888, Modifier::LINEAR)
                .is_some(),
            "weston 14 + GL + Mesa 25 offered XRGB8888 when this test was written: {offered:x?}"
        );
        let mut guest = Guest::new(config(w, h, PixelFormat::Xrgb8888, y0_top));
        let export = guest.export();
        show_passthrough(&mut presenter, &weston, &export, &[Rect::full(w, h)]);
        assert_shows_demo(
            &weston.screenshot(),
            w,
            h,
            0,
            &format!("passthrough y0_top={y0_top}"),
        );
        assert_eq!(presenter.cached_count(), 1);
        // The guest draws the next frame in place; damage only.
        let damage = guest.guest.step();
        show_passthrough(&mut presenter, &weston, &export, &damage);
        assert_shows_demo(
            &weston.screenshot(),
            w,
            h,
            1,
            &format!("passthrough frame 1 y0_top={y0_top}"),
        );
        assert_eq!(presenter.cached_count(), 1, "the wl_buffer is reused");
        // A new generation replaces the cached buffer.
        let export2 = guest.export();
        show_passthrough(&mut presenter, &weston, &export2, &[]);
        assert_eq!(presenter.cached_count(), 1);
        assert!(presenter.forget(1));
        assert_eq!(presenter.cached_count(), 0);
    }
}

/// What happened, in order, in the double-buffered passthrough test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The wl_buffer of this buffer id was attached and committed.
    Present(u64),
    /// The compositor released it.
    Release(u64),
    /// The guest drew into this buffer.
    Draw(u64),
}

/// Dispatches once, recording release events.
fn dispatch_recording(presenter: &mut DmaBufPresenter, log: &mut Vec<Step>) -> Vec<PresenterEvent> {
    let events = presenter
        .dispatch(Some(Duration::from_millis(50)))
        .expect("dispatch");
    for event in &events {
        if let PresenterEvent::BufferReleased { buffer_id, .. } = event {
            log.push(Step::Release(*buffer_id));
        }
    }
    events
}

#[test]
fn passthrough_double_buffered_guest_draws_only_into_released_buffers() {
    let (w, h) = (320, 240);
    let frames = 8;
    let weston = Weston::start(WestonConfig::kiosk(w, h, Renderer::Gl));
    let mut presenter = passthrough(&weston, w, h);
    let guest = Guest::new(DemoConfig {
        buffering: Buffering::Double,
        ..config(w, h, PixelFormat::Xrgb8888, true)
    });
    let mut demo = guest.guest;
    let exports: Vec<ExportedFramebuffer> = (0..2)
        .map(|index| {
            guest
                .exporter
                .export(
                    FIRST_BUFFER_ID + index as u64,
                    &demo.buffer_desc(index),
                    PinPurpose::Scanout,
                )
                .expect("export")
        })
        .collect();
    let mut log = Vec::new();
    let mut damage = vec![Rect::full(w, h)];
    for frame in 0..frames {
        assert_eq!(demo.frame(), frame);
        wait_until("passthrough presenter not ready", &weston, || {
            dispatch_recording(&mut presenter, &mut log);
            presenter.is_ready()
        });
        let front = demo.front_index();
        assert!(presenter
            .present(&exports[front], &damage)
            .expect("present"));
        log.push(Step::Present(demo.front_buffer_id()));
        assert!(
            !presenter.is_released(demo.front_buffer_id()),
            "a buffer just attached counts as held"
        );
        if frame + 1 == frames {
            break;
        }
        // The guest may draw into its back buffer only once the compositor let go of it.
        let back = demo.back_buffer_id();
        wait_until("back buffer never released", &weston, || {
            dispatch_recording(&mut presenter, &mut log);
            presenter.is_released(back)
        });
        log.push(Step::Draw(back));
        damage = demo.step();
        assert_eq!(
            demo.front_buffer_id(),
            back,
            "step flips to the buffer drawn"
        );
    }
    wait_until("no frame callback for the last frame", &weston, || {
        dispatch_recording(&mut presenter, &mut log)
            .iter()
            .any(|e| matches!(e, PresenterEvent::FrameDone { .. }))
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_shows_demo(
        &weston.screenshot(),
        w,
        h,
        frames - 1,
        "double-buffered passthrough, last frame",
    );
    // Every draw into a buffer that was presented before comes after its release.
    eprintln!("{log:?}");
    let mut releases = 0;
    for (at, step) in log.iter().enumerate() {
        let Step::Draw(id) = *step else { continue };
        let last_present = log[..at].iter().rposition(|s| *s == Step::Present(id));
        if let Some(presented) = last_present {
            assert!(
                log[presented..at].contains(&Step::Release(id)),
                "buffer {id} drawn at step {at} without a release since its present: {log:?}"
            );
            releases += 1;
        }
    }
    assert!(
        releases >= usize::try_from(frames).unwrap() - 2,
        "the test drew into released buffers only {releases} times: {log:?}"
    );
}

#[test]
fn passthrough_reports_a_format_the_compositor_does_not_offer() {
    let (w, h) = (64, 32);
    let weston = Weston::start(WestonConfig::kiosk(w, h, Renderer::Gl));
    let mut presenter = passthrough(&weston, w, h);
    let guest = Guest::new(config(w, h, PixelFormat::Bgr888, true));
    if presenter
        .accepts(PixelFormat::Bgr888, Modifier::LINEAR)
        .is_some()
    {
        eprintln!("SKIP: this weston offers BGR888 as a dma-buf");
        return;
    }
    wait_until("passthrough presenter not ready", &weston, || {
        presenter
            .dispatch(Some(Duration::from_millis(50)))
            .expect("dispatch");
        presenter.is_ready()
    });
    match presenter.present(&guest.export(), &[]) {
        Err(PassthroughError::NotOffered { format, .. }) => assert_eq!(format, PixelFormat::Bgr888),
        other => panic!("expected NotOffered, got {other:?}"),
    }
}

#[test]
fn a_lost_compositor_is_an_error_not_a_panic() {
    let (w, h) = (64, 32);
    let mut weston = Weston::start(WestonConfig::kiosk(w, h, Renderer::Gl));
    let guest = Guest::new(config(w, h, PixelFormat::Xrgb8888, true));
    let mut presenter = egl_presenter(&weston, w, h);
    show_gl(&mut presenter, &weston, &guest.export());
    weston.kill();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(
            Instant::now() < deadline,
            "no error after the compositor died"
        );
        if presenter.dispatch(Some(Duration::from_millis(50))).is_err() {
            break;
        }
    }
}

/// Runs the viewer until it has presented `frames` frames (it then holds the window);
/// returns its stdout lines so far and the process.
fn run_viewer(weston: &Weston, args: &[&str], frames: u64) -> (Vec<String>, std::process::Child) {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(common::example_binary("viewer"))
        .args(args)
        .args(["--hold", "--frames", &frames.to_string()])
        .env("WAYLAND_DISPLAY", weston.socket_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("start the viewer");
    let stdout = child.stdout.take().expect("piped stdout");
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("  {line}");
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let wanted = format!("viewer: presented {frames} frames");
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let last = line == wanted;
                seen.push(line);
                if last {
                    break;
                }
            }
            Err(error) => {
                let status = child.try_wait();
                let _ = child.kill();
                panic!(
                    "viewer never printed {wanted:?} ({error}); status {status:?}; saw {seen:?}"
                );
            }
        }
    }
    // One repaint for the last commit.
    std::thread::sleep(Duration::from_millis(200));
    (seen, child)
}

fn viewer_shows(format: PixelFormat, args: &[&str], expect_path: &str, frames: u64) -> Vec<String> {
    let (w, h) = (320, 240);
    let weston = Weston::start(WestonConfig::kiosk(w, h, Renderer::Gl));
    let size = format!("{w}x{h}");
    let mut all = vec!["--size", &size, "--format", format.name()];
    all.extend_from_slice(args);
    let (lines, mut child) = run_viewer(&weston, &all, frames);
    let shot = weston.screenshot();
    let _ = child.kill();
    let _ = child.wait();
    let presenting: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("viewer: presenting with"))
        .collect();
    assert!(
        presenting.last().is_some_and(|l| l.contains(expect_path)),
        "{args:?}: expected to end on {expect_path:?}, saw {presenting:?}"
    );
    // `frames` presented: frame `frames - 1` is on screen. BGR888/RGB888 are exact 8-bit.
    assert_shows_demo(
        &shot,
        w,
        h,
        frames - 1,
        &format!("viewer {} {args:?}", format.name()),
    );
    lines
}

#[test]
fn viewer_gl_on_uses_the_egl_presenter_exactly() {
    viewer_shows(
        PixelFormat::Xrgb8888,
        &["--gl", "on", "--present", "gl"],
        "EGL import",
        5,
    );
}

#[test]
fn viewer_auto_uses_passthrough_when_weston_offers_the_format() {
    // Several frames: the viewer double-buffers the guest and lets it draw only into a
    // buffer weston released. (With one live buffer redrawn in place after the frame
    // callback, the redraw raced weston's repaint of the same dma-buf and 676 pixels of
    // the block showed a half-drawn state.)
    viewer_shows(PixelFormat::Xrgb8888, &["--gl", "auto"], "passthrough", 5);
    // Bottom-up guest memory: flipped by the buffer transform, damage still right.
    viewer_shows(
        PixelFormat::Xrgb8888,
        &["--gl", "auto", "--y0-bottom"],
        "passthrough",
        5,
    );
}

#[test]
fn viewer_gl_auto_falls_back_to_the_cpu_path_for_a_format_egl_lacks() {
    // llvmpipe advertises neither BGR888 nor RGB888 for import, and weston does not
    // offer them as dma-bufs: passthrough and gl are refused, gl=off shows it.
    let lines = viewer_shows(
        PixelFormat::Bgr888,
        &["--gl", "auto", "--present", "gl"],
        "gl=off",
        2,
    );
    assert!(
        lines.iter().any(|l| l.contains("falling back to gl=off")),
        "no fallback reason printed: {lines:?}"
    );
    viewer_shows(PixelFormat::Rgb888, &["--gl", "auto"], "gl=off", 2);
}
