//! QEMU as a frame source, through its D-Bus display (`-display dbus`).
//!
//! ```text
//! QemuDisplay::connect(bus)  ── org.qemu /org/qemu/Display1/{VM,Console_N}
//!   ├─ consoles()            ── Label, Head, Type, Width, Height, Interfaces
//!   └─ console(id) → QemuConsole
//!        ├─ attach(options)  ── RegisterListener(h) with one end of a socketpair;
//!        │                      the other end serves org.qemu.Display1.Listener
//!        │                      (p2p server) → QemuListener → QemuEvent
//!        ├─ key_press/release(evdev code) ── Keyboard.Press/Release(qnum)
//!        ├─ pointer_motion / button / wheel ── Mouse.*
//!        └─ set_ui_info      ── Console.SetUIInfo (resize requests)
//! ```
//!
//! The listener thread answers QEMU's update calls only after the viewer completed the
//! event's [`FrameToken`] (see [`QemuListener`]), which is QEMU's back-pressure: with gl=on
//! the guest is held until the frame is shown.
//!
//! Everything QEMU sends is checked (sizes, strides, rectangles, fd sizes) with 64-bit
//! arithmetic before any memory is touched; a bad message is answered with a D-Bus
//! error and reported as [`QemuEvent::Rejected`].

mod keymap;
pub(crate) mod listener;
pub mod pixman;

use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use zbus::blocking::{connection, Connection};
use zbus::zvariant::{self, OwnedValue};

use crate::format::PixelFormat;
use crate::sys::SysError;

pub use keymap::{evdev_to_qnum, MouseButton};
pub use listener::{
    Cursor, Frame, FrameToken, ListenerOptions, QemuEvent, QemuListener, Recv, SharedFrame,
    DMABUF2_IFACE, LISTENER_IFACE, LISTENER_PATH, MAP_IFACE, MAX_CURSOR, MAX_DIMENSION,
};

/// QEMU's well-known name on a bus.
pub const BUS_NAME: &str = "org.qemu";
/// Root of QEMU's display objects.
pub const DISPLAY_ROOT: &str = "/org/qemu/Display1";

