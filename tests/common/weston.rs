//! A private weston per test: start, screenshot, stop (the whole process group).
//!
//! Headless by default; with [`WestonConfig::seat`] weston runs on its X11 backend
//! inside a private Xvfb, which gives it a seat (keyboard, pointer) that `xdotool`
//! drives — the headless backend has no input devices.
//!
//! Everything here panics with the reason and weston's log on failure: a test that cannot
//! start its compositor fails loudly, it never passes by doing nothing.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Which weston renderer draws the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renderer {
    /// CPU renderer.
    Pixman,
    /// GLES renderer (llvmpipe on a machine without a GPU).
    Gl,
}

impl Renderer {
    fn name(self) -> &'static str {
        match self {
            Self::Pixman => "pixman",
            Self::Gl => "gl",
        }
    }
}

/// How to start weston.
#[derive(Debug, Clone, Copy)]
pub struct WestonConfig {
    /// Output width in logical pixels (the mode is `width * scale` device pixels).
    pub width: u32,
    /// Output height in logical pixels.
    pub height: u32,
    /// Renderer.
    pub renderer: Renderer,
    /// `--shell=kiosk` (windows fill the output) instead of the desktop shell.
    pub kiosk: bool,
    /// Output scale.
    pub scale: u32,
    /// Run on the X11 backend in a private Xvfb, for a real seat (see the module docs).
    pub seat: bool,
}

impl WestonConfig {
    /// A kiosk-shell output of the given size at scale 1.
    pub fn kiosk(width: u32, height: u32, renderer: Renderer) -> Self {
        Self {
            width,
            height,
            renderer,
            kiosk: true,
            scale: 1,
            seat: false,
        }
    }

    /// The same, with a seat xdotool can type and point on.
    pub fn with_seat(self) -> Self {
        Self { seat: true, ..self }
    }
}

