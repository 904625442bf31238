//! Host tier: the viewer binary with `--source qemu:ADDRESS` against a real QEMU (TCG,
//! `-vga std -display dbus`, no disk: the SeaBIOS screen is the picture) on a private
//! dbus-daemon, shown in a headless weston kiosk whose output is the console's 720×400
//! text-mode size. Weston's screenshot must equal QEMU's own `screendump` pixel for
//! pixel; keys typed by the viewer reach the guest; a killed QEMU ends the viewer with
//! status 1.
//!
//! Build the viewer first (`cargo build --all-features --examples`). A missing QEMU,
//! dbus-daemon or weston is a failure, never a skip.
#![cfg(all(feature = "wayland", feature = "qemu"))]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::qemu::{Bus, Qemu};
use common::weston::{Renderer, Weston, WestonConfig};

/// QEMU under TCG plus weston is heavy on a 2-core machine: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("host_viewer_qemu-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The SeaBIOS text screen's size (80×25 cells of 9×16 pixels).
const TEXT_MODE: (u32, u32) = (720, 400);

/// A running viewer; its stdout and stderr lines arrive on `lines`.
struct Viewer {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Viewer {
    fn start(compositor: &Path, bus: &Bus, extra: &[&str]) -> Self {
        let mut child = Command::new(common::example_binary("viewer"))
            .arg("--source")
            .arg(format!("qemu:{}", bus.address))
            .args(extra)
            .env("WAYLAND_DISPLAY", compositor)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the viewer");
        let (tx, lines) = mpsc::channel();
        fn forward(stream: impl Read + Send + 'static, tx: mpsc::Sender<String>) {
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("  {line}");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        forward(child.stdout.take().expect("piped stdout"), tx.clone());
        forward(child.stderr.take().expect("piped stderr"), tx);
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for an output line containing `text`.
    fn wait_for_line(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(error) => panic!(
                    "viewer never printed {text:?} ({error}); status {:?}; output {:#?}",
                    self.child.try_wait(),
                    self.seen
                ),
            }
        }
    }

