//! Guest tier, one level deeper: a real Linux guest shown by the viewer.
//!
//! Inside the test guest (Debian 6.12, /dev/udmabuf) two real QEMUs boot the same 6.12
//! kernel with a tiny initramfs whose /init (`scripts/guest/nested/fbtest.c`) draws a
//! known picture into KMS dumb buffers on virtio-gpu and page-flips between two of them,
//! changes mode once (1024×768 → 800×600) and then keeps flipping between two buffers
//! holding the same final picture. With `virtio-gpu-pci,blob=true` and no virgl, Linux
//! makes every dumb buffer a blob resource: QEMU gets SET_SCANOUT_BLOB and its
//! `-display dbus,gl=on` (EGL on Mesa's software GBM over vkms' card node) hands each
//! scanout to the display as the blob's udmabuf (`ScanoutDMABUF`): the guest's own RAM
//! pages. (With `gl=off` QEMU 10.0.2 sends fd 0, its stdin, in `ScanoutMap` for a blob
//! — the blob's udmabuf never becomes the surface's share handle there — which the
//! viewer refuses by kind; QEMU then falls back to pixel data.)
//!
//! - QEMU A: 256 MiB memfd RAM (4 KiB pages), one head.
//! - QEMU B: 128 MiB memfd RAM on 2 MiB hugetlb pages, two heads (`max_outputs=2`).
//!
//! One boot of each serves every test (nested TCG is slow: minutes per boot). A viewer
//! attached from the start follows the boot, the flips and the mode change. Each check
//! compares the viewer's screenshot and weston's screenshot with fbtest's picture
//! formula, pixel for pixel, and asserts the path the viewer took and
//! the bytes it copied per frame.
#![cfg(all(feature = "wayland", feature = "wayland-egl", feature = "qemu"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use common::qemu::read_png_rgb;
use common::weston::{Renderer, Weston, WestonConfig};

/// fbtest's final mode (its connector's second mode).
const FINAL: (u32, u32) = (800, 600);
/// fbtest's first mode (`xres=1024,yres=768`).
const FIRST: (u32, u32) = (1024, 768);
/// vkms' card node in the test guest (card0 is vgem): the node QEMU's software GBM uses.
const VKMS_CARD: &str = "/dev/dri/card1";
/// How long a nested boot may take until `fbtest: done` (seen: 425–993 s on a 2-core
/// machine, both QEMUs booting at once; the slow end with other work on the host).
const BOOT_TIMEOUT: Duration = Duration::from_secs(1500);

/// fbtest's picture of head `head` at `width`×`height`, frame `frame`, pixel (x, y), as
/// (R, G, B): see scripts/guest/nested/README.md.
fn fbtest_pixel(head: u32, width: u32, height: u32, frame: u32, x: u32, y: u32) -> [u8; 3] {
    let (rw, rh) = (width / 8, height / 8);
    let (rx, ry) = ((frame * 40) % (width - rw), (frame * 30) % (height - rh));
    if (rx..rx + rw).contains(&x) && (ry..ry + rh).contains(&y) {
        [
            255,
            ((frame * 20) % 256) as u8,
            ((255 - 100 * head) % 256) as u8,
        ]
    } else {
        [
            (x * 255 / (width - 1)) as u8,
            (y * 255 / (height - 1)) as u8,
            ((64 + 128 * head) % 256) as u8,
        ]
    }
}

/// fbtest's final picture of `head` (frame 11 at the final mode), RGB.
fn final_picture(head: u32) -> Vec<u8> {
    let (w, h) = FINAL;
    (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| fbtest_pixel(head, w, h, 11, x, y)))
        .collect()
}

/// Width, height and RGB bytes.
type Picture = (u32, u32, Vec<u8>);

/// Pixels that differ between two RGB pictures of the same size, and the first one.
fn differences(a: &[u8], b: &[u8], width: u32) -> (usize, Option<(u32, u32)>) {
    assert_eq!(a.len(), b.len(), "pictures of different sizes");
    let mut count = 0;
    let mut first = None;
    for (i, (pa, pb)) in a.chunks_exact(3).zip(b.chunks_exact(3)).enumerate() {
        if pa != pb {
            count += 1;
            first.get_or_insert(((i as u32) % width, (i as u32) / width));
        }
    }
    (count, first)
}

