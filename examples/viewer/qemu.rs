//! `--source qemu[:ADDRESS]`: QEMU's D-Bus display (`-display dbus`) as the guest.
//!
//! One window (a gl=off [`ShmPresenter`]) per shown graphic console, each with its own
//! listener. Pixels come either over the socket (`Scanout`/`Update`) or, by default, in
//! QEMU's shared surface memory (`ScanoutMap`/`UpdateMap`); each update's damage is
//! converted into the window's XRGB8888 buffer. QEMU's update calls are answered only
//! after the frame that shows them was presented (the compositor's frame callback):
//! while the window is not ready, updates are coalesced and their acks kept.
//!
//! Input (keys, pointer in frame pixels, buttons, wheel) goes back to the console; the
//! guest's cursor is shown as the window's pointer image.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use guestfb::export::{
    ExportedFramebuffer, Exporter, FramebufferDesc, GuestMemory, PinManager, PinPolicy, PinPurpose,
};
use guestfb::format::PixelFormat;
use guestfb::import::convert::{self, Dest, DestFormat, Source, SourcePlane};
use guestfb::import::CpuMapping;
use guestfb::present::wayland::{PresenterEvent, WindowOptions};
use guestfb::rect::Rect;
use guestfb::source::qemu::{
    DmaBufScanout, ListenerOptions, MouseButton, QemuAddress, QemuConsole, QemuDisplay, QemuEvent,
    QemuListener, SharedFrame, UiInfo,
};
use guestfb::sys::dmabuf::DmaBuf;

use crate::presenter::{
    open_zero_copy, save_screenshot, stop_on_signals, stop_requested, write_png, Error, GlMode,
    PresentMode, Presenter, ShowError, Stats,
};

/// Which consoles get a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleChoice {
    /// This console id.
    One(u32),
    /// Every graphic console, one window each.
    All,
}

/// Parses `--console N|all`.
pub fn parse_console(text: &str) -> Result<ConsoleChoice, String> {
    match text {
        "all" => Ok(ConsoleChoice::All),
        number => number
            .parse()
            .map(ConsoleChoice::One)
            .map_err(|_| format!("{text:?} is not a console number or `all`")),
    }
}

/// What the QEMU viewer is asked to do.
#[derive(Debug, Clone)]
pub struct QemuArgs {
    /// D-Bus address; empty for the session bus.
    pub address: String,
    /// Consoles to show.
    pub console: ConsoleChoice,
    /// Offer QEMU the shared-memory transport (`Unix.Map`).
    pub map: bool,
    /// Evdev key codes typed into the first window's console once it shows a frame.
    pub send_keys: Vec<u32>,
    /// gl=off copies every frame; on/auto show QEMU's dma-bufs without a copy.
    pub gl: GlMode,
    /// The zero-copy presenter to use.
    pub present: PresentMode,
    /// Stop once every head presented this many frames (0: run until closed).
    pub frames: u64,
    /// Write each head's last picture here (head N > 0: `NAME-N.png`).
    pub screenshot: Option<PathBuf>,
}

/// Key names for `--send-keys` and their evdev codes.
const KEY_NAMES: &[(&str, u32)] = &[
    ("esc", 1),
    ("1", 2),
    ("2", 3),
    ("3", 4),
    ("4", 5),
    ("5", 6),
    ("6", 7),
    ("7", 8),
    ("8", 9),
    ("9", 10),
    ("0", 11),
    ("minus", 12),
    ("equal", 13),
    ("backspace", 14),
    ("tab", 15),
    ("q", 16),
    ("w", 17),
    ("e", 18),
    ("r", 19),
    ("t", 20),
    ("y", 21),
    ("u", 22),
    ("i", 23),
    ("o", 24),
    ("p", 25),
    ("enter", 28),
    ("ctrl", 29),
    ("a", 30),
    ("s", 31),
    ("d", 32),
    ("f", 33),
    ("g", 34),
    ("h", 35),
    ("j", 36),
    ("k", 37),
    ("l", 38),
    ("shift", 42),
    ("z", 44),
    ("x", 45),
    ("c", 46),
    ("v", 47),
    ("b", 48),
    ("n", 49),
    ("m", 50),
    ("alt", 56),
    ("space", 57),
    ("f1", 59),
    ("f2", 60),
    ("f3", 61),
    ("f4", 62),
    ("f5", 63),
    ("f6", 64),
    ("f7", 65),
    ("f8", 66),
    ("f9", 67),
    ("f10", 68),
    ("f11", 87),
    ("f12", 88),
    ("home", 102),
    ("up", 103),
    ("pageup", 104),
    ("left", 105),
    ("right", 106),
    ("end", 107),
    ("down", 108),
    ("pagedown", 109),
    ("insert", 110),
    ("delete", 111),
];

