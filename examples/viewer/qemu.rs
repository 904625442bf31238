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

use std::time::Duration;

use guestfb::format::PixelFormat;
use guestfb::import::convert::{self, Dest, DestFormat, Source, SourcePlane};
use guestfb::present::wayland::{PresenterEvent, PresenterOptions, ShmPresenter};
use guestfb::rect::Rect;
use guestfb::source::qemu::{
    ListenerOptions, MouseButton, QemuAddress, QemuConsole, QemuDisplay, QemuEvent, QemuListener,
    SharedFrame, UiInfo,
};

type Error = Box<dyn std::error::Error>;

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

/// One console in one window.
struct Head {
    id: u32,
    console: QemuConsole,
    listener: QemuListener,
    presenter: ShmPresenter,
    /// The current scanout; `None` while the display is off (shown black).
    frame: Option<SharedFrame>,
    /// Damage not yet presented, in frame pixels.
    damage: Vec<Rect>,
    /// Acks of the coalesced updates, not yet presented.
    waiting: Vec<guestfb::source::qemu::FrameToken>,
    /// Acks of the presented frame: completed at its frame callback.
    presented: Vec<guestfb::source::qemu::FrameToken>,
    frames: u64,
    ui_info_refused: bool,
}

impl Head {
    fn open(display: &QemuDisplay, id: u32, vm: &str, map: bool) -> Result<Self, Error> {
        let console = display.console(id)?;
        let info = console.info()?;
        let listener = console.attach(ListenerOptions {
            map,
            dmabuf2: false,
        })?;
        let mut options =
            PresenterOptions::new(info.width.clamp(1, 16384), info.height.clamp(1, 16384));
        options.title = format!("guestfb: {vm} console {id} ({})", info.label);
        let presenter = ShmPresenter::connect(options)?;
        println!(
            "viewer: QEMU console {id} ({}, {}x{}) attached, {} transport",
            info.label,
            info.width,
            info.height,
            if map { "shared-memory" } else { "pixel-data" }
        );
        Ok(Self {
            id,
            console,
            listener,
            presenter,
            frame: None,
            damage: vec![Rect::full(info.width.max(1), info.height.max(1))],
            waiting: Vec::new(),
            presented: Vec::new(),
            frames: 0,
            ui_info_refused: false,
        })
    }

    /// A new scanout: resize the window's frame and repaint all of it.
    fn scanout(&mut self, frame: Option<SharedFrame>) -> Result<(), Error> {
        let (width, height) = match &frame {
            Some(frame) => {
                let frame = frame.lock();
                (frame.width(), frame.height())
            }
            None => (self.presenter.frame_width(), self.presenter.frame_height()),
        };
        self.presenter
            .set_frame(width.max(1), height.max(1), PixelFormat::Xrgb8888)?;
        self.frame = frame;
        self.damage = vec![Rect::full(width.max(1), height.max(1))];
        Ok(())
    }

    /// Handles one QEMU event. `Err` ends the viewer (QEMU went away).
    fn on_qemu(&mut self, event: QemuEvent) -> Result<(), Error> {
        match event {
            QemuEvent::Scanout { frame } | QemuEvent::ScanoutMap { frame } => {
                self.scanout(Some(frame))?
            }
            QemuEvent::Update { frame, rect, ack } | QemuEvent::UpdateMap { frame, rect, ack } => {
                if !self.frame.as_ref().is_some_and(|f| f.same_as(&frame)) {
                    // An update of a surface we have not seen as a scanout: adopt it.
                    self.scanout(Some(frame))?;
                }
                self.damage.push(rect);
                self.waiting.push(ack);
            }
            QemuEvent::ScanoutDmabuf { .. } => {
                eprintln!(
                    "viewer: console {}: QEMU sent a dma-buf scanout (gl=on); this viewer \
                     shows QEMU only on the gl=off path: start QEMU with gl=off",
                    self.id
                );
            }
            // Dropping the ack completes it: nothing to draw.
            QemuEvent::UpdateDmabuf { .. } => {}
            QemuEvent::Disable => self.scanout(None)?,
            QemuEvent::CursorDefine { cursor } => {
                if let Err(error) = self.presenter.set_cursor_image(
                    cursor.width,
                    cursor.height,
                    cursor.hot_x,
                    cursor.hot_y,
                    &cursor.argb,
                ) {
                    eprintln!("viewer: console {}: cursor not shown: {error}", self.id);
                }
            }
            QemuEvent::MouseSet { visible, .. } => self.presenter.set_cursor_visible(visible)?,
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
                Ok(())
            }
            PresenterEvent::Configure { .. } => {
                if let (Some((width, height)), false) =
                    (self.presenter.preferred_frame_size(), self.ui_info_refused)
                {
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
        let frame_lock = self.frame.as_ref().map(|f| f.lock());
        let Some(mut target) = self.presenter.next_buffer()? else {
            return Ok(false);
        };
        let (width, height) = (target.width(), target.height());
        let repair: Vec<Rect> = target
            .repair_rects(&self.damage)
            .into_iter()
            .filter_map(|r| r.clip(width, height))
            .collect();
        let stride = target.stride() as usize;
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
                if let Err(error) = convert::blit(&source, &mut dest, &repair) {
                    eprintln!("viewer: console {}: frame not shown: {error}", self.id);
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
        target.present(&self.damage)?;
        drop(frame_lock);
        self.damage.clear();
        // Acked at this frame's callback: QEMU waits until the picture is on screen.
        self.presented.append(&mut self.waiting);
        self.frames += 1;
        Ok(true)
    }
}

/// Shows QEMU's console(s) until the windows close or QEMU goes away (an error).
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
        heads.push(Head::open(&display, id, &vm, args.map)?);
    }
    let mut keys_sent = args.send_keys.is_empty();
    loop {
        wait_for_any(&heads)?;
        for head in &mut heads {
            for event in head.presenter.dispatch(Some(Duration::ZERO))? {
                head.on_window(event)?;
            }
            while let Some(event) = head.listener.try_recv() {
                head.on_qemu(event)?;
            }
            if head.draw()? && head.frames == 1 {
                println!("viewer: console {}: first frame shown", head.id);
            }
        }
        if heads.iter().any(|h| h.presenter.is_closed()) {
            println!("viewer: window closed");
            return Ok(());
        }
        if !keys_sent && heads[0].frames > 0 {
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