fn assert_picture(what: &str, (width, height, rgb): &Picture, expected: &[u8]) {
    assert_eq!((*width, *height), FINAL, "{what}: size");
    let (count, first) = differences(rgb, expected, *width);
    assert_eq!(
        count, 0,
        "{what}: {count} pixels differ from fbtest's final picture, the first at {first:?}"
    );
}

/// One nested QEMU, started by scripts/guest/nested/run-nested.sh.
struct Nested {
    dir: PathBuf,
    heads: u32,
    boot_seconds: f64,
}

impl Nested {
    /// Starts a nested QEMU with `-display dbus,gl=on`: QEMU's EGL runs on Mesa's
    /// software GBM (`GBM_ALWAYS_SOFTWARE=1`) over vkms' card node, and a blob scanout
    /// reaches the display as `ScanoutDMABUF` with the blob's udmabuf.
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let status = Command::new("scripts/guest/nested/run-nested.sh")
            .arg("--dir")
            .arg(dir)
            .args(["--gl-on", VKMS_CARD])
            .args(extra)
            .status()
            .expect("run scripts/guest/nested/run-nested.sh");
        assert!(status.success(), "run-nested.sh {extra:?} failed: {status}");
        let heads = match extra.iter().position(|a| *a == "--heads") {
            Some(i) => extra[i + 1].parse().unwrap(),
            None => 1,
        };
        Self {
            dir: dir.to_owned(),
            heads,
            boot_seconds: 0.0,
        }
    }

    fn bus(&self) -> String {
        format!("unix:path={}", self.dir.join("bus").display())
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    fn trace(&self) -> String {
        std::fs::read_to_string(self.dir.join("trace.log")).unwrap_or_default()
    }

    /// True once fbtest said `done`; panics on an fbtest error or a dead QEMU.
    fn done(&self) -> bool {
        let pid = std::fs::read_to_string(self.dir.join("qemu.pid")).unwrap_or_default();
        // Gone, or a zombie (state Z: nobody reaps the orphaned QEMU at once).
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        let alive = stat.is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|t| !t.trim_start().starts_with('Z'))
        });
        assert!(
            alive,
            "the nested QEMU in {} exited: {}",
            self.dir.display(),
            std::fs::read_to_string(self.dir.join("qemu.log")).unwrap_or_default()
        );
        let console = self.console();
        assert!(
            !console.contains("fbtest: ERROR"),
            "fbtest failed in {}:\n{console}",
            self.dir.display()
        );
        console.contains("fbtest: done")
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        let _ = Command::new("scripts/guest/nested/run-nested.sh")
            .arg("--stop")
            .arg(&self.dir)
            .status();
    }
}

/// A viewer process whose output goes to a file.
struct Viewer {
    child: Child,
    log: PathBuf,
}

impl Viewer {
    fn start(weston: &Weston, nested: &Nested, log: &Path, args: &[&str]) -> Self {
        Self::spawn(Some(weston), nested, log, args)
    }

    /// Starts the viewer with `args` and no compositor (`--output kms`).
    fn start_kms(nested: &Nested, log: &Path, args: &[&str]) -> Self {
        Self::spawn(None, nested, log, args)
    }