/// Errors of the QEMU source, each with the numbers that were wrong.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// Connecting to the bus or to QEMU failed.
    #[error("cannot connect to the QEMU display at {address}: {source}")]
    Connect {
        /// The address tried.
        address: String,
        /// zbus's error.
        source: Box<zbus::Error>,
    },
    /// A D-Bus call to QEMU failed.
    #[error("D-Bus call {method} to QEMU failed: {source}")]
    Call {
        /// Interface and method.
        method: String,
        /// zbus's error (QEMU's error reply included).
        source: Box<zbus::Error>,
    },
    /// The peer-to-peer handshake with QEMU on the listener socket failed.
    #[error("listener D-Bus handshake with QEMU failed: {source}")]
    Handshake {
        /// zbus's error.
        source: Box<zbus::Error>,
    },
    /// A socket operation for the listener failed.
    #[error("{op} failed: {source}")]
    Socket {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// QEMU has no such console.
    #[error("QEMU has no console {id} (consoles: {available:?})")]
    NoConsole {
        /// The console asked for.
        id: u32,
        /// The consoles QEMU lists.
        available: Vec<u32>,
    },
    /// A message body did not have the documented signature.
    #[error("QEMU's {method} call has an unexpected body: {source}")]
    BadBody {
        /// The method.
        method: String,
        /// zbus's error.
        source: Box<zbus::Error>,
    },
    /// QEMU called a method the listener does not serve (or did not advertise).
    #[error("no method {interface}.{member} on the listener")]
    UnknownMethod {
        /// The interface named by the call.
        interface: String,
        /// The method.
        member: String,
    },
    /// A property that does not exist was asked for.
    #[error("no property {interface}.{name} on the listener")]
    UnknownProperty {
        /// The interface.
        interface: String,
        /// The property.
        name: String,
    },
    /// A pixman format guestfb does not handle.
    #[error("unsupported pixman format {code:#010x}")]
    UnsupportedPixman {
        /// The pixman code.
        code: u32,
    },
    /// A dma-buf scanout in a DRM fourcc guestfb does not show.
    #[error("{method}: unsupported DRM fourcc {fourcc:#010x} ({name}); guestfb shows {supported}")]
    UnsupportedFourcc {
        /// The method.
        method: &'static str,
        /// The fourcc sent.
        fourcc: u32,
        /// Its four characters.
        name: String,
        /// The formats guestfb shows.
        supported: String,
    },
    /// Zero or too large a size.
    #[error("bad size {width}x{height} (each side 1..={max})")]
    BadSize {
        /// Width sent.
        width: u32,
        /// Height sent.
        height: u32,
        /// The largest side accepted.
        max: u32,
    },
    /// A stride shorter than a row.
    #[error("stride {stride} < width {width} × {bytes_per_pixel} bytes")]
    StrideTooSmall {
        /// Stride sent.
        stride: u32,
        /// Width in pixels (samples).
        width: u32,
        /// Bytes per pixel.
        bytes_per_pixel: u32,
    },
    /// Pixel data shorter than `stride × height`.
    #[error("{method} data has {len} bytes, stride {stride} × height {height} needs {need}")]
    DataTooShort {
        /// The method.
        method: &'static str,
        /// Bytes received.
        len: u64,
        /// Bytes needed.
        need: u64,
        /// Stride sent.
        stride: u32,
        /// Rows.
        height: u32,
    },
    /// A shared-memory scanout past the end of its fd.
    #[error("ScanoutMap offset {offset} + {len} bytes exceeds the {kind}'s size {size}")]
    MapOutOfRange {
        /// Offset sent.
        offset: u64,
        /// `stride × height`.
        len: u64,
        /// The fd's size.
        size: u64,
        /// What the fd is (`memfd`, `dma-buf`).
        kind: &'static str,
    },
    /// QEMU's surface memfd, not sealed against shrinking, ended before the surface
    /// did when it was read: it was truncated after `ScanoutMap`.
    #[error(
        "QEMU's surface memfd holds {size} bytes, but the surface needs bytes {offset}..{}: \
         it was truncated after ScanoutMap (read with pread, so no SIGBUS); the update is \
         refused until a new scanout",
        .offset + .len
    )]
    MemfdShrank {
        /// Offset of the read in the memfd.
        offset: u64,
        /// Bytes read.
        len: u64,
        /// The memfd's size now.
        size: u64,
    },
    /// An fd that is neither a memfd nor a dma-buf where QEMU sends shared memory.
    #[error(
        "{method} sent a {what}, which is neither a memfd nor a dma-buf: nothing a display \
         can map or import"
    )]
    NotShareable {
        /// The method.
        method: &'static str,
        /// What the fd is (`pipe`, `socket`, `directory`…).
        what: &'static str,
    },
    /// A rectangle outside the frame.
    #[error("rect {width}x{height}+{x}+{y} is outside the {frame_width}x{frame_height} frame")]
    RectOutOfBounds {
        /// Left.
        x: i64,
        /// Top.
        y: i64,
        /// Width.
        width: i64,
        /// Height.
        height: i64,
        /// Frame width.
        frame_width: u32,
        /// Frame height.
        frame_height: u32,
    },
    /// An update before any matching scanout.
    #[error("{method} before a matching scanout")]
    NoScanout {
        /// The method.
        method: &'static str,
    },
    /// An `Update` in another format than its `Scanout`.
    #[error("Update in {update} while the scanout is {scanout}")]
    FormatChanged {
        /// The scanout's format.
        scanout: PixelFormat,
        /// The update's format.
        update: PixelFormat,
    },
    /// Inconsistent dma-buf plane lists.
    #[error(
        "dma-buf scanout with {num_planes} planes (1..=4) but {fds} fds, {offsets} offsets, \
         {strides} strides"
    )]
    BadPlanes {
        /// `num_planes` sent.
        num_planes: u32,
        /// Fds received.
        fds: usize,
        /// Offsets received.
        offsets: usize,
        /// Strides received.
        strides: usize,
    },
    /// A cursor with a bad size or too little data.
    #[error("cursor {width}x{height} (each side 1..={max}) with {len} bytes of data")]
    BadCursor {
        /// Width sent.
        width: i32,
        /// Height sent.
        height: i32,
        /// Bytes received.
        len: usize,
        /// Largest side accepted.
        max: u32,
    },
    /// A Linux key code with no QEMU key.
    #[error("evdev key code {code} has no QEMU key number")]
    UnknownKey {
        /// The evdev code.
        code: u32,
    },
    /// A kernel interface failed (fstat, mmap of the shared surface).
    #[error(transparent)]
    Sys(#[from] SysError),
}

impl QemuError {
    pub(crate) fn socket(op: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Socket { op, source }
    }