/// Evdev key codes of `--send-keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyList(pub Vec<u32>);

/// Parses `--send-keys KEY[,KEY…]` into evdev codes (names as in [`KEY_NAMES`], or
/// decimal codes).
pub fn parse_keys(text: &str) -> Result<KeyList, String> {
    text.split(',')
        .filter(|name| !name.is_empty())
        .map(|name| {
            let lower = name.trim().to_ascii_lowercase();
            KEY_NAMES
                .iter()
                .find(|(known, _)| *known == lower)
                .map(|&(_, code)| code)
                .or_else(|| lower.parse().ok())
                .ok_or_else(|| format!("unknown key {name:?}"))
        })
        .collect::<Result<_, _>>()
        .map(KeyList)
}

/// How a head's current picture reaches the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FramePath {
    /// QEMU's dma-buf (a virtio-gpu blob's udmabuf via `ScanoutMap`, or a gl=on
    /// `ScanoutDMABUF`) shown as it is.
    DmabufImport,
    /// QEMU's sealed surface memfd exported as a udmabuf by guestfb's `Exporter`.
    MemfdExport,
    /// Pixels copied: pixel data over the socket, or an unsealed memfd mapped.
    Copy,
}

impl FramePath {
    fn name(self) -> &'static str {
        match self {
            Self::DmabufImport => "dma-buf import",
            Self::MemfdExport => "memfd export",
            Self::Copy => "copy",
        }
    }
}

/// What a head shows.
enum Shown {
    /// The display is off: black.
    Off,
    /// A CPU frame (pixel data, or QEMU's memfd mapped read-only).
    Copy(SharedFrame),
    /// A dma-buf: QEMU's own, or a udmabuf of QEMU's sealed memfd.
    Export {
        export: ExportedFramebuffer,
        mapping: CpuMapping,
        path: FramePath,
    },
}

/// What makes one dma-buf import the same as another: the buffer and its layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ImportKey {
    inode: u64,
    offset: u32,
    stride: u32,
    width: u32,
    height: u32,
    fourcc: u32,
}

/// Per-head counters, printed at exit.
#[derive(Debug, Default)]
struct HeadStats {
    frames: Stats,
    by_path: [u64; 3],
    imports: u64,
    import_hits: u64,
    /// QEMU's update → the compositor's frame callback for the frame that showed it.
    latencies: Vec<Duration>,
}

/// The `q`-quantile of `values` (sorted in place), in milliseconds.
fn quantile_ms(values: &mut [Duration], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort();
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index].as_secs_f64() * 1e3
}

