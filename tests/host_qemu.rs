//! Host tier: the QEMU D-Bus display source against a real QEMU (TCG, `-display dbus`,
//! `-vga std`, SeaBIOS screen) on a private dbus-daemon, and against a fake QEMU that
//! calls the listener the way QEMU does (back-pressure, hostile messages).
//!
//! Every test starts its own dbus-daemon and QEMU and kills both on drop. A missing
//! QEMU, ui-dbus module or dbus-daemon is a failure, never a skip
//! (`scripts/setup-host.sh` installs them).
#![cfg(feature = "qemu")]

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use guestfb::rect::Rect;
use guestfb::source::qemu::{
    ConsoleKind, ListenerOptions, QemuConsole, QemuDisplay, QemuEvent, QemuListener, Recv,
    SharedFrame, UiInfo,
};
use guestfb::source::qemu::{DMABUF2_IFACE, LISTENER_IFACE, LISTENER_PATH, MAP_IFACE};
use guestfb::sys::memfd::Memfd;
use serde_json::json;

mod common;

use common::qemu::{wait_for_display, Bus, Qemu};

/// QEMU under TCG is heavy on this 2-core machine, and fd counts must not see other
/// tests' fds: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("host_qemu-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// What the pump thread saw.
#[derive(Default)]
struct PumpState {
    frame: Option<SharedFrame>,
    scanouts: usize,
    map_scanouts: usize,
    updates: usize,
    disconnected: Option<String>,
    closed: bool,
    last_event: Option<Instant>,
}

