//! The wl_shm presenter against a real headless weston, checked by screenshots.
//!
//! Each test starts its own weston (unique socket, own runtime folder) and stops it on
//! drop. Needs `weston` 14 and `weston-screenshooter`; without them the tests fail.
#![cfg(feature = "wayland")]

mod common;

use std::time::{Duration, Instant};

use common::weston::{Renderer, Screenshot, Weston, WestonConfig};
use guestfb::format::PixelFormat;
use guestfb::present::wayland::{
    PresentError, Presenter, PresenterEvent, PresenterOptions, ShmPresenter,
};
use guestfb::rect::Rect;

/// The guest's picture, as the source of truth the caller copies from: `0xRRGGBB`.
struct Picture {
    width: u32,
    height: u32,
    pixels: Vec<u32>,
}

impl Picture {
    fn new(width: u32, height: u32, f: impl Fn(u32, u32) -> u32) -> Self {
        let pixels = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y) & 0xff_ffff)
            .collect();
        Self {
            width,
            height,
            pixels,
        }
    }

    fn at(&self, x: u32, y: u32) -> u32 {
        self.pixels[(y * self.width + x) as usize]
    }

    fn paint(&mut self, rect: Rect, f: impl Fn(u32, u32) -> u32) {
        for y in rect.y..rect.y + rect.height {
            for x in rect.x..rect.x + rect.width {
                self.pixels[(y * self.width + x) as usize] = f(x, y) & 0xff_ffff;
            }
        }
    }

    /// Copies `rects` into an XRGB8888 buffer.
    fn copy_to(&self, pixels: &mut [u8], stride: u32, rects: &[Rect]) {
        for rect in rects {
            for y in rect.y..rect.y + rect.height {
                let row = &mut pixels[(y * stride) as usize..];
                for x in rect.x..rect.x + rect.width {
                    let p = self.at(x, y) | 0xff00_0000;
                    row[x as usize * 4..][..4].copy_from_slice(&p.to_le_bytes());
                }
            }
        }
    }
}

fn pattern(x: u32, y: u32) -> u32 {
    ((x * 7) ^ y) << 16 | (y * 3 + x) << 8 & 0xff00 | (x + 2 * y) & 0xff
}