    /// Waits for the viewer to exit.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("viewer status") {
                // Collect what it printed last.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the viewer did not exit; output {:#?}",
                self.seen
            );
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// QEMU on a private bus, at the SeaBIOS prompt in text mode, with a kiosk weston of
/// the text screen's size.
fn setup(name: &str) -> (Bus, Qemu, Weston) {
    let dir = scratch(name);
    let bus = Bus::start();
    let mut qemu = Qemu::start(&bus, &dir, &[]);
    qemu.wait_for_text("Press ESC for boot menu", Duration::from_secs(60));
    let (width, height, _) = qemu.screendump();
    assert_eq!((width, height), TEXT_MODE, "SeaBIOS text mode size");
    let weston = Weston::start(WestonConfig::kiosk(width, height, Renderer::Pixman));
    (bus, qemu, weston)
}

/// Compares weston's screenshot with QEMU's screendump taken right after, a few times
/// (the text cursor blinks between the two). Returns the matching picture.
fn assert_viewer_matches_screendump(qemu: &mut Qemu, weston: &Weston) -> Vec<u8> {
    let mut last = String::new();
    for _ in 0..10 {
        let shot = weston.screenshot();
        let (width, height, rgb) = qemu.screendump();
        if (shot.width, shot.height) != (width, height) {
            last = format!(
                "screenshot {}x{}, screendump {width}x{height}",
                shot.width, shot.height
            );
        } else if shot.rgb == rgb {
            return rgb;
        } else {
            let differing = shot
                .rgb
                .chunks_exact(3)
                .zip(rgb.chunks_exact(3))
                .filter(|(a, b)| a != b)
                .count();
            last = format!("{differing} of {} pixels differ", width * height);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("the viewer's window never equalled QEMU's screendump: {last}");
}

fn viewer_matches_screendump(extra: &[&str]) {
    let _serial = serial();
    let (bus, mut qemu, weston) = setup(if extra.is_empty() { "map" } else { "data" });
    let mut viewer = Viewer::start(&weston.socket_path(), &bus, extra);
    viewer.wait_for_line("first frame shown", Duration::from_secs(30));
    let expected = if extra.contains(&"--qemu-no-map") {
        "pixel-data transport"
    } else {
        "shared-memory transport"
    };
    assert!(
        viewer.seen.iter().any(|line| line.contains(expected)),
        "viewer did not report the {expected}: {:#?}",
        viewer.seen
    );
    assert_viewer_matches_screendump(&mut qemu, &weston);
}

#[test]
fn viewer_shows_the_console_pixel_exact_through_shared_memory() {
    viewer_matches_screendump(&[]);
}

#[test]
fn viewer_shows_the_console_pixel_exact_through_pixel_data() {
    viewer_matches_screendump(&["--qemu-no-map"]);
}

#[test]
fn send_keys_esc_opens_the_seabios_boot_menu() {
    let _serial = serial();
    let (bus, mut qemu, weston) = setup("esc");
    let (_, _, before) = qemu.screendump();
    let mut viewer = Viewer::start(&weston.socket_path(), &bus, &["--send-keys", "esc"]);
    viewer.wait_for_line("sent 1 key(s)", Duration::from_secs(30));
    qemu.wait_for_text("Select boot device", Duration::from_secs(20));
    let after = assert_viewer_matches_screendump(&mut qemu, &weston);
    assert_ne!(before, after, "the picture did not change after ESC");
}

#[test]
fn killed_qemu_ends_the_viewer_with_status_1() {
    let _serial = serial();
    let (bus, mut qemu, weston) = setup("kill");
    let mut viewer = Viewer::start(&weston.socket_path(), &bus, &[]);
    viewer.wait_for_line("first frame shown", Duration::from_secs(30));
    qemu.child.kill().expect("kill QEMU");
    let _ = qemu.child.wait();
    let status = viewer.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "viewer output {:#?}", viewer.seen);
    assert!(
        viewer
            .seen
            .iter()
            .any(|line| line.contains("QEMU disconnected")),
        "no clear message: {:#?}",
        viewer.seen
    );
}

#[test]
fn console_all_opens_one_window_per_head() {
    let _serial = serial();
    let dir = scratch("heads");
    let bus = Bus::start();
    let mut qemu = Qemu::start(
        &bus,
        &dir,
        &["-vga", "none", "-device", "virtio-vga,max_outputs=2"],
    );
    qemu.wait_for_text("Press ESC for boot menu", Duration::from_secs(60));
    let weston = Weston::start(WestonConfig::kiosk(720, 400, Renderer::Pixman));
    let mut viewer = Viewer::start(&weston.socket_path(), &bus, &["--console", "all"]);
    viewer.wait_for_line("console 0: first frame shown", Duration::from_secs(30));
    viewer.wait_for_line("console 1: first frame shown", Duration::from_secs(30));
    let attached = viewer
        .seen
        .iter()
        .filter(|line| line.contains(") attached,"))
        .count();
    assert_eq!(attached, 2, "two windows: {:#?}", viewer.seen);
    assert!(
        viewer.child.try_wait().expect("viewer status").is_none(),
        "the viewer quit: {:#?}",
        viewer.seen
    );
}

/// A key typed on the viewer's window (a real Wayland seat: wl_keyboard) reaches the
/// guest: ESC at the SeaBIOS prompt opens the boot menu.
#[test]
fn keys_typed_on_the_window_reach_the_guest() {
    let _serial = serial();
    let dir = scratch("seat");
    let bus = Bus::start();
    let mut qemu = Qemu::start(&bus, &dir, &[]);
    qemu.wait_for_text("Press ESC for boot menu", Duration::from_secs(60));
    let weston =
        Weston::start(WestonConfig::kiosk(TEXT_MODE.0, TEXT_MODE.1, Renderer::Pixman).with_seat());
    let mut viewer = Viewer::start(&weston.socket_path(), &bus, &[]);
    viewer.wait_for_line("first frame shown", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !qemu.text_screen().contains("Select boot device") {
        assert!(
            Instant::now() < deadline,
            "ESC typed on the window never reached the guest; viewer said {:#?}",
            viewer.seen
        );
        weston.xdotool(&["mousemove", "100", "100"]);
        weston.xdotool(&["key", "Escape"]);
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Pointer motion and a click on the viewer's window (a real seat) reach QEMU's input
/// layer, scaled 1:1 to console pixels: QEMU's own trace of its input events shows the
/// relative motion (std VGA's PS/2 mouse) and the button.
#[test]
fn pointer_motion_and_clicks_on_the_window_reach_qemu() {
    let _serial = serial();
    let dir = scratch("pointer");
    let trace = dir.join("input-trace.log");
    let bus = Bus::start();
    let mut qemu = Qemu::start(
        &bus,
        &dir,
        &[
            "-trace",
            "enable=input_event_*",
            "-D",
            trace.to_str().unwrap(),
        ],
    );
    qemu.wait_for_text("Press ESC for boot menu", Duration::from_secs(60));
    let weston =
        Weston::start(WestonConfig::kiosk(TEXT_MODE.0, TEXT_MODE.1, Renderer::Pixman).with_seat());
    let mut viewer = Viewer::start(&weston.socket_path(), &bus, &[]);
    viewer.wait_for_line("first frame shown", Duration::from_secs(30));
    let wanted = [
        "axis x, value 100",
        "axis y, value 50",
        "button left, down 1",
        "button left, down 0",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        weston.xdotool(&["mousemove", "100", "100"]);
        std::thread::sleep(Duration::from_millis(300));
        weston.xdotool(&["mousemove", "200", "150", "click", "1"]);
        std::thread::sleep(Duration::from_millis(500));
        let log = std::fs::read_to_string(&trace).unwrap_or_default();
        if wanted.iter().all(|line| log.contains(line)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "QEMU never saw the pointer events {wanted:?}; its input trace:\n{log}\nviewer: {:#?}",
            viewer.seen
        );
    }
}

#[test]
fn kms_output_refuses_options_it_cannot_honour_before_connecting() {
    // Checked before QEMU is reached: the address does not exist.
    for (args, expected) in [
        (
            &["--gl", "off"][..],
            "--gl off copies into a Wayland window; --output kms scans QEMU's dma-bufs out",
        ),
        (&["--present", "gl"][..], "--output kms has one (the plane)"),
    ] {
        let output = Command::new(common::example_binary("viewer"))
            .args(["--source", "qemu:unix:path=/nonexistent/guestfb-bus"])
            .args(["--output", "kms:/dev/dri/card0"])
            .args(args)
            .output()
            .expect("run the viewer");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