    fn call(method: &str) -> impl FnOnce(zbus::Error) -> Self + '_ {
        move |source| Self::Call {
            method: method.to_owned(),
            source: Box::new(source),
        }
    }

    /// The D-Bus error name this error is answered with.
    pub(crate) fn dbus_error_name(&self) -> &'static str {
        match self {
            Self::UnknownMethod { .. } => "org.freedesktop.DBus.Error.UnknownMethod",
            Self::UnknownProperty { .. } => "org.freedesktop.DBus.Error.UnknownProperty",
            Self::Sys(_) | Self::Socket { .. } => "org.freedesktop.DBus.Error.Failed",
            _ => "org.freedesktop.DBus.Error.InvalidArgs",
        }
    }
}

/// How to reach QEMU's display.
#[derive(Debug)]
pub enum QemuAddress {
    /// The session bus (`DBUS_SESSION_BUS_ADDRESS`), QEMU as `org.qemu`.
    Session,
    /// A bus at this D-Bus address (`unix:path=…`), QEMU as `org.qemu`.
    Bus(String),
    /// A peer-to-peer connection QEMU already accepted (`-display dbus,p2p=yes` and
    /// QMP `add_client protocol=@dbus-display`): this process's end of the socket.
    P2p(UnixStream),
}

impl QemuAddress {
    /// Parses a command-line spelling: empty or `session` for the session bus,
    /// anything else as a bus address (`unix:path=/run/…`).
    pub fn parse(text: &str) -> Self {
        match text {
            "" | "session" => Self::Session,
            address => Self::Bus(address.to_owned()),
        }
    }
}

/// What kind of console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleKind {
    /// A graphic device head.
    Graphic,
    /// A text console (serial, monitor).
    Text,
    /// Something newer.
    Other(String),
}

/// A console as QEMU describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleInfo {
    /// The N of `/org/qemu/Display1/Console_N`.
    pub id: u32,
    /// User-visible name ("VGA").
    pub label: String,
    /// Head number on its device.
    pub head: u32,
    /// Graphic or text.
    pub kind: ConsoleKind,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Device address ("pci/0000/02.0").
    pub device_address: String,
    /// Extra interfaces (Keyboard, Mouse, MultiTouch …).
    pub interfaces: Vec<String>,
}

/// A resize request for [`QemuConsole::set_ui_info`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UiInfo {
    /// Physical width in millimetres.
    pub width_mm: u16,
    /// Physical height in millimetres.
    pub height_mm: u16,
    /// Horizontal offset of this head, pixels.
    pub xoff: i32,
    /// Vertical offset of this head, pixels.
    pub yoff: i32,
    /// Wanted width in pixels.
    pub width: u32,
    /// Wanted height in pixels.
    pub height: u32,
}

/// A connection to QEMU's display (the bus, or a p2p connection to QEMU).
#[derive(Debug, Clone)]
pub struct QemuDisplay {
    conn: Connection,
    destination: Option<String>,
    address: String,
}

impl QemuDisplay {
    /// Connects to QEMU.
    pub fn connect(address: QemuAddress) -> Result<Self, QemuError> {
        let (builder, destination, name) = match address {
            QemuAddress::Session => (
                connection::Builder::session(),
                Some(BUS_NAME.to_owned()),
                "session bus".to_owned(),
            ),
            QemuAddress::Bus(address) => (
                connection::Builder::address(address.as_str()),
                Some(BUS_NAME.to_owned()),
                address,
            ),
            // Deprecated only in favour of the async-io stream type (no tokio here).
            #[allow(deprecated)]
            QemuAddress::P2p(stream) => (
                Ok(connection::Builder::unix_stream(stream).p2p()),
                None,
                "peer-to-peer socket".to_owned(),
            ),
        };
        let conn = builder
            .and_then(|b| b.build())
            .map_err(|source| QemuError::Connect {
                address: name.clone(),
                source: Box::new(source),
            })?;
        Ok(Self {
            conn,
            destination,
            address: name,
        })
    }

    /// Where this display was reached (for messages).
    pub fn address(&self) -> &str {
        &self.address
    }

    fn call<B, R>(&self, path: &str, iface: &str, method: &str, body: &B) -> Result<R, QemuError>
    where
        B: serde::Serialize + zvariant::DynamicType,
        R: for<'d> zvariant::DynamicDeserialize<'d>,
    {
        let what = format!("{iface}.{method} on {path}");
        let reply = self
            .conn
            .call_method(self.destination.as_deref(), path, Some(iface), method, body)
            .map_err(QemuError::call(&what))?;
        reply.body().deserialize().map_err(QemuError::call(&what))
    }