/// Reads listener events on its own thread, completing every token at once and keeping
/// the latest frame, like a viewer that presents instantly. (A test thread blocked in a
/// QMP call must not hold a token: QEMU's `ScanoutMap` is a synchronous call, so QEMU
/// would wait for the listener, which waits for the ack.)
struct Pump {
    state: Arc<Mutex<PumpState>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Pump {
    fn new(listener: QemuListener) -> Self {
        let state = Arc::new(Mutex::new(PumpState::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let event = match listener.recv_timeout(Duration::from_millis(50)) {
                        Recv::Event(event) => event,
                        Recv::Timeout => continue,
                        Recv::Closed => {
                            state.lock().unwrap().closed = true;
                            break;
                        }
                    };
                    let mut s = state.lock().unwrap();
                    s.last_event = Some(Instant::now());
                    match event {
                        QemuEvent::Scanout { frame } => {
                            s.scanouts += 1;
                            s.frame = Some(frame);
                        }
                        QemuEvent::ScanoutMap { frame } => {
                            s.map_scanouts += 1;
                            s.frame = Some(frame);
                        }
                        QemuEvent::Update { ack, .. } | QemuEvent::UpdateMap { ack, .. } => {
                            s.updates += 1;
                            ack.complete();
                        }
                        QemuEvent::Disconnected { reason } => s.disconnected = Some(reason),
                        QemuEvent::Rejected { method, error } => {
                            panic!("listener rejected {method}: {error}")
                        }
                        _ => {}
                    }
                }
            })
        };
        Self {
            state,
            stop,
            thread: Some(thread),
        }
    }

    fn state(&self) -> MutexGuard<'_, PumpState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `idle` passes without an event, or a second at most: QEMU's VGA text
    /// refresh sends an update every ~30 ms while the cursor blinks.
    fn pump(&mut self, idle: Duration) {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let since = self.state().last_event.map(|t| t.elapsed());
            match since {
                Some(since) if since < idle && Instant::now() < deadline => {
                    std::thread::sleep((idle - since).min(Duration::from_millis(20)))
                }
                _ => return,
            }
        }
    }

    fn rgb(&self) -> (u32, u32, Vec<u8>) {
        let frame = self
            .state()
            .frame
            .clone()
            .expect("no scanout from QEMU yet");
        let frame = frame.lock();
        (frame.width(), frame.height(), frame.to_rgb())
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn attach(display: &QemuDisplay, map: bool) -> (QemuConsole, Pump) {
    let console = display.console(0).unwrap();
    let options = ListenerOptions {
        map,
        dmabuf2: false,
    };
    let listener = console.attach(options).unwrap();
    (console, Pump::new(listener))
}

/// Compares the listener's frame with QEMU's screendump until they agree (the text
/// cursor blinks, so one pair may straddle a change). Returns the agreed picture.
fn assert_matches_screendump(qemu: &mut Qemu, pump: &mut Pump) -> Vec<u8> {
    let mut last = String::new();
    for _ in 0..15 {
        let (w, h, dump) = qemu.screendump();
        pump.pump(Duration::from_millis(150));
        let (fw, fh, ours) = pump.rgb();
        if (fw, fh) == (w, h) && ours == dump {
            return ours;
        }
        let differing = if (fw, fh) == (w, h) {
            ours.chunks(3)
                .zip(dump.chunks(3))
                .filter(|(a, b)| a != b)
                .count()
        } else {
            usize::MAX
        };
        last = format!("ours {fw}x{fh}, screendump {w}x{h}, {differing} pixels differ");
    }
    panic!("listener frame never matched QEMU's screendump: {last}");
}

fn pixels_match_screendump(map: bool) {
    let _serial = serial();
    let started = Instant::now();
    let dir = scratch(if map { "map" } else { "data" });
    let bus = Bus::start();
    let mut qemu = Qemu::start(&bus, &dir, &[]);
    let display = wait_for_display(&bus);
    let (_console, mut pump) = attach(&display, map);
    qemu.wait_for_text("Press ESC for boot menu", Duration::from_secs(30));
    let picture = assert_matches_screendump(&mut qemu, &mut pump);
    assert!(
        picture.iter().any(|&b| b != 0),
        "the firmware screen is all black"
    );
    let s = pump.state();
    let shared = s.frame.as_ref().unwrap().lock().is_shared_memory();
    if map {
        assert!(
            s.map_scanouts > 0 && s.scanouts == 0,
            "expected ScanoutMap only"
        );
        assert!(shared);
    } else {
        assert!(
            s.scanouts > 0 && s.map_scanouts == 0,
            "expected Scanout only"
        );
        assert!(!shared);
    }
    eprintln!(
        "map={map}: matched after {:?} ({} scanouts, {} map scanouts, {} updates)",
        started.elapsed(),
        s.scanouts,
        s.map_scanouts,
        s.updates
    );
}

#[test]
fn pixel_data_path_matches_screendump() {
    pixels_match_screendump(false);
}

#[test]
fn shared_memory_path_matches_screendump() {
    pixels_match_screendump(true);
}

#[test]
fn esc_key_opens_the_seabios_boot_menu() {
    let _serial = serial();
    let dir = scratch("esc");
    let bus = Bus::start();
    let mut qemu = Qemu::start(&bus, &dir, &[]);
    let display = wait_for_display(&bus);
    let (console, mut pump) = attach(&display, true);
    qemu.wait_for_text("Press ESC for boot menu", Duration::from_secs(30));
    let before = assert_matches_screendump(&mut qemu, &mut pump);
    const KEY_ESC: u32 = 1;
    console.key_press(KEY_ESC).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    console.key_release(KEY_ESC).unwrap();
    qemu.wait_for_text("Select boot device", Duration::from_secs(20));
    let after = assert_matches_screendump(&mut qemu, &mut pump);
    assert_ne!(before, after, "the screen did not change after ESC");
}

const UI_INFO: UiInfo = UiInfo {
    width_mm: 300,
    height_mm: 200,
    xoff: 0,
    yoff: 0,
    width: 1024,
    height: 768,
};

#[test]
fn multi_head_consoles_and_ui_info() {
    let _serial = serial();
    let dir = scratch("heads");
    // Two VGA cards: two heads; std VGA cannot follow a window size, and says so.
    {
        let bus = Bus::start();
        let _qemu = Qemu::start(&bus, &dir, &["-device", "secondary-vga"]);
        let display = wait_for_display(&bus);
        let heads = display.graphic_consoles().unwrap();
        assert_eq!(heads.len(), 2, "consoles: {heads:?}");
        for head in &heads {
            assert_eq!(head.kind, ConsoleKind::Graphic);
            assert!(head.width > 0 && head.height > 0, "{head:?}");
            assert!(head
                .interfaces
                .iter()
                .any(|i| i == "org.qemu.Display1.Keyboard"));
            let refused = display.console(head.id).unwrap().set_ui_info(UI_INFO);
            let text = refused.expect_err("std VGA has no UI info").to_string();
            assert!(text.contains("SetUIInfo"), "{text}");
        }
        assert_ne!(heads[0].device_address, heads[1].device_address);
        assert!(display.console(99).is_err());
    }
    // virtio-gpu with two outputs: two heads of one device, both take the window size.
    let bus = Bus::start();
    let _qemu = Qemu::start(
        &bus,
        &dir,
        &["-vga", "none", "-device", "virtio-vga,max_outputs=2"],
    );
    let display = wait_for_display(&bus);
    let heads = display.graphic_consoles().unwrap();
    assert_eq!(heads.len(), 2, "consoles: {heads:?}");
    assert_eq!(heads[0].device_address, heads[1].device_address);
    assert_eq!((heads[0].head, heads[1].head), (0, 1));
    for head in &heads {
        display
            .console(head.id)
            .unwrap()
            .set_ui_info(UI_INFO)
            .unwrap();
    }
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn wait_fd_count(expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while fd_count() > expected {
        if Instant::now() > deadline {
            let fds: Vec<_> = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
                .collect();
            panic!(
                "fds leaked: {} open, {expected} at start: {fds:?}",
                fd_count()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killed_qemu_disconnects_cleanly_and_a_restart_attaches_again() {
    let _serial = serial();
    let dir = scratch("kill");
    let bus = Bus::start();
    {
        // Warm up process-wide state (zbus's reactor thread and its fds).
        let mut qemu = Qemu::start(&bus, &dir, &[]);
        let display = wait_for_display(&bus);
        drop(display);
        qemu.qmp("quit", json!({}));
    }
    let start = fd_count();
    let qemu = Qemu::start(&bus, &dir, &[]);
    let display = wait_for_display(&bus);
    let (_console, pump) = attach(&display, true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while pump.state().frame.is_none() {
        assert!(Instant::now() < deadline, "no scanout from QEMU");
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed = Instant::now();
    drop(qemu);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pump.state().disconnected.is_none() {
        assert!(
            Instant::now() < deadline,
            "no Disconnected event after QEMU was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "Disconnected after {:?}: {}",
        killed.elapsed(),
        pump.state().disconnected.clone().unwrap()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        pump.state().closed,
        "the listener did not close after Disconnected"
    );
    drop(pump);
    drop(_console);
    drop(display);
    wait_fd_count(start);

    let mut qemu = Qemu::start(&bus, &dir, &[]);
    let display = wait_for_display(&bus);
    let (_console, mut pump) = attach(&display, false);
    qemu.wait_for_text("Press ESC for boot menu", Duration::from_secs(30));
    assert_matches_screendump(&mut qemu, &mut pump);
}

// --- a fake QEMU: the D-Bus auth server side of the listener socket -----------------

use common::qemu::fake_qemu;

fn fake_pair(options: ListenerOptions) -> (QemuListener, zbus::blocking::Connection) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let listener = QemuListener::serve(ours, options).unwrap();
    (listener, fake_qemu(theirs))
}

fn call<B>(
    conn: &zbus::blocking::Connection,
    iface: &str,
    method: &str,
    body: &B,
) -> zbus::Result<()>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.call_method(None::<&str>, LISTENER_PATH, Some(iface), method, body)
        .map(|_| ())
}

fn next(listener: &QemuListener) -> QemuEvent {
    match listener.recv_timeout(Duration::from_secs(5)) {
        Recv::Event(event) => event,
        other => panic!("expected an event, got {other:?}"),
    }
}

#[test]
fn interfaces_property_lists_exactly_what_is_served() {
    let _serial = serial();
    for options in [
        ListenerOptions::default(),
        ListenerOptions {
            map: false,
            dmabuf2: false,
        },
    ] {
        let (_listener, conn) = fake_pair(options);
        let reply = conn
            .call_method(
                None::<&str>,
                LISTENER_PATH,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(LISTENER_IFACE, "Interfaces"),
            )
            .unwrap();
        let value: zbus::zvariant::OwnedValue = reply.body().deserialize().unwrap();
        let list = Vec::<String>::try_from(value).unwrap();
        assert_eq!(list, options.interfaces());
        let map_call = call(&conn, MAP_IFACE, "UpdateMap", &(0i32, 0i32, 1i32, 1i32));
        if options.map {
            // Served, but refused: no ScanoutMap yet.
            assert!(map_call.is_err());
            assert!(matches!(next(&_listener), QemuEvent::Rejected { .. }));
        } else {
            let error = map_call.unwrap_err().to_string();
            assert!(error.contains("UnknownMethod"), "{error}");
        }
    }
}

#[test]
fn update_replies_wait_for_the_frame_to_be_presented() {
    let _serial = serial();
    let (listener, conn) = fake_pair(ListenerOptions::default());
    // The gating is the same for UpdateMap and UpdateDMABUF; a memfd surface stands
    // in here (the host has no udmabuf to make a real dma-buf; the guest tier's nested
    // QEMU drives the UpdateDMABUF path).
    let memfd = Memfd::create("fake-surface").unwrap();
    memfd.set_size(64 * 64 * 4).unwrap();
    let fd = zbus::zvariant::Fd::from(memfd.as_fd());
    let x8r8g8b8 = 0x2002_0888u32;
    call(
        &conn,
        MAP_IFACE,
        "ScanoutMap",
        &(fd, 0u32, 64u32, 64u32, 256u32, x8r8g8b8),
    )
    .unwrap();
    match next(&listener) {
        QemuEvent::ScanoutMap { frame } => {
            let frame = frame.lock();
            assert_eq!(
                (frame.width(), frame.height(), frame.stride()),
                (64, 64, 256)
            );
        }
        other => panic!("expected ScanoutMap, got {other:?}"),
    }

    // A burst of five updates, each a blocking call on its own thread (QEMU sends them
    // asynchronously).
    const BURST: usize = 5;
    let replied = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..BURST)
        .map(|i| {
            let conn = conn.clone();
            let replied = replied.clone();
            std::thread::spawn(move || {
                call(&conn, MAP_IFACE, "UpdateMap", &(i as i32, 0i32, 1i32, 1i32)).unwrap();
                replied.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for presented in 0..BURST {
        let event = next(&listener);
        let QemuEvent::UpdateMap { ack, .. } = event else {
            panic!("expected UpdateMap, got {event:?}");
        };
        // Not presented yet: no reply, and no second frame in flight.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            replied.load(Ordering::SeqCst),
            presented,
            "replied before the ack"
        );
        assert!(listener.try_recv().is_none(), "two frames in flight");
        if presented == BURST - 1 {
            drop(ack); // dropping completes too
        } else {
            ack.complete();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while replied.load(Ordering::SeqCst) < presented + 1 {
            assert!(Instant::now() < deadline, "no reply after the ack");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for caller in callers {
        caller.join().unwrap();
    }
}

#[test]
fn hostile_messages_are_refused_without_harm() {
    let _serial = serial();
    let (listener, conn) = fake_pair(ListenerOptions::default());
    let x8r8g8b8 = 0x2002_0888u32;
    // Scanout data shorter than stride × height.
    let short = vec![0u8; 100];
    assert!(call(
        &conn,
        LISTENER_IFACE,
        "Scanout",
        &(64u32, 64u32, 256u32, x8r8g8b8, short)
    )
    .is_err());
    assert!(matches!(next(&listener), QemuEvent::Rejected { .. }));
    // Stride smaller than a row.
    let data = vec![0u8; 64 * 64 * 4];
    assert!(call(
        &conn,
        LISTENER_IFACE,
        "Scanout",
        &(64u32, 64u32, 4u32, x8r8g8b8, &data)
    )
    .is_err());
    assert!(matches!(next(&listener), QemuEvent::Rejected { .. }));
    // Unknown pixman format.
    assert!(call(
        &conn,
        LISTENER_IFACE,
        "Scanout",
        &(64u32, 64u32, 256u32, 0x1234u32, &data)
    )
    .is_err());
    assert!(matches!(next(&listener), QemuEvent::Rejected { .. }));
    // A good scanout, then an update outside it and one with short data.
    let mut picture = data.clone();
    picture[0..4].copy_from_slice(&[1, 2, 3, 0]);
    call(
        &conn,
        LISTENER_IFACE,
        "Scanout",
        &(64u32, 64u32, 256u32, x8r8g8b8, &picture),
    )
    .unwrap();
    let QemuEvent::Scanout { frame } = next(&listener) else {
        panic!("expected Scanout")
    };
    let update = (60i32, 60i32, 8i32, 8i32, 32u32, x8r8g8b8, vec![0u8; 256]);
    assert!(call(&conn, LISTENER_IFACE, "Update", &update).is_err());
    assert!(matches!(next(&listener), QemuEvent::Rejected { .. }));
    let update = (0i32, 0i32, 8i32, 8i32, 32u32, x8r8g8b8, vec![9u8; 255]);
    assert!(call(&conn, LISTENER_IFACE, "Update", &update).is_err());
    assert!(matches!(next(&listener), QemuEvent::Rejected { .. }));
    // A good update lands in the frame.
    let update = (1i32, 0i32, 1i32, 1i32, 4u32, x8r8g8b8, vec![7u8, 8, 9, 0]);
    let caller = {
        let conn = conn.clone();
        std::thread::spawn(move || call(&conn, LISTENER_IFACE, "Update", &update))
    };
    let QemuEvent::Update { rect, ack, .. } = next(&listener) else {
        panic!("expected Update")
    };
    assert_eq!((rect.x, rect.y, rect.width, rect.height), (1, 0, 1, 1));
    assert_eq!(
        frame.lock().bytes().to_vec()[0..8],
        [1, 2, 3, 0, 7, 8, 9, 0]
    );
    ack.complete();
    caller.join().unwrap().unwrap();

    // ScanoutMap past the end of the memfd.
    let memfd = Memfd::create("fake-surface").unwrap();
    memfd.set_size(64 * 64 * 4).unwrap();
    let fd = || zbus::zvariant::Fd::from(memfd.as_fd());
    let past = (fd(), 4096u32, 64u32, 64u32, 256u32, x8r8g8b8);
    assert!(call(&conn, MAP_IFACE, "ScanoutMap", &past).is_err());
    let QemuEvent::Rejected { error, .. } = next(&listener) else {
        panic!("expected Rejected")
    };
    assert!(error.to_string().contains("exceeds"), "{error}");
    let good = (fd(), 0u32, 64u32, 64u32, 256u32, x8r8g8b8);
    call(&conn, MAP_IFACE, "ScanoutMap", &good).unwrap();
    let QemuEvent::ScanoutMap { frame } = next(&listener) else {
        panic!("expected ScanoutMap")
    };
    assert!(frame.lock().is_shared_memory());

    // Multi-plane dma-buf with inconsistent lists, and a visible rect outside.
    let planes = |x: u32, w: u32, n: u32, fourcc: &[u8; 4]| {
        (
            vec![fd()],
            x,
            0u32,
            w,
            64u32,
            vec![0u32, 0],
            vec![256u32],
            n,
            u32::from_le_bytes(*fourcc),
            64u32,
            64u32,
            u64::MAX,
            false,
        )
    };
    let inconsistent = planes(0, 64, 2, b"NV12");
    assert!(call(&conn, DMABUF2_IFACE, "ScanoutDMABUF2", &inconsistent).is_err());
    assert!(matches!(next(&listener), QemuEvent::Rejected { .. }));
    let outside = planes(10, 64, 1, b"XR24");
    assert!(call(&conn, DMABUF2_IFACE, "ScanoutDMABUF2", &outside).is_err());
    assert!(matches!(next(&listener), QemuEvent::Rejected { .. }));
    // A fourcc guestfb does not show: refused by value, before the fd is looked at.
    assert!(call(
        &conn,
        DMABUF2_IFACE,
        "ScanoutDMABUF2",
        &planes(0, 32, 1, b"AB30")
    )
    .is_err());
    let QemuEvent::Rejected { error, .. } = next(&listener) else {
        panic!("expected Rejected")
    };
    assert!(
        error
            .to_string()
            .contains("unsupported DRM fourcc 0x30334241 (AB30)"),
        "{error}"
    );
    // A well-formed scanout whose fd is a memfd, not a dma-buf: refused by kind (the
    // host has no udmabuf; the guest tier's nested QEMU sends real ones).
    assert!(call(
        &conn,
        DMABUF2_IFACE,
        "ScanoutDMABUF2",
        &planes(0, 32, 1, b"XR24")
    )
    .is_err());
    let QemuEvent::Rejected { error, .. } = next(&listener) else {
        panic!("expected Rejected")
    };
    assert!(error.to_string().contains("sent a memfd"), "{error}");
    // What QEMU 10.0.2 sends in ScanoutMap for a virtio-gpu blob with gl=off: fd 0,
    // its stdin (/dev/null here). Refused by kind, not mapped.
    let null = std::fs::File::open("/dev/null").unwrap();
    let stdin_like = (
        zbus::zvariant::Fd::from(null.as_fd()),
        0u32,
        64u32,
        64u32,
        256u32,
        x8r8g8b8,
    );
    assert!(call(&conn, MAP_IFACE, "ScanoutMap", &stdin_like).is_err());
    let QemuEvent::Rejected { error, .. } = next(&listener) else {
        panic!("expected Rejected")
    };
    assert!(
        error.to_string().contains("sent a character device"),
        "{error}"
    );

    // Cursor with too little data; then a good one and MouseSet.
    assert!(call(
        &conn,
        LISTENER_IFACE,
        "CursorDefine",
        &(4i32, 4i32, 0i32, 0i32, vec![0u8; 8])
    )
    .is_err());
    assert!(matches!(next(&listener), QemuEvent::Rejected { .. }));
    call(
        &conn,
        LISTENER_IFACE,
        "CursorDefine",
        &(2i32, 2i32, 1i32, 1i32, vec![0xffu8; 16]),
    )
    .unwrap();
    assert!(
        matches!(next(&listener), QemuEvent::CursorDefine { cursor } if cursor.argb.len() == 16)
    );
    call(&conn, LISTENER_IFACE, "MouseSet", &(5i32, 6i32, 1i32)).unwrap();
    assert!(matches!(
        next(&listener),
        QemuEvent::MouseSet {
            x: 5,
            y: 6,
            visible: true
        }
    ));
    call(&conn, LISTENER_IFACE, "Disable", &()).unwrap();
    assert!(matches!(next(&listener), QemuEvent::Disable));
    drop(conn);
    assert!(matches!(next(&listener), QemuEvent::Disconnected { .. }));
}

#[test]
fn an_unsealed_memfd_truncated_after_scanout_map_is_an_error_not_sigbus() {
    let _serial = serial();
    let (listener, conn) = fake_pair(ListenerOptions::default());
    let x8r8g8b8 = 0x2002_0888u32;
    // A 64×64 surface whose pixel i reads i, unsealed, as QEMU 10's surfaces are.
    let memfd = Memfd::create("hostile-surface").unwrap();
    let pixels: Vec<u8> = (0..64 * 64u32).flat_map(u32::to_le_bytes).collect();
    let file = std::fs::File::from(memfd.as_fd().try_clone_to_owned().unwrap());
    std::os::unix::fs::FileExt::write_all_at(&file, &pixels, 0).unwrap();
    let fd = || zbus::zvariant::Fd::from(memfd.as_fd());
    call(
        &conn,
        MAP_IFACE,
        "ScanoutMap",
        &(fd(), 0u32, 64u32, 64u32, 256u32, x8r8g8b8),
    )
    .unwrap();
    let QemuEvent::ScanoutMap { frame } = next(&listener) else {
        panic!("expected ScanoutMap")
    };
    assert!(frame.lock().is_shared_memory());
    assert!(
        frame.lock().sealed_memfd().is_none(),
        "unsealed: not exportable"
    );
    assert_eq!(frame.lock().bytes().to_vec(), pixels);

    // QEMU draws pixel (5, 3) and sends UpdateMap: the frame shows it once read.
    std::os::unix::fs::FileExt::write_all_at(&file, &0xABCDEFu32.to_le_bytes(), (3 * 64 + 5) * 4)
        .unwrap();
    let caller = {
        let conn = conn.clone();
        std::thread::spawn(move || call(&conn, MAP_IFACE, "UpdateMap", &(5i32, 3i32, 1i32, 1i32)))
    };
    let QemuEvent::UpdateMap { ack, rect, .. } = next(&listener) else {
        panic!("expected UpdateMap")
    };
    assert_eq!(rect, Rect::new(5, 3, 1, 1));
    let row = frame.lock().row(3).unwrap().to_vec();
    assert_eq!(&row[5 * 4..6 * 4], &0xABCDEFu32.to_le_bytes());
    ack.complete();
    caller.join().unwrap().unwrap();
    let before = frame.lock().bytes().to_vec();

    // Then truncates the memfd under the surface. A mapping would raise SIGBUS on
    // the next read; the update is refused with an error naming what happened.
    file.set_len(4096).unwrap();
    let refused = call(&conn, MAP_IFACE, "UpdateMap", &(0i32, 0i32, 64i32, 64i32));
    assert!(refused.is_err(), "a short surface must be refused");
    let QemuEvent::Rejected { error, .. } = next(&listener) else {
        panic!("expected Rejected")
    };
    let text = error.to_string();
    assert!(
        text.contains("holds 4096 bytes") && text.contains("truncated after ScanoutMap"),
        "{text}"
    );
    // The last good picture is still there to show, and reading it is harmless.
    assert_eq!(frame.lock().bytes().to_vec(), before);
    // A fresh ScanoutMap past the new end is refused before anything is read.
    let past = call(
        &conn,
        MAP_IFACE,
        "ScanoutMap",
        &(fd(), 0u32, 64u32, 64u32, 256u32, x8r8g8b8),
    );
    assert!(past.is_err());
    assert!(matches!(next(&listener), QemuEvent::Rejected { .. }));
}

/// The listener process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_hostile_peer_gets_errors_and_the_listener_stays_up() {
    let _serial = serial();
    let (listener, conn) = fake_pair(ListenerOptions::default());
    let x8r8g8b8 = 0x2002_0888u32;
    let refused_with = |method: &str, iface: &str, result: zbus::Result<()>, words: &[&str]| {
        assert!(result.is_err(), "{method} must fail for the peer");
        let QemuEvent::Rejected { error, .. } = next(&listener) else {
            panic!("{method}: expected Rejected")
        };
        let text = error.to_string();
        for word in words {
            assert!(
                text.contains(word),
                "{iface}.{method}: {word:?} not in {text:?}"
            );
        }
    };

    // fds of the wrong kind, where shared memory or a dma-buf is announced.
    let (pipe_reader, _pipe_writer) = std::io::pipe().unwrap();
    let (socket, _other_end) = UnixStream::pair().unwrap();
    let directory = std::fs::File::open(std::env::temp_dir()).unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let wrong: [(&str, std::os::fd::BorrowedFd<'_>); 4] = [
        ("pipe", pipe_reader.as_fd()),
        ("socket", socket.as_fd()),
        ("directory", directory.as_fd()),
        ("character device", null.as_fd()),
    ];
    for (kind, fd) in wrong {
        let fd = || zbus::zvariant::Fd::from(fd);
        let map = (fd(), 0u32, 64u32, 64u32, 256u32, x8r8g8b8);
        refused_with(
            "ScanoutMap",
            MAP_IFACE,
            call(&conn, MAP_IFACE, "ScanoutMap", &map),
            &[kind],
        );
        let xrgb = u32::from_le_bytes(*b"XR24");
        let dmabuf = (fd(), 64u32, 64u32, 256u32, xrgb, 0u64, false);
        let result = call(&conn, LISTENER_IFACE, "ScanoutDMABUF", &dmabuf);
        refused_with("ScanoutDMABUF", LISTENER_IFACE, result, &[kind]);
    }

    // Absurd sizes and strides.
    let memfd = Memfd::create("hostile-sizes").unwrap();
    memfd.set_size(64 * 64 * 4).unwrap();
    let fd = || zbus::zvariant::Fd::from(memfd.as_fd());
    for (width, height, stride, words) in [
        (0u32, 64u32, 256u32, &["bad size 0x64"][..]),
        (100_000, 64, 400_000, &["bad size 100000x64"]),
        (64, 64, u32::MAX, &["exceeds"]),
        (64, 64, 4, &["stride"]),
    ] {
        let map = (fd(), 0u32, width, height, stride, x8r8g8b8);
        let result = call(&conn, MAP_IFACE, "ScanoutMap", &map);
        refused_with("ScanoutMap", MAP_IFACE, result, words);
    }

    // Calls after Disable: updates of a surface that is gone.
    let good = (fd(), 0u32, 64u32, 64u32, 256u32, x8r8g8b8);
    call(&conn, MAP_IFACE, "ScanoutMap", &good).unwrap();
    assert!(matches!(next(&listener), QemuEvent::ScanoutMap { .. }));
    call(&conn, LISTENER_IFACE, "Disable", &()).unwrap();
    assert!(matches!(next(&listener), QemuEvent::Disable));
    let update = call(&conn, MAP_IFACE, "UpdateMap", &(0i32, 0i32, 8i32, 8i32));
    refused_with("UpdateMap", MAP_IFACE, update, &["UpdateMap"]);
    let data = (0i32, 0i32, 1i32, 1i32, 4u32, x8r8g8b8, vec![0u8; 4]);
    refused_with(
        "Update",
        LISTENER_IFACE,
        call(&conn, LISTENER_IFACE, "Update", &data),
        &[],
    );

    // Still up: a good scanout is shown.
    let pixels = vec![0x40u8; 64 * 64 * 4];
    let scanout = (64u32, 64u32, 256u32, x8r8g8b8, pixels);
    call(&conn, LISTENER_IFACE, "Scanout", &scanout).unwrap();
    assert!(matches!(next(&listener), QemuEvent::Scanout { .. }));

    // A flood of updates, sent without waiting for replies: one frame at a time
    // reaches the display, the rest wait in the socket (the peer blocks), and the
    // listener's memory stays bounded; every update is delivered once answered.
    const FLOOD: usize = 2000;
    let before = rss_kib();
    let sender = {
        let conn = conn.clone();
        std::thread::spawn(move || {
            for i in 0..FLOOD {
                // The whole surface each time: 16 KiB, 32 MiB for the flood.
                let body = (
                    0i32,
                    0i32,
                    64i32,
                    64i32,
                    256u32,
                    x8r8g8b8,
                    vec![i as u8; 64 * 256],
                );
                let msg = zbus::Message::method_call(LISTENER_PATH, "Update")
                    .unwrap()
                    .interface(LISTENER_IFACE)
                    .unwrap()
                    .build(&body)
                    .unwrap();
                conn.send(&msg).unwrap();
            }
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let first = next(&listener);
    assert!(listener.try_recv().is_none(), "two frames in flight");
    assert!(!sender.is_finished(), "the flood was not held back");
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 16 * 1024,
        "listener grew by {grown} KiB while {FLOOD} updates waited"
    );
    let mut delivered = 0;
    let mut event = first;
    loop {
        let QemuEvent::Update { ack, .. } = event else {
            panic!("expected Update, got {event:?}")
        };
        delivered += 1;
        ack.complete();
        if delivered == FLOOD {
            break;
        }
        event = next(&listener);
    }
    sender.join().unwrap();
    eprintln!("flood: {delivered} updates, listener grew by {grown} KiB while they waited");
}

#[test]
fn qemu_dying_while_an_update_waits_for_its_frame_ends_the_listener_cleanly() {
    let _serial = serial();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let listener = QemuListener::serve(ours, ListenerOptions::default()).unwrap();
    let peer_socket = theirs.try_clone().unwrap();
    let conn = fake_qemu(theirs);
    let memfd = Memfd::create("dying-surface").unwrap();
    memfd.set_size(64 * 64 * 4).unwrap();
    let fd = zbus::zvariant::Fd::from(memfd.as_fd());
    let surface = (fd, 0u32, 64u32, 64u32, 256u32, 0x2002_0888u32);
    call(&conn, MAP_IFACE, "ScanoutMap", &surface).unwrap();
    assert!(matches!(next(&listener), QemuEvent::ScanoutMap { .. }));
    let caller = {
        let conn = conn.clone();
        std::thread::spawn(move || call(&conn, MAP_IFACE, "UpdateMap", &(0i32, 0i32, 8i32, 8i32)))
    };
    let QemuEvent::UpdateMap { ack, .. } = next(&listener) else {
        panic!("expected UpdateMap")
    };
    // QEMU dies with the update unanswered: its socket closes under the listener,
    // which is waiting for the frame, not reading.
    peer_socket.shutdown(std::net::Shutdown::Both).unwrap();
    let started = Instant::now();
    let reason = match listener.recv_timeout(Duration::from_secs(5)) {
        Recv::Event(QemuEvent::Disconnected { reason }) => reason,
        other => panic!("expected Disconnected after QEMU died, got {other:?}"),
    };
    assert!(
        reason.contains("hung up while an update waited"),
        "{reason}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The viewer presents the frame afterwards: answering a dead QEMU is harmless.
    ack.complete();
    assert!(
        caller.join().unwrap().is_err(),
        "the dead caller got no reply"
    );
}