/// User + system CPU time of this process (all its threads).
fn process_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `struct rusage` into the buffer it is given.
    let usage = match unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } {
        // SAFETY: a zeroed rusage is valid, and getrusage filled it on success.
        0 => unsafe { usage.assume_init() },
        _ => return Duration::ZERO,
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Up to this many dma-buf imports are kept per head (a guest flipping between two
/// or three buffers imports each once).
const IMPORT_CACHE: usize = 4;

/// One console in one window.
struct Head {
    id: u32,
    console: QemuConsole,
    listener: QemuListener,
    presenter: Presenter,
    title: String,
    gl: GlMode,
    present: PresentMode,
    pins: PinManager,
    shown: Shown,
    /// Imports of QEMU's dma-bufs by buffer, most recent last.
    imports: Vec<(ImportKey, ExportedFramebuffer)>,
    next_buffer_id: u64,
    /// Why zero copy is off for this head (logged once), when it is.
    zero_copy_off: Option<String>,
    /// Damage not yet presented, in frame pixels.
    damage: Vec<Rect>,
    /// Acks of the coalesced updates, not yet presented.
    waiting: Vec<guestfb::source::qemu::FrameToken>,
    /// Acks of the presented frame: completed at its frame callback.
    presented: Vec<guestfb::source::qemu::FrameToken>,
    /// When the oldest update not yet presented arrived.
    waiting_since: Option<Instant>,
    /// When the oldest update of the presented frame arrived.
    presented_since: Option<Instant>,
    stats: HeadStats,
    ui_info_refused: bool,
}

impl Head {
    fn open(display: &QemuDisplay, id: u32, vm: &str, args: &QemuArgs) -> Result<Self, Error> {
        let console = display.console(id)?;
        let info = console.info()?;
        let listener = console.attach(ListenerOptions {
            map: args.map,
            dmabuf2: true,
        })?;
        let title = format!("guestfb: {vm} console {id} ({})", info.label);
        let presenter = Presenter::open_shm(
            info.width.clamp(1, 16384),
            info.height.clamp(1, 16384),
            &title,
        )?;
        println!(
            "viewer: QEMU console {id} ({}, {}x{}) attached, {} transport",
            info.label,
            info.width,
            info.height,
            if args.map {
                "shared-memory"
            } else {
                "pixel-data"
            }
        );
        Ok(Self {
            id,
            console,
            listener,
            presenter,
            title,
            gl: args.gl,
            present: args.present,
            pins: PinManager::new(PinPolicy::default()),
            shown: Shown::Off,
            imports: Vec::new(),
            next_buffer_id: 1,
            zero_copy_off: match (args.gl, args.present) {
                (GlMode::Off, _) => Some("--gl off".to_owned()),
                (_, PresentMode::Shm) => Some("--present shm".to_owned()),
                _ => None,
            },
            damage: vec![Rect::full(info.width.max(1), info.height.max(1))],
            waiting: Vec::new(),
            presented: Vec::new(),
            waiting_since: None,
            presented_since: None,
            stats: HeadStats::default(),
            ui_info_refused: false,
        })
    }

    fn window(&self, width: u32, height: u32) -> WindowOptions {
        let mut window = WindowOptions::new(width, height);
        window.title = self.title.clone();
        window
    }

    /// The picture's size (visible rect), when there is one.
    fn picture_size(&self) -> Option<(u32, u32)> {
        match &self.shown {
            Shown::Off => None,
            Shown::Copy(frame) => {
                let frame = frame.lock();
                Some((frame.width(), frame.height()))
            }
            Shown::Export { export, .. } => {
                let visible = export.layout().visible();
                Some((visible.width, visible.height))
            }
        }
    }

    /// Shows `shown` from now on: the presenter is switched where needed (a zero-copy
    /// one for an export, unless zero copy is off; wl_shm for a CPU frame) and the
    /// whole picture is repainted.
    fn show(&mut self, shown: Shown) -> Result<(), Error> {
        self.shown = shown;
        let (width, height) = self
            .picture_size()
            .unwrap_or_else(|| self.presenter_frame_size());
        let want_zero_copy =
            matches!(self.shown, Shown::Export { .. }) && self.zero_copy_off.is_none();
        if want_zero_copy && !self.presenter.is_zero_copy() {
            let Shown::Export { export, .. } = &self.shown else {
                unreachable!("checked above")
            };
            match open_zero_copy(self.present, export, &self.window(width, height)) {
                Ok(presenter) => {
                    self.presenter = presenter;
                    println!(
                        "viewer: console {}: presenting with {}",
                        self.id,
                        self.presenter.name()
                    );
                }
                Err(why) => self.zero_copy_impossible(why)?,
            }
        } else if !want_zero_copy && self.presenter.is_zero_copy() {
            if matches!(self.shown, Shown::Copy(_)) {
                println!(
                    "viewer: console {}: QEMU's surface is CPU memory (pixel data or an \
                     unsealed memfd): shown through the copy path until QEMU sends a dma-buf",
                    self.id
                );
            }
            self.presenter = Presenter::open_shm(width, height, &self.title)?;
            println!(
                "viewer: console {}: presenting with {}",
                self.id,
                self.presenter.name()
            );
        }
        if let Presenter::Shm(shm) = &mut self.presenter {
            shm.set_frame(width.max(1), height.max(1), PixelFormat::Xrgb8888)?;
        }
        self.damage = vec![Rect::full(width.max(1), height.max(1))];
        Ok(())
    }

    fn presenter_frame_size(&self) -> (u32, u32) {
        match &self.presenter {
            Presenter::Shm(shm) => (shm.frame_width(), shm.frame_height()),
            _ => (1, 1),
        }
    }

    /// Zero copy cannot show this head's frames: `--gl on` stops, auto says why once
    /// and copies from now on.
    fn zero_copy_impossible(&mut self, why: String) -> Result<(), Error> {
        if self.gl == GlMode::On {
            return Err(
                format!("console {}: --gl on: zero copy impossible: {why}", self.id).into(),
            );
        }
        println!(
            "viewer: console {}: gl=on not possible ({why}); showing QEMU through gl=off",
            self.id
        );
        self.zero_copy_off = Some(why);
        if self.presenter.is_zero_copy() {
            let (width, height) = self.picture_size().unwrap_or((1, 1));
            self.presenter = Presenter::open_shm(width, height, &self.title)?;
        }
        Ok(())
    }

    /// The export of a QEMU dma-buf scanout: cached per buffer and layout, so a guest
    /// flipping between two blobs imports each once.
    fn dmabuf_export(&mut self, scanout: DmaBufScanout) -> Result<ExportedFramebuffer, Error> {
        let desc = scanout.framebuffer_desc();
        let mut planes = scanout.planes.into_iter();
        let first = planes.next().ok_or("a dma-buf scanout without planes")?;
        let inode = rustix::fs::fstat(&first.fd)?.st_ino;
        for plane in planes {
            if rustix::fs::fstat(&plane.fd)?.st_ino != inode {
                return Err("the planes are in different dma-bufs; only one buffer per \
                            scanout is shown"
                    .into());
            }
        }
        let key = ImportKey {
            inode,
            offset: first.offset,
            stride: first.stride,
            width: scanout.backing_width,
            height: scanout.backing_height,
            fourcc: scanout.fourcc,
        };
        if let Some(index) = self.imports.iter().position(|(k, _)| *k == key) {
            let entry = self.imports.remove(index);
            let export = entry.1.clone();
            self.imports.push(entry);
            self.stats.import_hits += 1;
            return Ok(export);
        }
        let exporter = scanout.exporter;
        // A udmabuf pins its pages long-term on kernels whose probe says so.
        let longterm = exporter == "udmabuf" && self.pins.semantics().longterm_pin.is_longterm();
        let buffer_id = self.next_buffer_id;
        self.next_buffer_id += 1;
        let export = ExportedFramebuffer::from_peer_dmabuf(
            buffer_id,
            DmaBuf::from_fd(first.fd)?,
            &desc,
            longterm,
        )?;
        println!(
            "viewer: console {}: QEMU dma-buf ({}, {exporter}, {}x{} {}) imported as buffer {buffer_id}",
            self.id,
            scanout.method,
            scanout.backing_width,
            scanout.backing_height,
            export.layout().format(),
        );
        self.stats.imports += 1;
        self.imports.push((key, export.clone()));
        if self.imports.len() > IMPORT_CACHE {
            let (_, old) = self.imports.remove(0);
            self.presenter.forget(old.buffer_id());
        }
        Ok(export)
    }

    /// A sealed memfd surface as a udmabuf export (zero copy on the viewer's side);
    /// `Err` says why not, and the frame is then copied.
    fn memfd_export(&mut self, frame: &SharedFrame) -> Result<ExportedFramebuffer, String> {
        let frame = frame.lock();
        let Some((memfd, offset)) = frame.sealed_memfd() else {
            return Err(
                "QEMU's surface memfd is not sealed with F_SEAL_SHRINK (QEMU 10 \
                        does not seal its surfaces), which udmabuf requires"
                    .to_owned(),
            );
        };
        if !self.pins.has_udmabuf() {
            return Err("no /dev/udmabuf on this host".to_owned());
        }
        let size = memfd.size().map_err(|e| e.to_string())?;
        let page = memfd.page_size();
        let mut memory = GuestMemory::new();
        memory
            .add_region(0, size / page * page, memfd.clone(), 0)
            .map_err(|e| e.to_string())?;
        let desc = FramebufferDesc::packed(
            frame.format(),
            frame.width(),
            frame.height(),
            frame.stride(),
            offset,
        );
        let buffer_id = self.next_buffer_id;
        self.next_buffer_id += 1;
        // Rare (QEMU 10 never seals its surfaces): a pin manager for this memfd alone.
        Exporter::new(Arc::new(memory), PinManager::new(self.pins.policy()))
            .export(buffer_id, &desc, PinPurpose::Scanout)
            .map_err(|e| e.to_string())
    }

    /// Forgets every dma-buf import (the display went off or changed size).
    fn drop_imports(&mut self) {
        for (_, export) in self.imports.drain(..) {
            self.presenter.forget(export.buffer_id());
        }
    }

    /// Handles one QEMU event. `Err` ends the viewer (QEMU went away).
    fn on_qemu(&mut self, event: QemuEvent) -> Result<(), Error> {
        match event {
            QemuEvent::Scanout { frame } | QemuEvent::ScanoutMap { frame } => {
                self.drop_imports();
                let shown = match self.memfd_export(&frame) {
                    Ok(export) => Shown::Export {
                        mapping: CpuMapping::new(export.clone()),
                        export,
                        path: FramePath::MemfdExport,
                    },
                    Err(why) => {
                        if frame.lock().is_shared_memory() && self.zero_copy_off.is_none() {
                            println!("viewer: console {}: memfd not exported: {why}", self.id);
                        }
                        Shown::Copy(frame)
                    }
                };
                self.show(shown)?
            }
            QemuEvent::Update { frame, rect, ack } | QemuEvent::UpdateMap { frame, rect, ack } => {
                let same = matches!(&self.shown, Shown::Copy(shown) if shown.same_as(&frame));
                if !same
                    && !matches!(
                        self.shown,
                        Shown::Export {
                            path: FramePath::MemfdExport,
                            ..
                        }
                    )
                {
                    // An update of a surface we have not seen as a scanout: adopt it.
                    self.show(Shown::Copy(frame))?;
                }
                self.damage.push(rect);
                self.waiting_since.get_or_insert_with(Instant::now);
                self.waiting.push(ack);
            }
            QemuEvent::ScanoutDmabuf { scanout } => {
                let size = (scanout.visible.width, scanout.visible.height);
                if self.picture_size() != Some(size) {
                    // A mode change: the old buffers are gone for good.
                    self.drop_imports();
                }
                match self.dmabuf_export(scanout) {
                    Ok(export) => {
                        let same = matches!(&self.shown, Shown::Export { export: shown, .. }
                            if shown.buffer_id() == export.buffer_id());
                        if !same {
                            self.show(Shown::Export {
                                mapping: CpuMapping::new(export.clone()),
                                export,
                                path: FramePath::DmabufImport,
                            })?;
                        }
                    }
                    Err(error) => eprintln!(
                        "viewer: console {}: QEMU's dma-buf scanout refused: {error}",
                        self.id
                    ),
                }
            }
            QemuEvent::UpdateDmabuf { rect, ack } => {
                if !matches!(
                    self.shown,
                    Shown::Export {
                        path: FramePath::DmabufImport,
                        ..
                    }
                ) {
                    // An update after a Disable means the last dma-buf (QEMU 10's gl=on
                    // console disables between a blob's scanout and its update).
                    if let Some((_, export)) = self.imports.last() {
                        let export = export.clone();
                        self.show(Shown::Export {
                            mapping: CpuMapping::new(export.clone()),
                            export,
                            path: FramePath::DmabufImport,
                        })?;
                    }
                }
                self.damage.push(rect);
                self.waiting_since.get_or_insert_with(Instant::now);
                self.waiting.push(ack);
            }
            // The imports stay: an UpdateDMABUF may show the last one again. A zero-copy
            // window keeps its presenter and its last picture until the next scanout;
            // a wl_shm one goes black.
            QemuEvent::Disable if self.presenter.is_zero_copy() => self.shown = Shown::Off,
            QemuEvent::Disable => self.show(Shown::Off)?,
            QemuEvent::CursorDefine { cursor } => {
                if let Presenter::Shm(shm) = &mut self.presenter {
                    if let Err(error) = shm.set_cursor_image(
                        cursor.width,
                        cursor.height,
                        cursor.hot_x,
                        cursor.hot_y,
                        &cursor.argb,
                    ) {
                        eprintln!("viewer: console {}: cursor not shown: {error}", self.id);
                    }
                }
            }
            QemuEvent::MouseSet { visible, .. } => {
                if let Presenter::Shm(shm) = &mut self.presenter {
                    shm.set_cursor_visible(visible)?
                }
            }
            QemuEvent::Rejected { method, error } => {
                eprintln!(
                    "viewer: console {}: QEMU's {method} refused: {error}",
                    self.id
                )
            }
            QemuEvent::Disconnected { reason } => {
                return Err(format!("QEMU disconnected (console {}): {reason}", self.id).into())
            }
        }
        Ok(())
    }

    /// Forwards one window event to the console.
    fn on_window(&mut self, event: PresenterEvent) -> Result<(), Error> {
        let result = match event {
            PresenterEvent::Key {
                code,
                pressed: true,
            } => self.console.key_press(code),
            PresenterEvent::Key {
                code,
                pressed: false,
            } => self.console.key_release(code),
            PresenterEvent::PointerMotion { x, y } => self.console.pointer_motion(x, y),
            PresenterEvent::Button { code, pressed } => match MouseButton::from_evdev(code) {
                Some(button) => self.console.button(button, pressed),
                None => Ok(()),
            },
            PresenterEvent::Axis { vertical_steps } => self.console.wheel(vertical_steps),
            PresenterEvent::FrameDone { .. } => {
                for ack in self.presented.drain(..) {
                    ack.complete();
                }
                if let Some(since) = self.presented_since.take() {
                    self.stats.latencies.push(since.elapsed());
                }
                Ok(())
            }
            PresenterEvent::Configure { .. } => {
                let preferred = match &self.presenter {
                    Presenter::Shm(shm) => shm.preferred_frame_size(),
                    _ => None,
                };
                if let (Some((width, height)), false) = (preferred, self.ui_info_refused) {
                    let info = UiInfo {
                        // At 96 dpi.
                        width_mm: (u64::from(width) * 254 / 960).min(u16::MAX.into()) as u16,
                        height_mm: (u64::from(height) * 254 / 960).min(u16::MAX.into()) as u16,
                        xoff: 0,
                        yoff: 0,
                        width,
                        height,
                    };
                    if let Err(error) = self.console.set_ui_info(info) {
                        println!(
                            "viewer: console {}: window size not passed to the guest: {error}",
                            self.id
                        );
                        self.ui_info_refused = true;
                    }
                }
                Ok(())
            }
            PresenterEvent::Close | PresenterEvent::BufferReleased { .. } => Ok(()),
        };
        if let Err(error) = result {
            eprintln!("viewer: console {}: input not sent: {error}", self.id);
        }
        Ok(())
    }

    /// Presents the coalesced damage if the window is ready. True when a frame went out.
    fn draw(&mut self) -> Result<bool, Error> {
        if self.damage.is_empty() || !self.presenter.is_ready() {
            return Ok(false);
        }
        let path = match &self.shown {
            Shown::Export {
                export,
                mapping,
                path,
            } => {
                let before = self.stats.frames.bytes;
                match self
                    .presenter
                    .show(export, mapping, &self.damage, &mut self.stats.frames)
                {
                    Ok(false) => return Ok(false),
                    Ok(true) => {}
                    Err(ShowError::Import(why)) => {
                        let why = format!("{}: {why}", self.presenter.name());
                        self.zero_copy_impossible(why)?;
                        let (width, height) = self.picture_size().unwrap_or((1, 1));
                        self.damage = vec![Rect::full(width, height)];
                        return Ok(false);
                    }
                    Err(ShowError::Other(error)) => return Err(error),
                }
                if self.stats.frames.bytes > before {
                    FramePath::Copy
                } else {
                    *path
                }
            }
            Shown::Off if self.presenter.is_zero_copy() => return Ok(false),
            Shown::Copy(_) | Shown::Off => {
                if !self.blit_cpu_frame()? {
                    return Ok(false);
                }
                FramePath::Copy
            }
        };
        self.damage.clear();
        // Acked at this frame's callback: QEMU waits until the picture is on screen.
        self.presented.append(&mut self.waiting);
        if let Some(since) = self.waiting_since.take() {
            self.presented_since.get_or_insert(since);
        }
        self.stats.frames.frames += 1;
        self.stats.by_path[path as usize] += 1;
        Ok(true)
    }

    /// Copies the damage of a CPU frame (or black while the display is off) into the
    /// wl_shm window. False when no buffer was free.
    fn blit_cpu_frame(&mut self) -> Result<bool, Error> {
        let Presenter::Shm(presenter) = &mut self.presenter else {
            return Err("a CPU frame needs the wl_shm presenter".into());
        };
        let frame = match &self.shown {
            Shown::Copy(frame) => Some(frame.clone()),
            _ => None,
        };
        let frame_lock = frame.as_ref().map(|f| f.lock());
        let Some(mut target) = presenter.next_buffer()? else {
            return Ok(false);
        };
        let (width, height) = (target.width(), target.height());
        let repair: Vec<Rect> = target
            .repair_rects(&self.damage)
            .into_iter()
            .filter_map(|r| r.clip(width, height))
            .collect();
        let stride = target.stride() as usize;
        let started = Instant::now();
        match frame_lock.as_deref() {
            Some(frame) if frame.width() == width && frame.height() == height => {
                let planes = [SourcePlane {
                    data: frame.bytes(),
                    stride: frame.stride() as usize,
                }];
                let source = Source {
                    format: frame.format(),
                    width,
                    height,
                    planes: &planes,
                    y0_top: true,
                };
                let mut dest = Dest {
                    data: target.pixels(),
                    stride,
                    format: DestFormat::Xrgb8888,
                };
                // A frame the converter refuses is logged; the window keeps its picture.
                match convert::blit(&source, &mut dest, &repair) {
                    Ok(blit) => self.stats.frames.bytes += blit.bytes,
                    Err(error) => {
                        eprintln!("viewer: console {}: frame not shown: {error}", self.id)
                    }
                }
            }
            // Display off (or a frame of another size than the window's, which a new
            // scanout follows): black.
            _ => {
                let pixels = target.pixels();
                for r in &repair {
                    for y in r.y..r.y + r.height {
                        let start = y as usize * stride + r.x as usize * 4;
                        pixels[start..start + r.width as usize * 4].fill(0);
                    }
                }
            }
        }
        self.stats.frames.blit_time += started.elapsed();
        target.present(&self.damage)?;
        Ok(true)
    }

    /// Writes what the head shows to `path` (PNG).
    fn screenshot(&self, path: &Path) -> Result<(), Error> {
        match &self.shown {
            Shown::Export {
                export, mapping, ..
            } => {
                let visible = export.layout().visible();
                save_screenshot(mapping, visible.width, visible.height, path)
            }
            Shown::Copy(frame) => {
                let frame = frame.lock();
                write_png(path, frame.width(), frame.height(), &frame.to_rgb())
            }
            Shown::Off => {
                let (width, height) = self.presenter_frame_size();
                write_png(
                    path,
                    width,
                    height,
                    &vec![0; width as usize * height as usize * 3],
                )
            }
        }
    }

    fn print_stats(&mut self, wall: Duration, cpu: Duration) {
        let median = quantile_ms(&mut self.stats.latencies, 0.5);
        let p99 = quantile_ms(&mut self.stats.latencies, 0.99);
        let s = &self.stats;
        println!(
            "viewer: console {}: {} frames in {:.2} s ({} {}, {} {}, {} {}), {} dma-buf \
             imports, {} import cache hits, {:.0} bytes copied per frame, presenter {}; \
             update to screen {median:.1} ms median, {p99:.1} ms p99; process CPU \
             {:.2} ms per frame",
            self.id,
            s.frames.frames,
            wall.as_secs_f64(),
            s.by_path[FramePath::DmabufImport as usize],
            FramePath::DmabufImport.name(),
            s.by_path[FramePath::MemfdExport as usize],
            FramePath::MemfdExport.name(),
            s.by_path[FramePath::Copy as usize],
            FramePath::Copy.name(),
            s.imports,
            s.import_hits,
            s.frames.bytes as f64 / s.frames.frames.max(1) as f64,
            self.presenter.name(),
            cpu.as_secs_f64() * 1e3 / s.frames.frames.max(1) as f64,
        );
    }
}

/// The screenshot file of head `index`: `path` for the first, `NAME-INDEX.EXT` after.
fn head_screenshot_path(path: &Path, index: usize) -> PathBuf {
    if index == 0 {
        return path.to_owned();
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{index}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{index}"),
    };
    path.with_file_name(name)
}

/// Shows QEMU's console(s) until the windows close, `--frames` were presented on
/// every head, or QEMU goes away (an error).
pub fn run(args: QemuArgs) -> Result<(), Error> {
    let address = QemuAddress::parse(&args.address);
    let display = QemuDisplay::connect(address)
        .map_err(|e| format!("cannot reach QEMU's D-Bus display: {e}"))?;
    let vm = display.vm_name().unwrap_or_else(|_| "QEMU".to_owned());
    let graphic = display.graphic_consoles()?;
    let ids: Vec<u32> = match args.console {
        ConsoleChoice::One(id) => vec![id],
        ConsoleChoice::All => graphic.iter().map(|c| c.id).collect(),
    };
    if ids.is_empty() {
        return Err("QEMU has no graphic console".into());
    }
    let mut heads = Vec::new();
    for id in ids {
        heads.push(Head::open(&display, id, &vm, &args)?);
    }
    let started = Instant::now();
    let mut keys_sent = args.send_keys.is_empty();
    stop_on_signals();
    loop {
        wait_for_any(&heads)?;
        for head in &mut heads {
            for event in head.presenter.dispatch(Duration::ZERO)? {
                head.on_window(event)?;
            }
            while let Some(event) = head.listener.try_recv() {
                head.on_qemu(event)?;
            }
            if head.draw()? && head.stats.frames.frames == 1 {
                println!("viewer: console {}: first frame shown", head.id);
            }
        }
        if heads.iter().any(|h| h.presenter.is_closed()) {
            println!("viewer: window closed");
            break;
        }
        if stop_requested() {
            println!("viewer: stopped by a signal");
            break;
        }
        if args.frames != 0 && heads.iter().all(|h| h.stats.frames.frames >= args.frames) {
            println!("viewer: presented {} frames", args.frames);
            break;
        }
        if !keys_sent && heads[0].stats.frames.frames > 0 {
            keys_sent = true;
            for &code in &args.send_keys {
                heads[0].console.key_press(code)?;
                std::thread::sleep(Duration::from_millis(30));
                heads[0].console.key_release(code)?;
                std::thread::sleep(Duration::from_millis(30));
            }
            println!("viewer: sent {} key(s)", args.send_keys.len());
        }
    }
    if let Some(path) = &args.screenshot {
        for (index, head) in heads.iter().enumerate() {
            let path = head_screenshot_path(path, index);
            head.screenshot(&path)?;
            println!(
                "viewer: console {}: screenshot written to {}",
                head.id,
                path.display()
            );
        }
    }
    let cpu = process_cpu_time();
    for head in &mut heads {
        head.print_stats(started.elapsed(), cpu);
    }
    Ok(())
}

/// Waits (up to 100 ms) until a window connection or a listener has something to read.
fn wait_for_any(heads: &[Head]) -> Result<(), Error> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let connections: Vec<_> = heads.iter().map(|h| h.presenter.connection_fd()).collect();
    let mut fds = Vec::new();
    for (head, connection) in heads.iter().zip(&connections) {
        fds.push(PollFd::new(connection, PollFlags::IN));
        fds.push(PollFd::new(&head.listener, PollFlags::IN));
    }
    let timeout = Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(errno) => Err(std::io::Error::from(errno).into()),
    }
}
