//! A real QEMU (TCG, `-vga std`, `-display dbus`, SeaBIOS screen, no disk) on a private
//! dbus-daemon, driven over QMP. A missing QEMU or dbus-daemon is a failure, never a skip.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guestfb::source::qemu::{QemuAddress, QemuDisplay};
use serde_json::{json, Value};

/// A private session bus.
pub struct Bus {
    /// The dbus-daemon process.
    pub child: Child,
    /// The bus address (`unix:path=…`).
    pub address: String,
}

impl Bus {
    pub fn start() -> Self {
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbus-daemon must start (apt install dbus-daemon; scripts/setup-host.sh)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_owned();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed {address:?}"
        );
        Self { child, address }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A QMP connection (capabilities negotiated).
pub struct Qmp {
    stream: BufReader<UnixStream>,
    /// Where screendumps are written.
    dir: PathBuf,
}

impl Qmp {
    /// Connects to QEMU's QMP socket at `path`, waiting up to `timeout` for it; `child`
    /// is checked so that a QEMU that died fails at once.
    pub fn connect(
        path: &Path,
        dir: &Path,
        mut child: Option<&mut Child>,
        timeout: Duration,
    ) -> Self {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            if let Ok(stream) = UnixStream::connect(path) {
                break stream;
            }
            if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
                panic!("QEMU exited with {status} before its QMP socket appeared");
            }
            assert!(
                Instant::now() < deadline,
                "QEMU's QMP socket {} never appeared",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut qmp = Self {
            stream: BufReader::new(stream),
            dir: dir.to_owned(),
        };
        qmp.read_reply(); // greeting
        qmp.qmp("qmp_capabilities", json!({}));
        qmp
    }

    pub fn read_reply(&mut self) -> Value {
        loop {
            let mut line = String::new();
            let n = self.stream.read_line(&mut line).unwrap();
            assert!(n > 0, "QMP connection closed");
            let value: Value = serde_json::from_str(&line).unwrap();
            if value.get("event").is_none() {
                return value;
            }
        }
    }

    pub fn qmp(&mut self, command: &str, arguments: Value) -> Value {
        let request = json!({"execute": command, "arguments": arguments});
        let stream = self.stream.get_mut();
        writeln!(stream, "{request}").unwrap();
        let reply = self.read_reply();
        assert!(reply.get("error").is_none(), "QMP {command}: {reply}");
        reply["return"].clone()
    }

    /// QEMU's own picture of the first console: (width, height, RGB bytes).
    pub fn screendump(&mut self) -> (u32, u32, Vec<u8>) {
        self.screendump_of(json!({}))
    }

    fn screendump_of(&mut self, mut arguments: Value) -> (u32, u32, Vec<u8>) {
        let path = self.dir.join("screendump.png");
        let _ = std::fs::remove_file(&path);
        arguments["filename"] = json!(path.to_str().unwrap());
        arguments["format"] = json!("png");
        self.qmp("screendump", arguments);
        let (width, height, rgb) = read_png_rgb(&path);
        (width, height, rgb)
    }
}

/// A PNG file as (width, height, RGB bytes).
pub fn read_png_rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = png::Decoder::new(file);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    let channels = info.color_type.samples();
    let rgb = buf
        .chunks_exact(channels)
        .flat_map(|px| [px[0], px[1], px[2]])
        .collect();
    (info.width, info.height, rgb)
}

/// A QEMU on `bus` with its QMP socket.
pub struct Qemu {
    /// The QEMU process.
    pub child: Child,
    qmp: Qmp,
}

impl Qemu {
    pub fn start(bus: &Bus, dir: &Path, extra: &[&str]) -> Self {
        let qmp_path = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&qmp_path);
        let mut child = Command::new("qemu-system-x86_64")
            .args([
                "-machine",
                "pc,accel=tcg",
                "-m",
                "64",
                "-nodefaults",
                "-no-user-config",
            ])
            .args(["-vga", "std", "-display", "dbus"])
            .args(["-boot", "menu=on,splash-time=20000"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .args(extra)
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 must start (scripts/setup-host.sh installs it)");
        let qmp = Qmp::connect(&qmp_path, dir, Some(&mut child), Duration::from_secs(20));
        Self { child, qmp }
    }

    pub fn qmp(&mut self, command: &str, arguments: Value) -> Value {
        self.qmp.qmp(command, arguments)
    }

    /// QEMU's own picture of the console: (width, height, RGB bytes).
    pub fn screendump(&mut self) -> (u32, u32, Vec<u8>) {
        self.qmp.screendump()
    }

    /// The characters of the VGA text screen (guest memory at 0xb8000).
    pub fn text_screen(&mut self) -> String {
        let path = self.qmp.dir.join("text.bin");
        self.qmp(
            "pmemsave",
            json!({"val": 0xb8000, "size": 4000, "filename": path.to_str().unwrap()}),
        );
        let bytes = std::fs::read(&path).unwrap();
        bytes.iter().step_by(2).map(|&b| b as char).collect()
    }

    pub fn wait_for_text(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.text_screen().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the guest never showed {text:?}; screen: {:?}",
                self.text_screen().trim()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for_display(bus: &Bus) -> QemuDisplay {
    wait_for_display_at(&bus.address, Duration::from_secs(20))
}

/// Waits until QEMU's display objects are on the bus at `address`.
pub fn wait_for_display_at(address: &str, timeout: Duration) -> QemuDisplay {
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = QemuDisplay::connect(QemuAddress::Bus(address.to_owned()))
            .and_then(|d| d.console_ids().map(|ids| (d, ids)));
        match attempt {
            Ok((display, ids)) if !ids.is_empty() => return display,
            Ok(_) => {}
            Err(error) => assert!(
                Instant::now() < deadline,
                "QEMU's display never appeared on the bus: {error}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const FAKE_GUID: &str = "0123456789abcdef0123456789abcdef";

fn read_line(stream: &mut UnixStream) -> String {
    use std::io::Read;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).unwrap();
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

/// Plays QEMU's part on a listener socket: authenticates the listener (SASL EXTERNAL,
/// unix fds) and returns a connection that calls the listener's methods.
pub fn fake_qemu(mut stream: UnixStream) -> zbus::blocking::Connection {
    let auth = read_line(&mut stream);
    assert!(auth.starts_with("\0AUTH EXTERNAL"), "{auth:?}");
    write!(stream, "OK {FAKE_GUID}\r\n").unwrap();
    loop {
        let line = read_line(&mut stream);
        match line.trim_end() {
            "NEGOTIATE_UNIX_FD" => write!(stream, "AGREE_UNIX_FD\r\n").unwrap(),
            "BEGIN" => break,
            other => panic!("unexpected auth line {other:?}"),
        }
    }
    let socket = async_io::Async::new(stream).unwrap();
    zbus::blocking::connection::Builder::authenticated_socket(socket, FAKE_GUID)
        .unwrap()
        .p2p()
        .build()
        .unwrap()
}
