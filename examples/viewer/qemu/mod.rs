//! `--source qemu[:ADDRESS]`: QEMU's D-Bus display (`-display dbus`) as the guest.
//!
//! One window per shown graphic console, each with its own listener. QEMU's dma-bufs
//! (gl=on `ScanoutDMABUF`, a blob's udmabuf) are shown zero copy by the EGL or
//! linux-dmabuf presenter, imports cached per buffer (`imports.rs`); CPU surfaces —
//! pixel data over the socket (`Scanout`/`Update`) or QEMU's shared surface memory
//! (`ScanoutMap`/`UpdateMap`) — have each update's damage converted into a wl_shm
//! window. QEMU's update calls are answered only after the frame that shows them was
//! presented (the compositor's frame callback): while the window is not ready, updates
//! are coalesced and their acks kept. `--output kms` shows one console on a KMS plane
//! instead (`kms.rs`).
//!
//! Input (keys, pointer in frame pixels, buttons, wheel) goes back to the console; the
//! guest's cursor is shown as the window's pointer image.

mod imports;
mod keys;
#[cfg(feature = "kms")]
mod kms;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use guestfb::export::ExportedFramebuffer;
use guestfb::format::PixelFormat;
use guestfb::import::convert::{self, Dest, DestFormat, Source, SourcePlane};
use guestfb::import::CpuMapping;
use guestfb::present::wayland::{PresenterEvent, PresenterOptions};
use guestfb::rect::Rect;
use guestfb::source::qemu::{
    ConsoleInfo, ListenerOptions, MouseButton, QemuAddress, QemuConsole, QemuDisplay, QemuEvent,
    QemuListener, SharedFrame, UiInfo,
};

use crate::presenter::{
    open_zero_copy, save_screenshot, stop_on_signals, stop_requested, write_png, Error, GlMode,
    PresentMode, Presenter, ShowError,
};
pub use imports::QemuRam;
use imports::{process_cpu_time, FramePath, HeadStats, Imports};
use keys::type_keys;
pub use keys::{parse_keys, KeyList};

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
    /// Where the consoles are shown.
    pub output: QemuOutput,
    /// The pages of the guest's RAM.
    pub ram: QemuRam,
}

/// Where `--source qemu` shows the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuOutput {
    /// One Wayland window per console.
    Wayland,
    /// One console on a KMS plane of this card (`None`: the first with a connected
    /// connector).
    Kms(Option<PathBuf>),
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

/// Console `id` of `display`, its properties, and a listener attached to it (offered
/// shared memory unless `--qemu-no-map`, and `ScanoutDMABUF2`).
fn attach(
    display: &QemuDisplay,
    id: u32,
    args: &QemuArgs,
) -> Result<(QemuConsole, ConsoleInfo, QemuListener), Error> {
    let console = display.console(id)?;
    let info = console.info()?;
    let listener = console.attach(ListenerOptions {
        map: args.map,
        dmabuf2: true,
    })?;
    Ok((console, info, listener))
}

/// A screen of `width`×`height` pixels at 96 dpi, as QEMU's `SetUIInfo` takes it (the
/// guest may make it its preferred mode).
fn ui_info(width: u32, height: u32) -> UiInfo {
    UiInfo {
        width_mm: (u64::from(width) * 254 / 960).min(u16::MAX.into()) as u16,
        height_mm: (u64::from(height) * 254 / 960).min(u16::MAX.into()) as u16,
        xoff: 0,
        yoff: 0,
        width,
        height,
    }
}

/// How long a window may go without a frame callback before it is taken as hidden.
/// (A compositor calls back within a refresh or two; software rendering under TCG has
/// been seen taking over a second now and then, which this only makes answer early.)
const HIDDEN_AFTER: Duration = Duration::from_secs(1);

/// How long a `Disable` waits for a scanout or update before the window goes dark:
/// QEMU 10's gl=on console disables between every blob scanout and its update, and
/// blanking each time would flicker (and a screenshot could catch the black).
const DISABLE_GRACE: Duration = Duration::from_millis(200);

/// One console in one window.
struct Head {
    id: u32,
    console: QemuConsole,
    listener: QemuListener,
    presenter: Presenter,
    title: String,
    gl: GlMode,
    present: PresentMode,
    shown: Shown,
    imports: Imports,
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
    /// When the last frame went out, while its frame callback has not come.
    presented_at: Option<Instant>,
    /// The window was found hidden (and said so) since its last frame callback.
    hidden: bool,
    /// When QEMU disabled the display, if nothing came since.
    disabled_at: Option<Instant>,
    stats: HeadStats,
    ui_info_refused: bool,
}