/// A decoded screenshot, 8-bit RGB.
#[derive(Debug)]
pub struct Screenshot {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` pixels, R G B.
    pub rgb: Vec<u8>,
}

impl Screenshot {
    /// The pixel at (x, y) as `0xRRGGBB`.
    pub fn pixel(&self, x: u32, y: u32) -> u32 {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        u32::from(self.rgb[i]) << 16 | u32::from(self.rgb[i + 1]) << 8 | u32::from(self.rgb[i + 2])
    }
}

/// A running headless weston; killed with its process group on drop.
#[derive(Debug)]
pub struct Weston {
    child: Option<Child>,
    runtime_dir: PathBuf,
    socket: String,
    shots: AtomicUsize,
    /// The private X server of a weston with a seat, and its display name.
    xvfb: Option<(Child, String)>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Weston {
    /// Starts weston and waits for its socket. Panics (with weston's log) on failure.
    pub fn start(config: WestonConfig) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let socket = format!("guestfb-test-{}-{n}", std::process::id());
        let runtime_dir = std::env::temp_dir().join(format!("{socket}-runtime"));
        let _ = fs::remove_dir_all(&runtime_dir);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&runtime_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", runtime_dir.display()));
        let log = runtime_dir.join("weston.log");
        let log_file = fs::File::create(&log).expect("create weston log");
        let xvfb = config.seat.then(|| start_xvfb(n));
        let mut command = Command::new("weston");
        match &xvfb {
            Some((_, display)) => command
                .arg("--backend=x11-backend.so")
                .env("DISPLAY", display),
            None => command.arg("--backend=headless").env_remove("DISPLAY"),
        };
        command
            .arg(format!("--socket={socket}"))
            .arg(format!("--width={}", config.width))
            .arg(format!("--height={}", config.height))
            .arg(format!("--scale={}", config.scale))
            .arg(format!("--renderer={}", config.renderer.name()))
            .args(["--debug", "--idle-time=0", "--no-config"])
            .env("XDG_RUNTIME_DIR", &runtime_dir)
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("WAYLAND_SOCKET")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log fd"))
            .stderr(log_file)
            // Its own process group, so stopping it ends the shell's helpers too.
            .process_group(0);
        if config.kiosk {
            command.arg("--shell=kiosk");
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start weston (needs weston 14 on PATH, see scripts/setup-host.sh): {e}")
        });
        let mut weston = Self {
            child: Some(child),
            runtime_dir,
            socket,
            shots: AtomicUsize::new(0),
            xvfb,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // The socket file appears at bind(), before listen(): wait until it accepts.
        while std::os::unix::net::UnixStream::connect(weston.socket_path()).is_err() {
            if let Some(status) = weston
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "weston exited ({status}) before creating its socket; log:\n{}",
                    weston.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "weston did not accept connections in 30 s; log:\n{}",
                    weston.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        weston
    }

    /// The compositor's socket.
    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join(&self.socket)
    }

    /// weston's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.runtime_dir.join("weston.log")).unwrap_or_default()
    }

    /// Captures the output with weston-screenshooter (in a fresh folder, since file names
    /// have one-second resolution) and decodes it. Panics if no PNG appears: the tool
    /// exits 0 even when weston refuses it.
    pub fn screenshot(&self) -> Screenshot {
        let n = self.shots.fetch_add(1, Ordering::Relaxed);
        let dir = self.runtime_dir.join(format!("shot-{n}"));
        fs::create_dir_all(&dir).expect("create screenshot folder");
        let output = Command::new("weston-screenshooter")
            .current_dir(&dir)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            .env("WAYLAND_DISPLAY", &self.socket)
            .output()
            .unwrap_or_else(|e| panic!("cannot run weston-screenshooter: {e}"));
        let png = fs::read_dir(&dir)
            .expect("read screenshot folder")
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|ext| ext == "png"))
            .unwrap_or_else(|| {
                panic!(
                    "weston-screenshooter wrote no PNG ({}; stdout {:?}, stderr {:?}); weston log:\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr),
                    self.log()
                )
            });
        decode_png(&png)
    }

    /// Stops weston now (as if it crashed), keeping the log.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("weston had already exited: {status}");
            }
            let pgid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        let _ = rustix::process::kill_process_group(
                            pgid,
                            rustix::process::Signal::KILL,
                        );
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            // Helpers that outlived weston itself.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for Weston {
    fn drop(&mut self) {
        self.kill();
        if let Some((mut xvfb, _)) = self.xvfb.take() {
            let _ = xvfb.kill();
            let _ = xvfb.wait();
        }
        if std::env::var_os("GUESTFB_KEEP_WESTON_DIR").is_none() {
            let _ = fs::remove_dir_all(&self.runtime_dir);
        }
    }
}

/// Decodes an 8-bit RGB or RGBA PNG into RGB.
pub fn decode_png(path: &Path) -> Screenshot {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut reader = png::Decoder::new(file)
        .read_info()
        .unwrap_or_else(|e| panic!("decode {}: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("decode PNG frame");
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "screenshot bit depth");
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected screenshot colour type {other:?}"),
    };
    let mut rgb = Vec::with_capacity(info.width as usize * info.height as usize * 3);
    for row in buf[..info.line_size * info.height as usize].chunks(info.line_size) {
        for px in row[..info.width as usize * channels].chunks(channels) {
            rgb.extend_from_slice(&px[..3]);
        }
    }
    Screenshot {
        width: info.width,
        height: info.height,
        rgb,
    }
}

/// Starts a private Xvfb for a weston with a seat; returns it and its display name.
fn start_xvfb(n: usize) -> (Child, String) {
    let number = 100 + (std::process::id() as usize % 400) * 8 + n % 8;
    let display = format!(":{number}");
    let child = Command::new("Xvfb")
        .args([
            display.as_str(),
            "-screen",
            "0",
            "1280x1024x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start Xvfb (scripts/setup-host.sh installs xvfb): {e}"));
    let socket = PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "Xvfb {display} did not start in 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, display)
}

impl Weston {
    /// Runs one xdotool command on this weston's X server (a weston with a seat only).
    /// With no X window manager the X focus follows the pointer: move it over the
    /// output before typing.
    pub fn xdotool(&self, args: &[&str]) {
        let (_, display) = self
            .xvfb
            .as_ref()
            .expect("xdotool needs a weston started with a seat (WestonConfig::with_seat)");
        let status = Command::new("xdotool")
            .args(args)
            .env("DISPLAY", display)
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run xdotool (scripts/setup-host.sh installs it): {e}")
            });
        assert!(status.success(), "xdotool {args:?}: {status}");
    }
}