    fn property<T>(&self, path: &str, iface: &str, name: &str) -> Result<T, QemuError>
    where
        T: TryFrom<OwnedValue>,
        T::Error: Into<zbus::Error>,
    {
        let value: OwnedValue = self.call(
            path,
            "org.freedesktop.DBus.Properties",
            "Get",
            &(iface, name),
        )?;
        T::try_from(value).map_err(|e| QemuError::Call {
            method: format!("Get {iface}.{name} on {path}"),
            source: Box::new(e.into()),
        })
    }

    /// The VM's name.
    pub fn vm_name(&self) -> Result<String, QemuError> {
        self.property(
            &format!("{DISPLAY_ROOT}/VM"),
            "org.qemu.Display1.VM",
            "Name",
        )
    }

    /// The console ids QEMU lists.
    pub fn console_ids(&self) -> Result<Vec<u32>, QemuError> {
        self.property(
            &format!("{DISPLAY_ROOT}/VM"),
            "org.qemu.Display1.VM",
            "ConsoleIDs",
        )
    }

    /// Every console, graphic and text.
    pub fn consoles(&self) -> Result<Vec<ConsoleInfo>, QemuError> {
        self.console_ids()?
            .into_iter()
            .map(|id| self.console_unchecked(id).info())
            .collect()
    }

    /// The graphic consoles (one per device head): the multi-head view.
    pub fn graphic_consoles(&self) -> Result<Vec<ConsoleInfo>, QemuError> {
        Ok(self
            .consoles()?
            .into_iter()
            .filter(|c| c.kind == ConsoleKind::Graphic)
            .collect())
    }

    /// A console by id.
    pub fn console(&self, id: u32) -> Result<QemuConsole, QemuError> {
        let available = self.console_ids()?;
        if !available.contains(&id) {
            return Err(QemuError::NoConsole { id, available });
        }
        Ok(self.console_unchecked(id))
    }

    fn console_unchecked(&self, id: u32) -> QemuConsole {
        QemuConsole {
            display: self.clone(),
            id,
            path: format!("{DISPLAY_ROOT}/Console_{id}"),
            last_pointer: std::sync::Arc::new(Mutex::new(None)),
        }
    }
}

const CONSOLE_IFACE: &str = "org.qemu.Display1.Console";
const KEYBOARD_IFACE: &str = "org.qemu.Display1.Keyboard";
const MOUSE_IFACE: &str = "org.qemu.Display1.Mouse";

/// One console: attach listeners, send input, request sizes.
#[derive(Debug, Clone)]
pub struct QemuConsole {
    display: QemuDisplay,
    id: u32,
    path: String,
    last_pointer: std::sync::Arc<Mutex<Option<(u32, u32)>>>,
}

