//! Host tier: the viewer binary on a real headless weston, gl=off. The compositor's own
//! screenshot must equal the demo guest's picture pixel for pixel.
#![cfg(feature = "wayland")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::weston::{Renderer, Screenshot, Weston, WestonConfig};
use guestfb::export::{Exporter, PinManager, PinPolicy, PinPurpose};
use guestfb::format::PixelFormat;
use guestfb::import::convert::{Dest, DestFormat};
use guestfb::import::CpuMapping;
use guestfb::rect::Rect;
use guestfb::source::demo::{DemoConfig, DemoGuest};

/// A viewer process that has presented its frames and holds the window.
struct Viewer {
    child: Child,
}

impl Viewer {
    fn start(weston: &Weston, args: &[&str], frames: u64) -> Self {
        let mut child = Command::new(common::example_binary("viewer"))
            .args(args)
            .args(["--gl", "off", "--hold", "--frames", &frames.to_string()])
            .env("WAYLAND_DISPLAY", weston.socket_path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the viewer");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("  {line}");
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let wanted = format!("viewer: presented {frames} frames");
        loop {
            match received.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line == wanted => break,
                Ok(_) => {}
                Err(error) => {
                    let status = child.try_wait();
                    panic!("viewer never printed {wanted:?} ({error}); status {status:?}");
                }
            }
        }
        // The last frame was committed; give the compositor one repaint to show it.
        std::thread::sleep(Duration::from_millis(150));
        Self { child }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The picture of frame `frame` of a demo guest, as 0xRRGGBB, top row first.
fn expected_picture(config: DemoConfig, frame: u64) -> Vec<u32> {
    let mut guest = DemoGuest::new(config).unwrap();
    for _ in 0..frame {
        guest.step();
    }
    let exporter = Exporter::new(
        guest.memory().clone(),
        PinManager::new(PinPolicy::default()),
    );
    let mapping = CpuMapping::new(
        exporter
            .export(1, &guest.desc(), PinPurpose::CpuRead)
            .unwrap(),
    );
    let (width, height) = (config.width, config.height);
    let mut pixels = vec![0u8; width as usize * height as usize * 4];
    let mut dest = Dest {
        data: &mut pixels,
        stride: width as usize * 4,
        format: DestFormat::Xrgb8888,
    };
    mapping
        .blit(&mut dest, &[Rect::full(width, height)])
        .unwrap();
    pixels
        .chunks_exact(4)
        .map(|bgrx| u32::from_le_bytes([bgrx[0], bgrx[1], bgrx[2], 0]))
        .collect()
}

fn assert_shows(shot: &Screenshot, expected: &[u32], width: u32, what: &str) {
    assert_eq!(
        (shot.width, shot.height),
        (width, expected.len() as u32 / width),
        "{what}: size"
    );
    let mut wrong = 0;
    let mut first = None;
    for (index, &want) in expected.iter().enumerate() {
        let (x, y) = (index as u32 % width, index as u32 / width);
        let got = shot.pixel(x, y);
        if got != want {
            wrong += 1;
            first.get_or_insert((x, y, got, want));
        }
    }
    assert_eq!(
        wrong, 0,
        "{what}: {wrong} pixels differ, first (x, y, got, want) {first:x?}"
    );
}

fn config_args(config: &DemoConfig) -> Vec<String> {
    let mut args = vec![
        "--size".to_owned(),
        format!("{}x{}", config.width, config.height),
        "--format".to_owned(),
        config.format.name().to_owned(),
        "--stride-padding".to_owned(),
        config.stride_padding.to_string(),
    ];
    if !config.y0_top {
        args.push("--y0-bottom".to_owned());
    }
    if config.scattered {
        args.push("--scattered".to_owned());
    }
    args
}

fn check_first_frame(config: DemoConfig, renderer: Renderer) {
    let weston = Weston::start(WestonConfig::kiosk(config.width, config.height, renderer));
    let args = config_args(&config);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _viewer = Viewer::start(&weston, &args, 1);
    let shot = weston.screenshot();
    assert_shows(
        &shot,
        &expected_picture(config, 0),
        config.width,
        "first frame",
    );
}

#[test]
fn odd_size_padded_stride_bottom_up_is_pixel_exact() {
    check_first_frame(
        DemoConfig {
            width: 1001,
            height: 667,
            stride_padding: 12,
            y0_top: false,
            ..DemoConfig::default()
        },
        Renderer::Gl,
    );
}

#[test]
fn converted_scattered_formats_are_pixel_exact() {
    for format in [
        PixelFormat::Xbgr8888,
        PixelFormat::Rgb565,
        PixelFormat::Nv12,
    ] {
        check_first_frame(
            DemoConfig {
                width: 320,
                height: 240,
                format,
                stride_padding: 4,
                scattered: true,
                ..DemoConfig::default()
            },
            Renderer::Pixman,
        );
    }
}

#[test]
fn second_frame_changes_only_its_damage() {
    let config = DemoConfig {
        width: 640,
        height: 400,
        stride_padding: 64,
        ..DemoConfig::default()
    };
    let frame0 = expected_picture(config, 0);
    let frame1 = expected_picture(config, 1);
    let damage = DemoGuest::new(config).unwrap().step();
    // The pictures differ, and only inside the guest's damage rects.
    let mut changed = 0;
    for (index, (a, b)) in frame0.iter().zip(&frame1).enumerate() {
        if a != b {
            changed += 1;
            let (x, y) = (index as u32 % config.width, index as u32 / config.width);
            assert!(
                damage
                    .iter()
                    .any(|rect| rect.contains(&Rect::new(x, y, 1, 1))),
                "pixel {x},{y} changed outside the damage {damage:?}"
            );
        }
    }
    assert!(
        changed > 0 && changed < frame0.len() / 10,
        "{changed} pixels changed"
    );

    let weston = Weston::start(WestonConfig::kiosk(
        config.width,
        config.height,
        Renderer::Gl,
    ));
    let args = config_args(&config);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let viewer = Viewer::start(&weston, &args, 2);
    assert_shows(&weston.screenshot(), &frame1, config.width, "second frame");
    drop(viewer);
}

/// Runs the viewer with `args` and a compositor socket that does not exist, so that
/// anything it opened before refusing would show as another error. Returns stderr.
fn refused(args: &[&str]) -> String {
    let started = std::time::Instant::now();
    let output = Command::new(common::example_binary("viewer"))
        .args(args)
        .env("WAYLAND_DISPLAY", "guestfb-no-such-compositor")
        .output()
        .expect("run the viewer");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "viewer {args:?} should exit 1; stderr: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "viewer {args:?} took {:?} to refuse",
        started.elapsed()
    );
    assert!(
        !stderr.contains("panicked"),
        "viewer {args:?} panicked: {stderr}"
    );
    stderr
}

/// Asserts that `stderr` holds every one of `parts` (the value, the limit, the fix).
fn assert_says(stderr: &str, parts: &[&str]) {
    for part in parts {
        assert!(stderr.contains(part), "expected {part:?} in: {stderr}");
    }
}

#[test]
fn options_for_another_source_are_refused_up_front() {
    let stderr = refused(&[
        "--source",
        "qemu:unix:path=/nonexistent",
        "--size",
        "800x600",
    ]);
    assert_says(
        &stderr,
        &["--size does not apply to --source qemu", "leave it out"],
    );
    let stderr = refused(&["--source", "qemu:unix:path=/nonexistent", "--hugetlb"]);
    assert_says(&stderr, &["--hugetlb does not apply to --source qemu"]);
    #[cfg(feature = "qemu")]
    {
        let stderr = refused(&["--console", "1"]);
        assert_says(
            &stderr,
            &["--console does not apply to --source demo", "--source qemu"],
        );
    }
}

#[test]
fn unwritable_screenshot_paths_are_refused_up_front() {
    let dir = std::env::temp_dir().join(format!("guestfb-shot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();

    let shown = dir.display().to_string();
    let stderr = refused(&["--screenshot", &shown, "--frames", "1"]);
    assert_says(
        &stderr,
        &[&format!("--screenshot {shown}"), "is a directory"],
    );

    let inside_file = file.join("shot.png");
    let stderr = refused(&["--screenshot", &inside_file.display().to_string()]);
    assert_says(
        &stderr,
        &[
            &file.display().to_string(),
            "is not a directory",
            "choose a path",
        ],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn planes_beyond_the_dma_buf_limits_are_refused_before_a_window() {
    // gl=on is documented to fail where zero copy is impossible: a plane past EGL's and
    // linux-dmabuf's 32-bit limits is refused by guestfb, not by the compositor.
    let stderr = refused(&[
        "--gl",
        "on",
        "--size",
        "1280x720",
        "--stride-padding",
        "999999999",
    ]);
    assert_says(
        &stderr,
        &[
            "stride 1000005119 × 720 rows",
            "past 2147483647",
            "Use a smaller stride, or the CPU path (gl=off)",
        ],
    );
}

#[test]
fn a_short_hugetlb_pool_is_named_with_the_fix() {
    // 16384 rows of ~1 MB: about 8000 2 MiB pages, far beyond any test host's pool.
    let stderr = refused(&[
        "--gl",
        "off",
        "--hugetlb",
        "--size",
        "16384x16384",
        "--stride-padding",
        "1000000",
    ]);
    assert_says(
        &stderr,
        &[
            "hugetlb pool of 2048 kB pages is short",
            "page(s) needed",
            "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
        ],
    );
}

#[test]
fn a_killed_compositor_ends_the_viewer_with_status_1_and_says_so() {
    for gl in ["off", "auto"] {
        let mut weston = Weston::start(WestonConfig::kiosk(320, 240, Renderer::Gl));
        let mut child = Command::new(common::example_binary("viewer"))
            .args(["--gl", gl, "--size", "320x240"])
            .env("WAYLAND_DISPLAY", weston.socket_path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the viewer");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut presenting = None;
        for line in stdout.lines().map_while(Result::ok) {
            if line.starts_with("viewer: presenting with") {
                presenting = Some(line);
                break;
            }
        }
        assert!(presenting.is_some(), "gl={gl}: the viewer never presented");
        std::thread::sleep(Duration::from_millis(500));
        weston.kill();
        let started = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "gl={gl}: the viewer outlived its compositor"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(1), "gl={gl}: {stderr}");
        assert!(
            stderr.contains("viewer: lost the connection to the Wayland compositor")
                && !stderr.contains("panicked"),
            "gl={gl}: {stderr}"
        );
    }
}