impl Head {
    fn open(display: &QemuDisplay, id: u32, vm: &str, args: &QemuArgs) -> Result<Self, Error> {
        let (console, info, listener) = attach(display, id, args)?;
        let title = format!("guestfb: {vm} console {id} ({})", info.label);
        let mut options =
            PresenterOptions::new(info.width.clamp(1, 16384), info.height.clamp(1, 16384));
        options.title = title.clone();
        let presenter = Presenter::open_shm(&options)?;
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
            shown: Shown::Off,
            imports: Imports::new(id, args.ram),
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
            presented_at: None,
            hidden: false,
            disabled_at: None,
            stats: HeadStats::default(),
            ui_info_refused: false,
        })
    }

    fn window(&self, width: u32, height: u32) -> PresenterOptions {
        let mut window = PresenterOptions::new(width, height);
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
            self.presenter = Presenter::open_shm(&self.window(width, height))?;
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
            self.presenter = Presenter::open_shm(&self.window(width, height))?;
        }
        Ok(())
    }

    /// Forgets every dma-buf import (the display went off or changed size).
    fn drop_imports(&mut self) {
        for buffer_id in self.imports.clear() {
            self.presenter.forget(buffer_id);
        }
    }

    /// Handles one QEMU event. `Err` ends the viewer (QEMU went away).
    fn on_qemu(&mut self, event: QemuEvent) -> Result<(), Error> {
        if matches!(
            event,
            QemuEvent::Scanout { .. }
                | QemuEvent::ScanoutMap { .. }
                | QemuEvent::ScanoutDmaBuf { .. }
                | QemuEvent::Update { .. }
                | QemuEvent::UpdateMap { .. }
                | QemuEvent::UpdateDmaBuf { .. }
        ) {
            // The display is on after all.
            self.disabled_at = None;
        }
        match event {
            QemuEvent::Scanout { frame } | QemuEvent::ScanoutMap { frame } => {
                self.drop_imports();
                let shown = match self.imports.memfd(&frame) {
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
            QemuEvent::ScanoutDmaBuf {
                image,
                method,
                exporter,
            } => {
                let size = (image.visible.width, image.visible.height);
                if self.picture_size() != Some(size) {
                    // A mode change: the old buffers are gone for good.
                    self.drop_imports();
                }
                match self.imports.dmabuf(image, method, &exporter) {
                    Ok((export, evicted)) => {
                        if let Some(buffer_id) = evicted {
                            self.presenter.forget(buffer_id);
                        }
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
            QemuEvent::UpdateDmaBuf { rect, ack } => {
                if !matches!(
                    self.shown,
                    Shown::Export {
                        path: FramePath::DmabufImport,
                        ..
                    }
                ) {
                    // An update after a Disable means the last dma-buf (QEMU 10's gl=on
                    // console disables between a blob's scanout and its update).
                    if let Some(export) = self.imports.last() {
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
            // Taken only if nothing follows within DISABLE_GRACE (settle_disable).
            QemuEvent::Disable => {
                self.disabled_at.get_or_insert_with(Instant::now);
            }
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
                self.presented_at = None;
                self.hidden = false;
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
                    if let Err(error) = self.console.set_ui_info(ui_info(width, height)) {
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
                mapping: _,
                path,
            } => {
                let before = self.stats.frames.bytes;
                match self
                    .presenter
                    .show(export, &self.damage, &mut self.stats.frames)
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
        self.presented_at = Some(Instant::now());
        self.stats.presented(path);
        Ok(true)
    }

    /// A `Disable` that nothing followed for [`DISABLE_GRACE`] turns the display off.
    /// The imports stay: an UpdateDMABUF may show the last one again. A zero-copy
    /// window keeps its presenter and its last picture until the next scanout; a wl_shm
    /// one goes black.
    fn settle_disable(&mut self) -> Result<(), Error> {
        if self
            .disabled_at
            .is_none_or(|at| at.elapsed() < DISABLE_GRACE)
        {
            return Ok(());
        }
        self.disabled_at = None;
        if self.presenter.is_zero_copy() {
            self.shown = Shown::Off;
            Ok(())
        } else {
            self.show(Shown::Off)
        }
    }

    /// A window with no frame callback for [`HIDDEN_AFTER`] is taken as hidden
    /// (minimised, on another workspace, covered): its compositor will not call back
    /// until it shows again, and a guest waiting on the acks would stall. QEMU's updates
    /// are then answered without a callback; the damage is kept and drawn once the
    /// window shows again.
    fn answer_if_hidden(&mut self) {
        if self
            .presented_at
            .is_none_or(|at| at.elapsed() < HIDDEN_AFTER)
        {
            return;
        }
        if self.presented.is_empty() && self.waiting.is_empty() {
            return;
        }
        if !self.hidden {
            self.hidden = true;
            println!(
                "viewer: console {}: no frame callback for {} ms (window hidden?): \
                 answering QEMU without one until it shows again",
                self.id,
                HIDDEN_AFTER.as_millis()
            );
        }
        for ack in self.presented.drain(..).chain(self.waiting.drain(..)) {
            ack.complete();
        }
        // The presented frame's wait ends here; coalesced updates never got a frame.
        if let Some(since) = self.presented_since.take() {
            self.stats.latencies.push(since.elapsed());
        }
        self.waiting_since = None;
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
        let presenter = self.presenter.name();
        self.stats
            .print(self.id, &self.imports, presenter, wall, cpu);
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
    if let QemuOutput::Kms(device) = &args.output {
        #[cfg(feature = "kms")]
        return kms::run(&args, device.as_deref());
        #[cfg(not(feature = "kms"))]
        return Err(format!(
            "--output kms{}: this viewer was built without the `kms` feature",
            device
                .as_ref()
                .map(|d| format!(":{}", d.display()))
                .unwrap_or_default()
        )
        .into());
    }
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
            head.answer_if_hidden();
            head.settle_disable()?;
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
            type_keys(&heads[0].console, &args.send_keys)?;
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