fn pattern2(x: u32, y: u32) -> u32 {
    0x20_40_80 ^ (x * y)
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn connect(weston: &Weston, options: PresenterOptions) -> ShmPresenter {
    ShmPresenter::connect(options.with_socket(weston.socket_path()))
        .unwrap_or_else(|e| panic!("presenter: {e}; weston log:\n{}", weston.log()))
}

/// Dispatches until the presenter can take a frame.
fn wait_ready(presenter: &mut ShmPresenter, weston: &Weston) {
    let deadline = Instant::now() + TIMEOUT;
    while !presenter.is_ready() {
        assert!(
            Instant::now() < deadline,
            "presenter not ready after {TIMEOUT:?}; weston log:\n{}",
            weston.log()
        );
        presenter
            .dispatch(Some(Duration::from_millis(100)))
            .expect("dispatch");
    }
}

/// Presents a frame whose buffer is repaired from `picture`; waits for its frame callback.
/// Returns whether the buffer was fresh.
fn show(presenter: &mut ShmPresenter, weston: &Weston, picture: &Picture, damage: &[Rect]) -> bool {
    wait_ready(presenter, weston);
    let mut frame = presenter
        .next_buffer()
        .expect("next_buffer")
        .expect("a buffer when ready");
    assert_eq!(
        (frame.width(), frame.height()),
        (picture.width, picture.height)
    );
    assert_eq!(frame.format(), PixelFormat::Xrgb8888);
    let fresh = frame.is_fresh();
    let rects = frame.repair_rects(damage);
    let stride = frame.stride();
    if fresh {
        // Poison: anything the repair misses shows up as magenta.
        for px in frame.pixels().chunks_exact_mut(4) {
            px.copy_from_slice(&0xffff_00ffu32.to_le_bytes());
        }
    }
    picture.copy_to(frame.pixels(), stride, &rects);
    frame.present(damage).expect("present");
    assert!(
        !presenter.is_ready(),
        "ready again before the frame callback"
    );
    assert!(
        presenter.next_buffer().expect("next_buffer").is_none(),
        "a buffer lent before the frame callback"
    );
    let deadline = Instant::now() + TIMEOUT;
    loop {
        assert!(Instant::now() < deadline, "no frame callback");
        let events = presenter
            .dispatch(Some(Duration::from_millis(100)))
            .expect("dispatch");
        if events
            .iter()
            .any(|e| matches!(e, PresenterEvent::FrameDone { .. }))
        {
            break;
        }
    }
    fresh
}

/// Asserts the screenshot region at (x0, y0) equals the picture exactly.
fn assert_shows(shot: &Screenshot, picture: &Picture, x0: u32, y0: u32) {
    let mut wrong = 0;
    let mut first = None;
    for y in 0..picture.height {
        for x in 0..picture.width {
            let (want, got) = (picture.at(x, y), shot.pixel(x0 + x, y0 + y));
            if want != got {
                wrong += 1;
                first.get_or_insert((x, y, want, got));
            }
        }
    }
    if let Some((x, y, want, got)) = first {
        panic!("{wrong} pixels differ; first at ({x}, {y}): want {want:06x}, got {got:06x}");
    }
}

fn exact_odd_size(renderer: Renderer) {
    let (w, h) = (1001, 667);
    let weston = Weston::start(WestonConfig::kiosk(w, h, renderer));
    let mut presenter = connect(&weston, PresenterOptions::new(w, h));
    let picture = Picture::new(w, h, pattern);
    let fresh = show(&mut presenter, &weston, &picture, &[Rect::full(w, h)]);
    assert!(fresh, "the first buffer is fresh");
    assert_eq!(presenter.window_size(), Some((w, h)));
    let shot = weston.screenshot();
    assert_eq!((shot.width, shot.height), (w, h));
    assert_shows(&shot, &picture, 0, 0);
}

fn damage_only_changes_its_rect(renderer: Renderer) {
    let (w, h) = (1001, 667);
    let weston = Weston::start(WestonConfig::kiosk(w, h, renderer));
    let mut presenter = connect(&weston, PresenterOptions::new(w, h));
    let mut picture = Picture::new(w, h, pattern);
    show(&mut presenter, &weston, &picture, &[Rect::full(w, h)]);
    let rects = [
        Rect::new(100, 50, 37, 29),
        Rect::new(990, 600, 11, 67), // touches the right and bottom edges
        Rect::new(0, 0, 1, 1),
        Rect::new(500, 300, 200, 100),
        Rect::new(503, 301, 3, 3),
    ];
    let mut reused = 0;
    for (i, rect) in rects.into_iter().enumerate() {
        let salt = i as u32 * 0x111111;
        picture.paint(rect, |x, y| pattern2(x, y) ^ salt);
        if !show(&mut presenter, &weston, &picture, &[rect]) {
            reused += 1;
        }
        // The whole screenshot: the rect shows the new pixels, the rest the old ones.
        let shot = weston.screenshot();
        assert_shows(&shot, &picture, 0, 0);
    }
    assert!(
        reused > 0,
        "no buffer was ever reused: stale tracking untested"
    );
}

fn letterbox(renderer: Renderer) {
    let weston = Weston::start(WestonConfig::kiosk(800, 600, renderer));
    let (fw, fh) = (320, 320);
    let mut presenter = connect(&weston, PresenterOptions::new(fw, fh));
    // Quadrants: red, green / blue, white.
    let picture = Picture::new(fw, fh, |x, y| match (x < fw / 2, y < fh / 2) {
        (true, true) => 0xff0000,
        (false, true) => 0x00ff00,
        (true, false) => 0x0000ff,
        (false, false) => 0xffffff,
    });
    show(&mut presenter, &weston, &picture, &[Rect::full(fw, fh)]);
    let place = presenter.placement().expect("placement");
    assert_eq!(
        (place.x, place.y, place.width, place.height),
        (100, 0, 600, 600)
    );
    let shot = weston.screenshot();
    assert_eq!((shot.width, shot.height), (800, 600));
    for y in 0..600 {
        for x in (0..100).chain(700..800) {
            assert_eq!(shot.pixel(x, y), 0, "bar pixel ({x}, {y}) is not black");
        }
    }
    // Quadrant interiors, away from the filtered edges.
    for (x, y, want) in [
        (250, 150, 0xff0000),
        (550, 150, 0x00ff00),
        (250, 450, 0x0000ff),
        (550, 450, 0xffffff),
        (110, 10, 0xff0000),
        (689, 589, 0xffffff),
    ] {
        assert_eq!(shot.pixel(x, y), want, "picture pixel ({x}, {y})");
    }
}

fn output_scale_two_is_pixel_exact(renderer: Renderer) {
    // 400×300 logical at scale 2: an 800×600 mode; the window is 400×300 logical.
    let weston = Weston::start(WestonConfig {
        scale: 2,
        ..WestonConfig::kiosk(400, 300, renderer)
    });
    let mut presenter = connect(&weston, PresenterOptions::new(800, 600));
    let picture = Picture::new(800, 600, pattern);
    wait_ready(&mut presenter, &weston);
    // The scale arrives with the output's events; give it a moment after configure.
    let deadline = Instant::now() + TIMEOUT;
    while presenter.scale() != 2 {
        assert!(Instant::now() < deadline, "scale never became 2");
        presenter
            .dispatch(Some(Duration::from_millis(50)))
            .expect("dispatch");
    }
    assert_eq!(presenter.window_size(), Some((400, 300)));
    assert_eq!(presenter.preferred_frame_size(), Some((800, 600)));
    show(&mut presenter, &weston, &picture, &[Rect::full(800, 600)]);
    let shot = weston.screenshot();
    assert_eq!((shot.width, shot.height), (800, 600));
    assert_shows(&shot, &picture, 0, 0);
}

fn frame_size_change(renderer: Renderer) {
    let weston = Weston::start(WestonConfig::kiosk(800, 600, renderer));
    let mut presenter = connect(&weston, PresenterOptions::new(400, 300));
    let small = Picture::new(400, 300, pattern2);
    show(&mut presenter, &weston, &small, &[Rect::full(400, 300)]);
    // The guest switches to the window's size: shown 1:1.
    presenter
        .set_frame(800, 600, PixelFormat::Xrgb8888)
        .expect("set_frame");
    let full = Picture::new(800, 600, pattern);
    let fresh = show(&mut presenter, &weston, &full, &[Rect::full(800, 600)]);
    assert!(fresh, "a new frame size starts with a fresh buffer");
    assert_shows(&weston.screenshot(), &full, 0, 0);
    // Then to a square mode: the old picture must give way to black bars.
    presenter
        .set_frame(300, 300, PixelFormat::Xrgb8888)
        .expect("set_frame");
    let square = Picture::new(300, 300, |_, _| 0x336699);
    show(&mut presenter, &weston, &square, &[Rect::full(300, 300)]);
    let shot = weston.screenshot();
    for y in 0..600 {
        for x in (0..100).chain(700..800) {
            assert_eq!(shot.pixel(x, y), 0, "bar pixel ({x}, {y}) is not black");
        }
        for x in [100, 400, 699] {
            assert_eq!(shot.pixel(x, y), 0x336699, "picture pixel ({x}, {y})");
        }
    }
}

fn desktop_shell_defaults_to_frame_size(renderer: Renderer) {
    let weston = Weston::start(WestonConfig {
        kiosk: false,
        ..WestonConfig::kiosk(1024, 768, renderer)
    });
    let mut presenter = connect(&weston, PresenterOptions::new(333, 222));
    let picture = Picture::new(333, 222, pattern);
    show(&mut presenter, &weston, &picture, &[Rect::full(333, 222)]);
    assert_eq!(presenter.window_size(), Some((333, 222)));
    // Frames with partial and with no damage are paced and shown too.
    show(&mut presenter, &weston, &picture, &[Rect::new(1, 2, 3, 4)]);
    show(&mut presenter, &weston, &picture, &[]);
}

fn compositor_loss_is_an_error(renderer: Renderer) {
    let mut weston = Weston::start(WestonConfig::kiosk(320, 240, renderer));
    let mut presenter = connect(&weston, PresenterOptions::new(320, 240));
    wait_ready(&mut presenter, &weston);
    weston.kill();
    let deadline = Instant::now() + TIMEOUT;
    let error = loop {
        assert!(
            Instant::now() < deadline,
            "no error after the compositor died"
        );
        match presenter.dispatch(Some(Duration::from_millis(100))) {
            Ok(_) => continue,
            Err(error) => break error,
        }
    };
    assert!(
        matches!(
            error,
            PresentError::ConnectionLost(_) | PresentError::Protocol(_)
        ),
        "unexpected error {error:?}"
    );
    // Presenting on a dead connection must not panic either.
    if let Ok(Some(frame)) = presenter.next_buffer() {
        let _ = frame.present(&[Rect::full(320, 240)]);
    }
}

/// The guest's cursor image becomes the pointer's image over the window, and hiding it
/// hides the pointer: weston (on a real seat, pointer moved by xdotool) draws it into
/// its output, so a screenshot shows it.
fn cursor_image_follows_the_pointer(renderer: Renderer) {
    let (width, height) = (320, 240);
    let weston = Weston::start(WestonConfig::kiosk(width, height, renderer).with_seat());
    let mut presenter = connect(&weston, PresenterOptions::new(width, height));
    let background = Picture::new(width, height, |_, _| 0x00_00_c0);
    assert!(show(
        &mut presenter,
        &weston,
        &background,
        &[Rect::full(width, height)]
    ));
    // A 16×16 opaque red arrow-less square, hotspot at its centre.
    let red: Vec<u8> = std::iter::repeat_n([0x00, 0x00, 0xff, 0xff], 16 * 16)
        .flatten()
        .collect();
    presenter.set_cursor_image(16, 16, 8, 8, &red).unwrap();
    weston.xdotool(&["mousemove", "100", "100"]);
    let pump = |presenter: &mut ShmPresenter| {
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            presenter
                .dispatch(Some(Duration::from_millis(20)))
                .expect("dispatch");
        }
    };
    pump(&mut presenter);
    let shot = weston.screenshot();
    // The hotspot sits at the pointer: the square spans 92..108.
    for (x, y) in [(92, 92), (100, 100), (107, 107)] {
        assert_eq!(shot.pixel(x, y), 0xff_00_00, "cursor at {x},{y}");
    }
    for (x, y) in [(90, 90), (109, 100), (50, 50)] {
        assert_eq!(shot.pixel(x, y), 0x00_00_c0, "background at {x},{y}");
    }
    presenter.set_cursor_visible(false).unwrap();
    weston.xdotool(&["mousemove", "101", "101"]);
    pump(&mut presenter);
    let shot = weston.screenshot();
    assert_eq!(
        shot.pixel(100, 100),
        0x00_00_c0,
        "hidden cursor still drawn"
    );
}

macro_rules! both_renderers {
    ($($name:ident),* $(,)?) => {
        mod pixman {
            $(#[test] fn $name() { super::$name(super::Renderer::Pixman) })*
        }
        mod gl {
            $(#[test] fn $name() { super::$name(super::Renderer::Gl) })*
        }
    };
}

both_renderers!(
    exact_odd_size,
    damage_only_changes_its_rect,
    letterbox,
    frame_size_change,
    output_scale_two_is_pixel_exact,
    desktop_shell_defaults_to_frame_size,
    compositor_loss_is_an_error,
    cursor_image_follows_the_pointer,
);