    fn spawn(weston: Option<&Weston>, nested: &Nested, log: &Path, args: &[&str]) -> Self {
        let file = std::fs::File::create(log).unwrap();
        let mut command = Command::new(common::example_binary("viewer"));
        command
            .arg("--source")
            .arg(format!("qemu:{}", nested.bus()))
            .args(args)
            .env_remove("WAYLAND_DISPLAY")
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        if let Some(weston) = weston {
            command.env("WAYLAND_DISPLAY", weston.socket_path());
        }
        Self {
            child: command.spawn().expect("start the viewer"),
            log: log.to_owned(),
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the viewer to exit 0 and returns what it printed.
    fn finish(mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let output = self.output();
                eprintln!("--- viewer ({status}):\n{output}");
                assert!(status.success(), "the viewer failed ({status}):\n{output}");
                return output;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the viewer did not finish in {timeout:?}:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Asks the viewer to stop (SIGTERM: screenshot and counters, then exit 0).
    fn stop(self, timeout: Duration) -> String {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.finish(timeout)
    }
}

/// The counters of the viewer's exit line for `console`:
/// (frames, dma-buf import frames, memfd export frames, copy frames, imports, cache
/// hits, bytes copied per frame).
fn head_stats(output: &str, console: u32) -> [f64; 7] {
    let prefix = format!("viewer: console {console}: ");
    let line = output
        .lines()
        .find(|l| l.starts_with(&prefix) && l.contains(" frames in "))
        .unwrap_or_else(|| panic!("no counters of console {console} in:\n{output}"));
    let numbers: Vec<f64> = line[prefix.len()..]
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|s| !s.is_empty() && *s != ".")
        .filter_map(|s| s.parse().ok())
        .collect();
    // frames, seconds, import, export, copy, imports, hits, bytes
    assert!(numbers.len() >= 8, "unexpected counter line {line:?}");
    [
        numbers[0], numbers[2], numbers[3], numbers[4], numbers[5], numbers[6], numbers[7],
    ]
}

/// Both nested QEMUs and the viewer that watched QEMU A boot.
struct Fixture {
    memfd: Nested,
    hugetlb: Nested,
    /// The viewer attached before the guest booted, with its compositor.
    live: Option<(Viewer, Weston)>,
    scratch: PathBuf,
}

static FIXTURE: OnceLock<Mutex<Fixture>> = OnceLock::new();
/// Set when the boot failed: the other tests fail at once instead of booting again.
static BOOT_FAILED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn fixture() -> Option<MutexGuard<'static, Fixture>> {
    use std::sync::atomic::Ordering;
    if !common::require_guest("guest_nested") {
        return None;
    }
    assert!(
        !BOOT_FAILED.load(Ordering::Relaxed),
        "the nested guests failed to boot (see the first test's failure)"
    );
    let fixture = FIXTURE.get_or_init(|| {
        BOOT_FAILED.store(true, Ordering::Relaxed);
        let fixture = boot();
        BOOT_FAILED.store(false, Ordering::Relaxed);
        Mutex::new(fixture)
    });
    Some(fixture.lock().unwrap_or_else(|p| p.into_inner()))
}

fn boot() -> Fixture {
    let status = Command::new("scripts/guest/nested-setup.sh")
        .status()
        .expect("run scripts/guest/nested-setup.sh");
    assert!(status.success(), "nested-setup.sh failed: {status}");
    // The run directory of scripts/guest/run.sh is shared with the host (kept there
    // when a test fails); elsewhere the target dir.
    let scratch = std::env::var_os("GUESTFB_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
        .join("guest_nested");
    // weston's GL renderer (for linux-dmabuf passthrough) picks vgem's render node
    // (kms_swrast) and crashes on a dma-buf import; without vgem it runs on llvmpipe.
    // vkms' card, which QEMU's GBM uses, keeps its number.
    let status = Command::new("rmmod").arg("vgem").status();
    assert!(
        !Path::new("/sys/module/vgem").exists(),
        "rmmod vgem failed ({status:?})"
    );
    // The first process to open a card node becomes its DRM master, and QEMU's GBM
    // opens vkms' card: held here until both QEMUs have it open, the master goes with
    // this fd, and the KMS test's viewer becomes master instead of finding QEMU there.
    let master_holder = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(VKMS_CARD)
        .unwrap_or_else(|e| panic!("open {VKMS_CARD}: {e}"));
    let started = Instant::now();
    let mut memfd = Nested::start(&scratch.join("memfd"), &[]);
    let mut hugetlb = Nested::start(&scratch.join("hugetlb"), &["--hugetlb", "--heads", "2"]);
    // The live viewer: attached while QEMU A shows its placeholder (QEMU under TCG
    // takes seconds to put its display on the bus). Its window has fbtest's first
    // mode: the viewer passes the window size to the guest (SetUIInfo), which makes it
    // the guest's preferred mode.
    common::qemu::wait_for_display_at(&memfd.bus(), Duration::from_secs(120));
    common::qemu::wait_for_display_at(&hugetlb.bus(), Duration::from_secs(120));
    // Both QEMUs opened the card for their EGL before their display went on the bus.
    drop(master_holder);
    let weston = Weston::start(WestonConfig::kiosk(FIRST.0, FIRST.1, Renderer::Pixman));
    std::thread::sleep(Duration::from_secs(2));
    let live = Viewer::start(
        &weston,
        &memfd,
        &scratch.join("live.log"),
        &[
            "--gl",
            "on",
            "--present",
            "gl",
            "--screenshot",
            scratch.join("live.png").to_str().unwrap(),
        ],
    );
    loop {
        let (a, b) = (memfd.done(), hugetlb.done());
        if a && memfd.boot_seconds == 0.0 {
            memfd.boot_seconds = started.elapsed().as_secs_f64();
        }
        if b && hugetlb.boot_seconds == 0.0 {
            hugetlb.boot_seconds = started.elapsed().as_secs_f64();
        }
        if a && b {
            break;
        }
        assert!(
            started.elapsed() < BOOT_TIMEOUT,
            "the nested guests did not finish drawing in {BOOT_TIMEOUT:?}; consoles:\n{}\n---\n{}",
            memfd.console(),
            hugetlb.console()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "nested guests: fbtest done {:.0} s (4 KiB memfd) and {:.0} s (hugetlb, 2 heads) \
         after QEMU started",
        memfd.boot_seconds, hugetlb.boot_seconds
    );
    Fixture {
        memfd,
        hugetlb,
        live: Some((live, weston)),
        scratch,
    }
}

#[test]
fn the_nested_guests_scan_out_blobs_and_change_mode() {
    let Some(f) = fixture() else { return };
    for nested in [&f.memfd, &f.hugetlb] {
        let trace = nested.trace();
        assert!(
            trace.contains("virtio_gpu_cmd_res_create_blob"),
            "no blob resource created (trace of {})",
            nested.dir.display()
        );
        assert!(
            trace.contains("virtio_gpu_cmd_set_scanout_blob"),
            "no SET_SCANOUT_BLOB (trace of {})",
            nested.dir.display()
        );
        // QEMU's screendump has no surface to read on a gl=on console that scans out a
        // dma-buf ("no surface"): the oracle is fbtest's formula, which QEMU's own
        // screendump matched exactly with gl=off (scripts/guest/nested/README.md).
        let console = nested.console();
        for head in 0..nested.heads {
            for mode in ["1024x768", "800x600"] {
                assert!(
                    console.contains(&format!("fbtest: head {head} mode {mode}")),
                    "fbtest head {head} never set {mode}:\n{console}"
                );
            }
        }
    }
}

/// Runs the viewer with `args` against `nested` in a fresh weston of the final mode's
/// size: with `frames`, until it presented that many on every head (`--frames`); else
/// until every head showed a few seconds of frames, when weston's screenshot is taken
/// and the viewer is stopped (SIGTERM). Returns its output, its screenshot(s) and
/// weston's screenshot (while the viewer was up).
fn run_viewer(
    scratch: &Path,
    nested: &Nested,
    name: &str,
    args: &[&str],
    frames: Option<u32>,
    renderer: Renderer,
) -> (String, Vec<Picture>, Option<common::weston::Screenshot>) {
    // Kiosk shows one window at a time (a hidden one gets no frame callbacks, and the
    // viewer answers QEMU for it without them: a_hidden_window_does_not_stall_the_guest).
    // Two heads get the desktop shell on an output that fits both windows, so that both
    // are on screen.
    let config = match nested.heads {
        1 => WestonConfig::kiosk(FINAL.0, FINAL.1, renderer),
        _ => WestonConfig {
            kiosk: false,
            ..WestonConfig::kiosk(FINAL.0 * 2 + 100, FINAL.1 + 100, renderer)
        },
    };
    let weston = Weston::start(config);
    let shot = scratch.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&shot);
    let frames_arg = frames.map(|n| n.to_string());
    let mut all = vec!["--screenshot", shot.to_str().unwrap()];
    if let Some(n) = &frames_arg {
        all.extend(["--frames", n]);
    }
    all.extend_from_slice(args);
    let viewer = Viewer::start(&weston, nested, &scratch.join(format!("{name}.log")), &all);
    let (output, on_screen) = match frames {
        Some(_) => (viewer.finish(Duration::from_secs(300)), None),
        None => {
            let deadline = Instant::now() + Duration::from_secs(180);
            while viewer.output().matches("first frame shown").count() < nested.heads as usize {
                assert!(
                    Instant::now() < deadline,
                    "the viewer showed no frame in 180 s:\n{}",
                    viewer.output()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            std::thread::sleep(Duration::from_secs(4));
            let on_screen = weston.screenshot();
            (viewer.stop(Duration::from_secs(60)), Some(on_screen))
        }
    };
    let shots = (0..nested.heads)
        .map(|head| match head {
            0 => shot.clone(),
            n => scratch.join(format!("{name}-{n}.png")),
        })
        .filter(|path| path.exists())
        .map(|path| read_png_rgb(&path))
        .collect();
    (output, shots, on_screen)
}

fn weston_picture(shot: &common::weston::Screenshot) -> Picture {
    (shot.width, shot.height, shot.rgb.clone())
}

#[test]
fn a_blob_on_4k_memfd_ram_is_shown_zero_copy_through_egl() {
    let Some(f) = fixture() else { return };
    let expected = final_picture(0);
    let (output, shots, on_screen) = run_viewer(
        &f.scratch,
        &f.memfd,
        "egl-memfd",
        &["--gl", "on", "--present", "gl"],
        None,
        Renderer::Pixman,
    );
    assert!(
        output.contains("QEMU dma-buf (ScanoutDMABUF, udmabuf, 800x600 XRGB8888)"),
        "the blob was not taken as a dma-buf:\n{output}"
    );
    assert!(output.contains("presenting with gl=on (EGL import, GL renderer)"));
    assert_picture("viewer screenshot", &shots[0], &expected);
    assert_picture(
        "weston screenshot",
        &weston_picture(&on_screen.unwrap()),
        &expected,
    );
    let [frames, import, export, copy, _, _, bytes] = head_stats(&output, 0);
    assert!(frames >= 2.0, "{frames} frames");
    assert_eq!(
        (import, export, copy),
        (frames, 0.0, 0.0),
        "every frame zero copy"
    );
    assert_eq!(bytes, 0.0, "no byte copied per frame");
    // fbtest flips between two blobs: each is imported at most once (the live viewer
    // sees the flips hit the cache). QEMU's own console surface, exported from its GL
    // (XBGR8888), may come first at attach.
    let blob_imports = output
        .matches("(ScanoutDMABUF, udmabuf, 800x600 XRGB8888) imported")
        .count();
    assert!(
        (1..=2).contains(&blob_imports),
        "{blob_imports} imports for two blobs:\n{output}"
    );
}

#[test]
fn a_blob_with_gl_off_is_read_through_the_udmabuf_mmap() {
    let Some(f) = fixture() else { return };
    let expected = final_picture(0);
    let (output, shots, on_screen) = run_viewer(
        &f.scratch,
        &f.memfd,
        "gl-off",
        &["--gl", "off"],
        None,
        Renderer::Pixman,
    );
    assert!(output.contains("QEMU dma-buf (ScanoutDMABUF, udmabuf, 800x600 XRGB8888)"));
    assert!(
        !output.contains("presenting with gl=on"),
        "--gl off used gl=on:\n{output}"
    );
    let [frames, import, _, copy, imports, _, bytes] = head_stats(&output, 0);
    assert_eq!((import, copy), (0.0, frames), "gl=off copies every frame");
    assert!(imports >= 1.0);
    assert!(bytes > 0.0 && bytes <= f64::from(FINAL.0 * FINAL.1 * 4));
    assert_picture("viewer screenshot", &shots[0], &expected);
    assert_picture(
        "weston screenshot",
        &weston_picture(&on_screen.unwrap()),
        &expected,
    );
}

#[test]
fn blobs_on_hugetlb_ram_are_shown_zero_copy_on_two_heads() {
    let Some(f) = fixture() else { return };
    let (output, shots, _) = run_viewer(
        &f.scratch,
        &f.hugetlb,
        "egl-hugetlb",
        &["--gl", "on", "--present", "gl", "--console", "all"],
        Some(6),
        Renderer::Pixman,
    );
    assert_eq!(shots.len(), 2, "one screenshot per head:\n{output}");
    for head in 0..2 {
        let expected = final_picture(head);
        assert_picture(
            &format!("viewer head {head}"),
            &shots[head as usize],
            &expected,
        );
    }
    let consoles = head_consoles(&output);
    assert_eq!(consoles.len(), 2, "counters of two heads:\n{output}");
    for console in consoles {
        let [frames, import, _, copy, _, _, bytes] = head_stats(&output, console);
        assert!(frames >= 6.0, "--frames 6 ended the run early");
        assert_eq!(
            (import, copy),
            (frames, 0.0),
            "console {console}: zero copy"
        );
        assert_eq!(bytes, 0.0);
    }
}

/// The console numbers the viewer printed counters for.
fn head_consoles(output: &str) -> Vec<u32> {
    output
        .lines()
        .filter(|l| l.contains(" frames in "))
        .filter_map(|l| {
            l.strip_prefix("viewer: console ")?
                .split(':')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn a_viewer_attached_at_boot_follows_flips_and_the_mode_change() {
    let Some(mut f) = fixture() else { return };
    let (live, weston) = f.live.take().expect("the live viewer is checked once");
    // A few idle flips after `done`, so that the last picture is the final one.
    std::thread::sleep(Duration::from_secs(5));
    let on_screen = weston.screenshot();
    let output = live.stop(Duration::from_secs(60));
    for (w, h) in [FIRST, FINAL] {
        assert!(
            output.contains(&format!(
                "(ScanoutDMABUF, udmabuf, {w}x{h} XRGB8888) imported"
            )),
            "no {w}x{h} blob import:\n{output}"
        );
    }
    let [frames, import, _, _, imports, hits, _] = head_stats(&output, 0);
    assert!(import >= 10.0, "{import} of {frames} frames zero copy");
    assert!(hits >= 1.0, "flips between two blobs imported again");
    // The guest's blobs (XRGB8888): fbcon's and fbtest's two at 1024x768, fbtest's two
    // at 800x600, each imported once however often it flips. QEMU's own GL textures
    // (XBGR8888: the boot placeholder, and one per mode change — seen 3 to 5 of them)
    // come on top.
    for ((w, h), most) in [(FIRST, 3), (FINAL, 2)] {
        let blobs = output
            .matches(&format!(
                "(ScanoutDMABUF, udmabuf, {w}x{h} XRGB8888) imported"
            ))
            .count();
        assert!(
            blobs <= most,
            "{blobs} imports of {w}x{h} blobs, at most {most} buffers:\n{output}"
        );
    }
    assert!(
        imports <= 12.0 && imports < frames / 4.0,
        "{imports} imports in {frames} frames:\n{output}"
    );
    let expected = final_picture(0);
    assert_picture(
        "viewer screenshot",
        &read_png_rgb(&f.scratch.join("live.png")),
        &expected,
    );
    // The window keeps the first mode's size: the final picture is scaled to fit.
    assert_eq!((on_screen.width, on_screen.height), FIRST);
}

#[test]
fn a_blob_is_handed_to_the_compositor_zero_copy_by_passthrough() {
    let Some(f) = fixture() else { return };
    let expected = final_picture(0);
    let (output, shots, on_screen) = run_viewer(
        &f.scratch,
        &f.memfd,
        "passthrough",
        &["--gl", "on", "--present", "passthrough"],
        None,
        Renderer::Gl,
    );
    assert!(
        output.contains("presenting with gl=on (linux-dmabuf passthrough)"),
        "not shown through passthrough:\n{output}"
    );
    // weston's GL renderer samples QEMU's udmabuf (the guest's RAM) itself.
    assert_picture(
        "weston screenshot",
        &weston_picture(&on_screen.unwrap()),
        &expected,
    );
    assert_picture("viewer screenshot", &shots[0], &expected);
    let [frames, import, _, copy, _, _, bytes] = head_stats(&output, 0);
    assert_eq!((import, copy), (frames, 0.0), "every frame zero copy");
    assert_eq!(bytes, 0.0, "no byte copied per frame");
}

/// Runs the viewer on vkms' plane (`--output kms`) for a few frames of `nested`'s
/// console 0 and returns its output and its screenshot: vkms' writeback of the CRTC,
/// cropped to the picture.
fn run_kms_viewer(scratch: &Path, nested: &Nested, name: &str, args: &[&str]) -> (String, Picture) {
    let shot = scratch.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&shot);
    let device = format!("kms:{VKMS_CARD}");
    let mut all = vec!["--output", &device, "--frames", "6", "--console", "0"];
    all.extend(["--screenshot", shot.to_str().unwrap()]);
    all.extend_from_slice(args);
    let viewer = Viewer::start_kms(nested, &scratch.join(format!("{name}.log")), &all);
    let output = viewer.finish(Duration::from_secs(300));
    assert!(
        output.contains("viewer: KMS Virtual-1 on /dev/dri/card1 (1024x768)"),
        "not on vkms' connector:\n{output}"
    );
    assert!(
        output.contains("QEMU dma-buf (ScanoutDMABUF, udmabuf, 800x600 XRGB8888)"),
        "the blob was not taken as a dma-buf:\n{output}"
    );
    (output, read_png_rgb(&shot))
}

#[test]
fn a_blob_on_4k_ram_is_scanned_out_on_a_kms_plane_zero_copy() {
    let Some(f) = fixture() else { return };
    let (output, shot) = run_kms_viewer(&f.scratch, &f.memfd, "kms-memfd", &["--qemu-ram", "4k"]);
    // The guest's own pages on the plane: QEMU's udmabuf of 4 KiB memfd RAM, long-term
    // pinned, in a format the primary plane takes. At attach QEMU may first send its
    // console's GL texture (XBGR8888, which vkms' plane lacks): that one is copied.
    let [frames, import, export, copy, _, _, bytes] = head_stats(&output, 0);
    assert!(frames >= 6.0, "{frames} frames");
    assert_eq!(export, 0.0);
    assert!(
        import >= frames - 1.0 && copy <= 1.0,
        "{import} of {frames} frames scanned out directly, {copy} copied:\n{output}"
    );
    assert!(
        copy == 0.0 || output.contains("(XBGR8888 800x600): copy path (FormatNotOnPlane)"),
        "a copied frame that was not QEMU's own texture:\n{output}"
    );
    // Bytes were copied for the copied frame only.
    assert!(
        bytes * frames <= copy * f64::from(FINAL.0 * FINAL.1 * 4),
        "{bytes} bytes copied per frame:\n{output}"
    );
    // vkms' writeback read the CRTC back: the 800x600 picture, centred 1:1 on the
    // 1024x768 mode (vkms' plane does not scale), is fbtest's final frame exactly.
    assert_picture("vkms writeback of the plane", &shot, &final_picture(0));
}

#[test]
fn a_blob_of_unknown_pages_avoids_the_vmap_quirk_on_kms() {
    let Some(f) = fixture() else { return };
    // QEMU's hugetlb RAM, not declared (`--qemu-ram auto`): on 6.12, whose udmabuf
    // vmap reads hugetlb folios wrong and vkms scans out through that vmap, the frame
    // is copied into a scanout buffer first, and the screen is right.
    let (output, shot) = run_kms_viewer(&f.scratch, &f.hugetlb, "kms-hugetlb", &[]);
    assert!(
        output.contains("copy path (PeerPagesUnknown)"),
        "an undeclared udmabuf was scanned out directly on a quirky kernel:\n{output}"
    );
    let [frames, import, _, copy, _, _, bytes] = head_stats(&output, 0);
    assert_eq!((import, copy), (0.0, frames), "every frame copied");
    assert_eq!(
        bytes,
        f64::from(FINAL.0 * FINAL.1 * 4),
        "one picture per frame"
    );
    assert_picture("vkms writeback of the plane", &shot, &final_picture(0));
}

#[test]
fn a_hidden_window_does_not_stall_the_guest() {
    let Some(f) = fixture() else { return };
    // Kiosk shows one of the two heads' windows; the other never gets a frame callback.
    // QEMU blocks the whole virtio-gpu device while any head's update is unanswered,
    // so without an answer for the hidden head the shown head would freeze too.
    let weston = Weston::start(WestonConfig::kiosk(FINAL.0, FINAL.1, Renderer::Pixman));
    let viewer = Viewer::start(
        &weston,
        &f.hugetlb,
        &f.scratch.join("hidden.log"),
        &["--gl", "on", "--present", "gl", "--console", "all"],
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    while !viewer.output().contains("(window hidden?)") {
        assert!(
            Instant::now() < deadline,
            "no head was found hidden in 180 s:\n{}",
            viewer.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // fbtest keeps flipping both heads every 300 ms.
    std::thread::sleep(Duration::from_secs(20));
    let output = viewer.stop(Duration::from_secs(60));
    let frames: Vec<f64> = head_consoles(&output)
        .into_iter()
        .map(|console| head_stats(&output, console)[0])
        .collect();
    assert_eq!(frames.len(), 2, "counters of two heads:\n{output}");
    assert!(
        frames.iter().any(|&n| n >= 10.0),
        "the shown head stalled behind the hidden one ({frames:?} frames):\n{output}"
    );
}