impl QemuConsole {
    /// The console id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The console's properties, read now.
    pub fn info(&self) -> Result<ConsoleInfo, QemuError> {
        let get_all: std::collections::HashMap<String, OwnedValue> = self.display.call(
            &self.path,
            "org.freedesktop.DBus.Properties",
            "GetAll",
            &(CONSOLE_IFACE,),
        )?;
        let text = |key: &str| -> String {
            get_all
                .get(key)
                .and_then(|v| v.try_clone().ok())
                .and_then(|v| String::try_from(v).ok())
                .unwrap_or_default()
        };
        let number = |key: &str| -> u32 {
            get_all
                .get(key)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0)
        };
        let interfaces = get_all
            .get("Interfaces")
            .and_then(|v| v.try_clone().ok())
            .and_then(|v| Vec::<String>::try_from(v).ok())
            .unwrap_or_default();
        let kind = match text("Type").as_str() {
            "Graphic" => ConsoleKind::Graphic,
            "Text" => ConsoleKind::Text,
            other => ConsoleKind::Other(other.to_owned()),
        };
        Ok(ConsoleInfo {
            id: self.id,
            label: text("Label"),
            head: number("Head"),
            kind,
            width: number("Width"),
            height: number("Height"),
            device_address: text("DeviceAddress"),
            interfaces,
        })
    }

    /// Registers a listener on this console and starts receiving its events. QEMU
    /// sends the current picture right away (a `Scanout` or `ScanoutMap`).
    pub fn attach(&self, options: ListenerOptions) -> Result<QemuListener, QemuError> {
        let (ours, theirs) = UnixStream::pair().map_err(QemuError::socket("socketpair"))?;
        // The listener thread must be serving before QEMU answers RegisterListener:
        // QEMU authenticates and reads our properties inside that call.
        let display = self.display.clone();
        let path = self.path.clone();
        let surface_size: listener::SurfaceSize = Box::new(move || {
            let width = display.property(&path, CONSOLE_IFACE, "Width").ok()?;
            let height = display.property(&path, CONSOLE_IFACE, "Height").ok()?;
            Some((width, height))
        });
        let listener = QemuListener::serve_with_size(ours, options, Some(surface_size))?;
        let fd = zvariant::Fd::from(&theirs);
        let () = self
            .display
            .call(&self.path, CONSOLE_IFACE, "RegisterListener", &(fd,))?;
        drop(theirs);
        Ok(listener)
    }

    /// Presses a key given as a Linux evdev code (`KEY_ESC` = 1).
    pub fn key_press(&self, evdev_code: u32) -> Result<(), QemuError> {
        let qnum = evdev_to_qnum(evdev_code).ok_or(QemuError::UnknownKey { code: evdev_code })?;
        self.key_qnum(qnum, true)
    }

    /// Releases a key given as a Linux evdev code.
    pub fn key_release(&self, evdev_code: u32) -> Result<(), QemuError> {
        let qnum = evdev_to_qnum(evdev_code).ok_or(QemuError::UnknownKey { code: evdev_code })?;
        self.key_qnum(qnum, false)
    }

    /// Presses or releases a key given as a QEMU key number.
    pub fn key_qnum(&self, qnum: u32, pressed: bool) -> Result<(), QemuError> {
        let method = if pressed { "Press" } else { "Release" };
        self.display
            .call(&self.path, KEYBOARD_IFACE, method, &(qnum,))
    }

    /// Whether the guest's pointer takes absolute positions (a tablet) right now.
    pub fn mouse_is_absolute(&self) -> Result<bool, QemuError> {
        self.display.property(&self.path, MOUSE_IFACE, "IsAbsolute")
    }

    /// Moves the pointer to (x, y) in console pixels: `SetAbsPosition` when the mouse
    /// is absolute, otherwise `RelMotion` by the distance from the last position sent
    /// (nothing is sent for the first position of a relative mouse).
    pub fn pointer_motion(&self, x: u32, y: u32) -> Result<(), QemuError> {
        let last = {
            let mut last = self
                .last_pointer
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            last.replace((x, y))
        };
        if self.mouse_is_absolute()? {
            return self
                .display
                .call(&self.path, MOUSE_IFACE, "SetAbsPosition", &(x, y));
        }
        match last {
            Some((lx, ly)) => {
                let dx = (i64::from(x) - i64::from(lx)).clamp(i32::MIN.into(), i32::MAX.into());
                let dy = (i64::from(y) - i64::from(ly)).clamp(i32::MIN.into(), i32::MAX.into());
                self.mouse_rel(dx as i32, dy as i32)
            }
            None => Ok(()),
        }
    }

    /// Relative motion (a relative mouse only; QEMU refuses it for an absolute one).
    pub fn mouse_rel(&self, dx: i32, dy: i32) -> Result<(), QemuError> {
        if dx == 0 && dy == 0 {
            return Ok(());
        }
        self.display
            .call(&self.path, MOUSE_IFACE, "RelMotion", &(dx, dy))
    }

    /// Presses or releases a mouse button.
    pub fn button(&self, button: MouseButton, pressed: bool) -> Result<(), QemuError> {
        let method = if pressed { "Press" } else { "Release" };
        self.display
            .call(&self.path, MOUSE_IFACE, method, &(button.number(),))
    }

    /// Scrolls by `steps` wheel notches (negative: up), each a press and release of the
    /// wheel button.
    pub fn wheel(&self, steps: i32) -> Result<(), QemuError> {
        let button = if steps < 0 {
            MouseButton::WheelUp
        } else {
            MouseButton::WheelDown
        };
        for _ in 0..steps.unsigned_abs() {
            self.button(button, true)?;
            self.button(button, false)?;
        }
        Ok(())
    }

    /// Asks the guest for a new size (`SetUIInfo`), e.g. when the window is resized.
    pub fn set_ui_info(&self, info: UiInfo) -> Result<(), QemuError> {
        self.display.call(
            &self.path,
            CONSOLE_IFACE,
            "SetUIInfo",
            &(
                info.width_mm,
                info.height_mm,
                info.xoff,
                info.yoff,
                info.width,
                info.height,
            ),
        )
    }
}
