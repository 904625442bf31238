//! The server side of QEMU's peer-to-peer listener connection: serves
//! `org.qemu.Display1.Listener` (and, when enabled, `…Listener.Unix.Map` and
//! `…Listener.Unix.ScanoutDMABUF2`) on `/org/qemu/Display1/Listener` and turns each call
//! into a [`QemuEvent`].
//!
//! One thread per listener reads the messages in order. Calls that show a new picture
//! (`Update`, `UpdateMap`, `UpdateDMABUF`) carry a [`FrameToken`]; the thread answers
//! such a call, and reads the next message, only once the token is completed (or
//! dropped). QEMU waits for the answer to `UpdateDMABUF` before it lets the guest draw
//! again (`graphic_hw_gl_block`), so the guest cannot overwrite a frame the viewer is
//! still showing, and at most one frame is ever in flight.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use zbus::blocking::{connection, Connection};
use zbus::message::{Message, Type as MessageType};
use zbus::zvariant::{self, OwnedValue, Value};

use super::pixman;
use super::QemuError;
use crate::export::{FramebufferDesc, PlaneDesc};
use crate::format::{Modifier, PixelFormat};
use crate::rect::Rect;
use crate::sys;
use crate::sys::dmabuf::{Access, Mapping};
use crate::sys::fdkind::{self, FdKind};
use crate::sys::memfd::{Memfd, Seals};
use crate::sys::volatile::VolatileSlice;

/// The object path QEMU calls the listener on.
pub const LISTENER_PATH: &str = "/org/qemu/Display1/Listener";
/// The base listener interface.
pub const LISTENER_IFACE: &str = "org.qemu.Display1.Listener";
/// Shared-memory scanouts (`ScanoutMap` / `UpdateMap`).
pub const MAP_IFACE: &str = "org.qemu.Display1.Listener.Unix.Map";
/// Multi-plane dma-buf scanouts with a visible rect (`ScanoutDMABUF2`).
pub const DMABUF2_IFACE: &str = "org.qemu.Display1.Listener.Unix.ScanoutDMABUF2";

/// Largest width or height accepted from QEMU (its own limit is 16384).
pub const MAX_DIMENSION: u32 = 16384;
/// Largest cursor side accepted.
pub const MAX_CURSOR: u32 = 512;

/// What the listener offers QEMU. QEMU picks its transport from the listener's
/// `Interfaces` property, which lists exactly the optional interfaces enabled here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerOptions {
    /// Offer `org.qemu.Display1.Listener.Unix.Map`: QEMU shares its surface memfd once
    /// and sends only damage rectangles (no pixels over the socket).
    pub map: bool,
    /// Offer `org.qemu.Display1.Listener.Unix.ScanoutDMABUF2` (gl=on, multi-plane).
    pub dmabuf2: bool,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self {
            map: true,
            dmabuf2: true,
        }
    }
}

impl ListenerOptions {
    /// The optional interfaces advertised in the `Interfaces` property.
    pub fn interfaces(&self) -> Vec<String> {
        let mut list = Vec::new();
        if self.map {
            list.push(MAP_IFACE.to_owned());
        }
        if self.dmabuf2 {
            list.push(DMABUF2_IFACE.to_owned());
        }
        list
    }
}

/// Where a frame's pixels live.
#[derive(Debug)]
enum Storage {
    /// Copied out of `Scanout`/`Update` messages into a buffer guestfb owns.
    Owned(Vec<u8>),
    /// QEMU's surface memfd, mapped read-only once at `ScanoutMap`.
    Mapped {
        mapping: Mapping,
        /// The memfd and the surface's offset in it, kept when it is sealed the way
        /// udmabuf needs (`F_SEAL_SHRINK`, no write seal): then it can be exported.
        sealed: Option<(Arc<Memfd>, u64)>,
    },
}

/// A CPU-visible picture from QEMU: width × height pixels of `format`, rows `stride`
/// bytes apart, top row first.
#[derive(Debug)]
pub struct Frame {
    width: u32,
    height: u32,
    stride: u32,
    format: PixelFormat,
    pixman: u32,
    storage: Storage,
}

impl Frame {
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes from one row to the next.
    pub fn stride(&self) -> u32 {
        self.stride
    }

    /// Pixel format.
    pub fn format(&self) -> PixelFormat {
        self.format
    }

    /// The pixman code QEMU named the format with.
    pub fn pixman_format(&self) -> u32 {
        self.pixman
    }

    /// True when the pixels are QEMU's own surface memory (the `Unix.Map` path): QEMU
    /// may change them at any time (which is why [`Frame::bytes`] is a view).
    pub fn is_shared_memory(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }

    /// QEMU's surface memfd and the frame's offset in it, when the memfd is sealed
    /// against shrinking and not write-sealed: host memory guestfb's `Exporter` can
    /// turn into a udmabuf (zero copy on the display's side). `None` for pixel-data
    /// frames and for unsealed memfds (QEMU 10's own surfaces are unsealed), which
    /// only the copy path can show.
    pub fn sealed_memfd(&self) -> Option<(&Arc<Memfd>, u64)> {
        match &self.storage {
            Storage::Mapped {
                sealed: Some((memfd, offset)),
                ..
            } => Some((memfd, *offset)),
            _ => None,
        }
    }

    /// All `stride × height` bytes: a view, because a mapped frame is QEMU's surface
    /// memory, which QEMU (and the guest's device model) may write at any time.
    pub fn bytes(&self) -> VolatileSlice<'_> {
        match &self.storage {
            Storage::Owned(bytes) => VolatileSlice::from(&bytes[..]),
            Storage::Mapped { mapping, .. } => mapping.bytes(),
        }
    }

    /// The visible bytes of row `y` (`width × bytes per pixel`), `None` past the end.
    pub fn row(&self, y: u32) -> Option<VolatileSlice<'_>> {
        if y >= self.height {
            return None;
        }
        let start = y as usize * self.stride as usize;
        let len = self.width as usize * self.format.bytes_per_pixel() as usize;
        self.bytes().subslice(start, len).ok()
    }

    /// The picture as tightly packed 8-bit R G B triples (for checks and PNG files).
    pub fn to_rgb(&self) -> Vec<u8> {
        let bpp = self.format.bytes_per_pixel() as usize;
        let mut out = Vec::with_capacity(self.width as usize * self.height as usize * 3);
        let mut row_bytes = Vec::new();
        for y in 0..self.height {
            if let Some(row) = self.row(y) {
                row_bytes.resize(row.len(), 0);
                if row.copy_to(&mut row_bytes).is_ok() {
                    for px in row_bytes.chunks_exact(bpp) {
                        out.extend_from_slice(&pixman::pixel_rgb(self.format, px));
                    }
                }
            }
        }
        out
    }
}

/// A [`Frame`] shared between the listener thread (which writes updates into owned
/// frames) and the viewer (which blits from it). Lock it for the length of a blit.
#[derive(Debug, Clone)]
pub struct SharedFrame(Arc<Mutex<Frame>>);

impl SharedFrame {
    fn new(frame: Frame) -> Self {
        Self(Arc::new(Mutex::new(frame)))
    }

    /// Locks the frame. A poisoned lock (a panicking reader) is taken over: the bytes
    /// are plain pixels, valid in any state.
    pub fn lock(&self) -> MutexGuard<'_, Frame> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether two handles share one frame (a new scanout makes a new frame).
    pub fn same_as(&self, other: &SharedFrame) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// One plane of a dma-buf scanout.
#[derive(Debug)]
pub struct DmaBufPlane {
    /// The dma-buf (owned: closed when the scanout is dropped).
    pub fd: OwnedFd,
    /// Byte offset of the plane in the dma-buf.
    pub offset: u32,
    /// Bytes per row.
    pub stride: u32,
}

/// A gl=on scanout: what an EGL import (`EGL_LINUX_DMA_BUF_EXT`) needs, with the
/// visible rect kept apart from the backing size (QEMU's `QemuDmaBuf`).
#[derive(Debug)]
pub struct DmaBufScanout {
    /// Planes, first plane first (1 to 4).
    pub planes: Vec<DmaBufPlane>,
    /// DRM fourcc code.
    pub fourcc: u32,
    /// Layout modifier: `Modifier::Invalid` means implicit (the old `ScanoutDMABUF`
    /// sends whatever QEMU got from EGL), `LINEAR` (0) is an explicit linear layout.
    pub modifier: Modifier,
    /// Backing buffer width in pixels (what to import).
    pub backing_width: u32,
    /// Backing buffer height in pixels.
    pub backing_height: u32,
    /// The part of the backing buffer that is the display (what to draw).
    pub visible: Rect,
    /// True when memory row 0 is the top of the picture; false: flip when drawing.
    /// (QEMU's own `y0_top` argument means the opposite and is inverted on receipt.)
    pub y0_top: bool,
    /// The D-Bus method that brought it: `ScanoutDMABUF` or `ScanoutDMABUF2` (gl=on),
    /// or `ScanoutMap` (gl=off, when QEMU's surface is a dma-buf: a virtio-gpu blob's
    /// udmabuf).
    pub method: &'static str,
    /// The dma-buf's exporter, from its fdinfo (`udmabuf`: guest RAM pages, pinned
    /// long-term by the kernel on Linux ≥ 6.11).
    pub exporter: String,
}

impl DmaBufScanout {
    /// The guestfb pixel format of the fourcc, when guestfb knows it.
    pub fn format(&self) -> Option<PixelFormat> {
        PixelFormat::from_fourcc(self.fourcc)
    }

    /// The scanout as a framebuffer description of a dma-buf (planes as offsets into
    /// it, no guest ranges), for [`ExportedFramebuffer::from_peer_dmabuf`]: every number
    /// is validated there against the dma-buf's size.
    ///
    /// [`ExportedFramebuffer::from_peer_dmabuf`]: crate::export::ExportedFramebuffer::from_peer_dmabuf
    pub fn framebuffer_desc(&self) -> FramebufferDesc {
        FramebufferDesc {
            fourcc: self.fourcc,
            modifier: self.modifier.raw(),
            width: self.backing_width,
            height: self.backing_height,
            visible: Some(self.visible),
            planes: self
                .planes
                .iter()
                .map(|plane| PlaneDesc {
                    offset: u64::from(plane.offset),
                    stride: plane.stride,
                })
                .collect(),
            y0_top: self.y0_top,
            ranges: Vec::new(),
        }
    }
}

/// A cursor image: `width × height` pixels of 32-bit ARGB in native byte order, i.e.
/// [`PixelFormat::Argb8888`] (bytes B G R A), rows packed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Hot spot, from the left.
    pub hot_x: i32,
    /// Hot spot, from the top.
    pub hot_y: i32,
    /// `width × height × 4` bytes.
    pub argb: Vec<u8>,
}

/// The "frame presented" signal of one update.
///
/// The listener answers QEMU's update call only when the token is completed, so QEMU
/// (for `UpdateDMABUF`, the guest) waits until the viewer has drawn the frame. Call
/// [`FrameToken::complete`] after presenting (after the compositor has the buffer, or
/// after the GL fence). Dropping a token completes it too: a viewer that discards an
/// event can never deadlock QEMU; it only gives up the back-pressure for that frame.
#[derive(Debug)]
pub struct FrameToken {
    done: Option<Sender<()>>,
}

impl FrameToken {
    fn new() -> (Self, Receiver<()>) {
        let (tx, rx) = mpsc::channel();
        (Self { done: Some(tx) }, rx)
    }

    /// The frame has been presented: let QEMU go on.
    pub fn complete(mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

impl Drop for FrameToken {
    fn drop(&mut self) {
        // Dropping the sender wakes the listener as completing does.
        self.done.take();
    }
}

/// What QEMU told the listener, in order.
#[derive(Debug)]
pub enum QemuEvent {
    /// A new picture with its pixels copied in (`Scanout`, gl=off without `Unix.Map`).
    /// Later [`QemuEvent::Update`]s write into this frame.
    Scanout {
        /// The frame (guestfb-owned pixels).
        frame: SharedFrame,
    },
    /// `rect` of the current [`QemuEvent::Scanout`] frame changed (the pixels are
    /// already in `frame`).
    Update {
        /// The frame written into.
        frame: SharedFrame,
        /// The damage.
        rect: Rect,
        /// Complete after presenting.
        ack: FrameToken,
    },
    /// A new picture in QEMU's shared surface memory (`Unix.Map`), mapped once.
    ScanoutMap {
        /// The frame (mapped memory).
        frame: SharedFrame,
    },
    /// `rect` of the mapped frame changed.
    UpdateMap {
        /// The mapped frame.
        frame: SharedFrame,
        /// The damage.
        rect: Rect,
        /// Complete after presenting.
        ack: FrameToken,
    },
    /// A new gl=on scanout (`ScanoutDMABUF` or `ScanoutDMABUF2`): import it.
    ScanoutDmabuf {
        /// The buffer description (owns the fds).
        scanout: DmaBufScanout,
    },
    /// `rect` of the dma-buf scanout changed: draw it. QEMU holds the guest until
    /// `ack` completes.
    UpdateDmabuf {
        /// The damage.
        rect: Rect,
        /// Complete after presenting.
        ack: FrameToken,
    },
    /// The display is off (guest blanked it or the scanout went away).
    Disable,
    /// A new cursor image.
    CursorDefine {
        /// The image and hot spot.
        cursor: Cursor,
    },
    /// The guest moved the cursor or changed its visibility.
    MouseSet {
        /// X position in pixels.
        x: i32,
        /// Y position in pixels.
        y: i32,
        /// Whether the cursor is shown.
        visible: bool,
    },
    /// QEMU sent something invalid; it got a D-Bus error back and the last good frame
    /// stays. The listener goes on.
    Rejected {
        /// The D-Bus method.
        method: String,
        /// What was wrong, with the numbers.
        error: QemuError,
    },
    /// The connection to QEMU is gone (QEMU exited, or the handshake failed). Last
    /// event of a listener.
    Disconnected {
        /// Why, for a log line.
        reason: String,
    },
}

/// A registered listener: receives [`QemuEvent`]s from its own thread.
///
/// For an event loop: poll [`AsFd::as_fd`] for readability, then call
/// [`QemuListener::try_recv`] until it returns `Ok(None)`. The fd is readable whenever an
/// event was queued since the last `try_recv`/`recv` drained it.
#[derive(Debug)]
pub struct QemuListener {
    events: Option<Receiver<QemuEvent>>,
    wake: UnixStream,
    socket: UnixStream,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    options: ListenerOptions,
}

/// Outcome of waiting for the next event.
#[derive(Debug)]
pub enum Recv {
    /// An event.
    Event(QemuEvent),
    /// Nothing arrived within the timeout.
    Timeout,
    /// The listener thread ended and every event has been read.
    Closed,
}

impl QemuListener {
    /// Serves the listener side on `stream`, one end of a socketpair whose other end
    /// QEMU received (`Console.RegisterListener`, or a VMM that hands the socket over
    /// some other way). Returns at once; the D-Bus handshake runs on the listener's
    /// thread and a failure arrives as [`QemuEvent::Disconnected`].
    pub fn serve(stream: UnixStream, options: ListenerOptions) -> Result<Self, QemuError> {
        Self::serve_with_size(stream, options, None)
    }

    /// [`QemuListener::serve`], asking `surface_size` for the new size when an `Update`
    /// does not fit the current surface (a surface switch QEMU did not announce).
    pub fn serve_with_size(
        stream: UnixStream,
        options: ListenerOptions,
        surface_size: Option<SurfaceSize>,
    ) -> Result<Self, QemuError> {
        let socket = stream
            .try_clone()
            .map_err(QemuError::socket("dup listener socket"))?;
        let (wake_tx, wake) = UnixStream::pair().map_err(QemuError::socket("socketpair"))?;
        wake_tx
            .set_nonblocking(true)
            .map_err(QemuError::socket("set_nonblocking"))?;
        wake.set_nonblocking(true)
            .map_err(QemuError::socket("set_nonblocking"))?;
        let (tx, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            options,
            surface_size,
            tx,
            wake: wake_tx,
            stop: stop.clone(),
            current: Current::None,
            last_dmabuf: None,
        };
        let thread = std::thread::Builder::new()
            .name("guestfb-qemu-listener".into())
            .spawn(move || worker.run(stream))
            .map_err(QemuError::socket("spawn listener thread"))?;
        Ok(Self {
            events: Some(events),
            wake,
            socket,
            stop,
            thread: Some(thread),
            options,
        })
    }

    /// The options this listener advertised.
    pub fn options(&self) -> ListenerOptions {
        self.options
    }

    fn drain_wake(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }

    fn receiver(&self) -> &Receiver<QemuEvent> {
        self.events.as_ref().expect("receiver lives until drop")
    }

    /// The next event if one is queued (`Ok(None)` if not); `Err(())`-like `Closed`
    /// is reported as `Ok(None)` after [`QemuEvent::Disconnected`] was returned.
    pub fn try_recv(&self) -> Option<QemuEvent> {
        self.drain_wake();
        self.receiver().try_recv().ok()
    }

    /// Waits up to `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: Duration) -> Recv {
        self.drain_wake();
        match self.receiver().recv_timeout(timeout) {
            Ok(event) => Recv::Event(event),
            Err(RecvTimeoutError::Timeout) => Recv::Timeout,
            Err(RecvTimeoutError::Disconnected) => Recv::Closed,
        }
    }

    /// Waits for the next event; `None` once the listener has ended and every event,
    /// the final [`QemuEvent::Disconnected`] included, was read.
    pub fn recv(&self) -> Option<QemuEvent> {
        self.drain_wake();
        self.receiver().recv().ok()
    }
}

impl AsFd for QemuListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

impl Drop for QemuListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Ends the D-Bus connection: the thread's message loop sees end of stream.
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        // Dropping queued events drops their tokens, so a thread waiting for an ack
        // wakes up.
        self.events.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The scanout the listener last received, for checking updates against it.
#[derive(Debug)]
enum Current {
    None,
    Owned(SharedFrame),
    Mapped(SharedFrame),
    Dmabuf { width: u32, height: u32 },
}

/// Asks QEMU for the console's current surface size (its `Width`/`Height` properties).
///
/// QEMU does not announce a surface switch on the pixel-data path: it sends `Scanout`
/// only for a full-surface update, so after a mode change (VGA graphics → 720×400
/// text, say) the `Update`s of the new surface come first. The listener asks this to
/// learn the new size (seen with QEMU 10.0).
pub type SurfaceSize = Box<dyn Fn() -> Option<(u32, u32)> + Send>;

struct Worker {
    options: ListenerOptions,
    surface_size: Option<SurfaceSize>,
    tx: Sender<QemuEvent>,
    wake: UnixStream,
    stop: Arc<AtomicBool>,
    current: Current,
    /// The size of the last dma-buf scanout, kept across `Disable`: QEMU 10's gl=on
    /// console sends `Disable` between a virtio-gpu blob's `ScanoutDMABUF` and its
    /// `UpdateDMABUF` (its console resize switches surfaces), and the update still
    /// means that dma-buf.
    last_dmabuf: Option<(u32, u32)>,
}

/// What handling one call produced.
enum Outcome {
    /// Answer with this body right away.
    Reply(Body),
    /// Send the event, answer at once.
    Event(QemuEvent),
    /// Send the event, answer when the token's receiver says the frame was presented.
    Gated(QemuEvent, Receiver<()>),
}

enum Body {
    Empty,
    Value(OwnedValue),
    Properties(std::collections::HashMap<String, OwnedValue>),
    Xml(String),
}

type Handled = Result<Outcome, QemuError>;

impl Worker {
    fn send(&self, event: QemuEvent) -> bool {
        if self.tx.send(event).is_err() {
            return false;
        }
        let _ = (&self.wake).write(&[1]);
        true
    }

    fn run(mut self, stream: UnixStream) {
        let reason = match self.serve(stream) {
            Ok(reason) => reason,
            Err(error) => error.to_string(),
        };
        self.current = Current::None;
        self.send(QemuEvent::Disconnected { reason });
    }

    fn serve(&mut self, stream: UnixStream) -> Result<String, QemuError> {
        // QEMU authenticates as the D-Bus *server* of this peer-to-peer connection (it
        // makes up the GUID in RegisterListener); the listener is the auth client that
        // serves the objects. `unix_stream` is deprecated only in favour of the
        // async-io type; this crate never enables zbus's tokio feature.
        // The message stream must exist before the reader starts: QEMU reads the
        // listener's properties right after authenticating, and a message that arrives
        // before a stream is subscribed is lost (`build_message_iterator`).
        #[allow(deprecated)]
        let messages = connection::Builder::unix_stream(stream)
            .p2p()
            .build_message_iterator()
            .map_err(|source| QemuError::Handshake {
                source: Box::new(source),
            })?;
        let conn = Connection::from(&messages);
        for message in messages {
            if self.stop.load(Ordering::SeqCst) {
                return Ok("listener closed".into());
            }
            let message = match message {
                Ok(message) => message,
                Err(error) => return Ok(format!("QEMU connection lost: {error}")),
            };
            if message.message_type() != MessageType::MethodCall {
                continue;
            }
            if !self.dispatch(&conn, &message) {
                return Ok("listener closed".into());
            }
        }
        Ok("QEMU closed the listener connection".into())
    }

    /// Handles one call and answers it. False when the listener should stop.
    fn dispatch(&mut self, conn: &Connection, message: &Message) -> bool {
        let header = message.header();
        let member = header
            .member()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let interface = header.interface().map(|i| i.as_str().to_owned());
        let path_ok = header.path().is_some_and(|p| p.as_str() == LISTENER_PATH);
        let outcome = if path_ok {
            self.handle(interface.as_deref(), &member, message)
        } else {
            Err(QemuError::UnknownMethod {
                interface: interface.clone().unwrap_or_default(),
                member: format!("{member} on {:?}", header.path().map(|p| p.as_str())),
            })
        };
        let reply = match outcome {
            Ok(Outcome::Reply(body)) => Ok(body),
            Ok(Outcome::Event(event)) => {
                if !self.send(event) {
                    return false;
                }
                Ok(Body::Empty)
            }
            Ok(Outcome::Gated(event, presented)) => {
                if !self.send(event) {
                    return false;
                }
                // One frame in flight: nothing else is read until the viewer is done.
                loop {
                    match presented.recv_timeout(Duration::from_millis(50)) {
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                        Err(RecvTimeoutError::Timeout) => {
                            if self.stop.load(Ordering::SeqCst) {
                                return false;
                            }
                        }
                    }
                }
                Ok(Body::Empty)
            }
            Err(error) => Err(error),
        };
        let sent = match reply {
            Ok(Body::Empty) => conn.reply(&header, &()),
            Ok(Body::Value(value)) => conn.reply(&header, &value),
            Ok(Body::Properties(map)) => conn.reply(&header, &map),
            Ok(Body::Xml(xml)) => conn.reply(&header, &xml),
            Err(error) => {
                let name = error.dbus_error_name();
                let text = error.to_string();
                let result = conn.reply_error(&header, name, &text);
                if matches!(
                    error,
                    QemuError::UnknownMethod { .. } | QemuError::UnknownProperty { .. }
                ) {
                    // Introspection probes and the like: answered, not worth an event.
                } else if !self.send(QemuEvent::Rejected {
                    method: member,
                    error,
                }) {
                    return false;
                }
                result
            }
        };
        // A failed reply means the connection is going away; the iterator reports it.
        let _ = sent;
        true
    }

    fn handle(&mut self, interface: Option<&str>, member: &str, message: &Message) -> Handled {
        let body = message.body();
        let bad_body = |source| QemuError::BadBody {
            method: member.to_owned(),
            source: Box::new(source),
        };
        match (interface, member) {
            (Some(LISTENER_IFACE) | None, "Scanout") => {
                let (width, height, stride, format, data): (u32, u32, u32, u32, Vec<u8>) =
                    body.deserialize().map_err(bad_body)?;
                self.scanout(width, height, stride, format, data)
            }
            (Some(LISTENER_IFACE) | None, "Update") => {
                let (x, y, w, h, stride, format, data): (i32, i32, i32, i32, u32, u32, &[u8]) =
                    body.deserialize().map_err(bad_body)?;
                self.update(x, y, w, h, stride, format, data)
            }
            (Some(LISTENER_IFACE) | None, "ScanoutDMABUF") => {
                let (fd, width, height, stride, fourcc, modifier, y0_top): (
                    zvariant::OwnedFd,
                    u32,
                    u32,
                    u32,
                    u32,
                    u64,
                    bool,
                ) = body.deserialize().map_err(bad_body)?;
                let visible = Rect::full(width, height);
                self.scanout_dmabuf(
                    vec![fd.into()],
                    &[0],
                    &[stride],
                    1,
                    fourcc,
                    modifier,
                    (width, height),
                    visible,
                    y0_top,
                    "ScanoutDMABUF",
                )
            }
            (Some(DMABUF2_IFACE), "ScanoutDMABUF2") if self.options.dmabuf2 => {
                #[allow(clippy::type_complexity)]
                let (fds, x, y, w, h, offsets, strides, planes, fourcc, bw, bh, modifier, y0): (
                    Vec<zvariant::OwnedFd>,
                    u32,
                    u32,
                    u32,
                    u32,
                    Vec<u32>,
                    Vec<u32>,
                    u32,
                    u32,
                    u32,
                    u32,
                    u64,
                    bool,
                ) = body.deserialize().map_err(bad_body)?;
                let visible = Rect {
                    x,
                    y,
                    width: w,
                    height: h,
                };
                let fds = fds.into_iter().map(OwnedFd::from).collect();
                self.scanout_dmabuf(
                    fds,
                    &offsets,
                    &strides,
                    planes,
                    fourcc,
                    modifier,
                    (bw, bh),
                    visible,
                    y0,
                    "ScanoutDMABUF2",
                )
            }
            (Some(LISTENER_IFACE) | None, "UpdateDMABUF") => {
                let (x, y, w, h): (i32, i32, i32, i32) = body.deserialize().map_err(bad_body)?;
                let (width, height) = match (&self.current, self.last_dmabuf) {
                    (&Current::Dmabuf { width, height }, _) => (width, height),
                    // After a Disable: the last dma-buf is shown again.
                    (Current::None, Some(size)) => size,
                    _ => {
                        return Err(QemuError::NoScanout {
                            method: "UpdateDMABUF",
                        })
                    }
                };
                let rect = checked_rect(x, y, w, h, width, height)?;
                self.current = Current::Dmabuf { width, height };
                let (ack, presented) = FrameToken::new();
                Ok(Outcome::Gated(
                    QemuEvent::UpdateDmabuf { rect, ack },
                    presented,
                ))
            }
            (Some(MAP_IFACE), "ScanoutMap") if self.options.map => {
                let (fd, offset, width, height, stride, format): (
                    zvariant::OwnedFd,
                    u32,
                    u32,
                    u32,
                    u32,
                    u32,
                ) = body.deserialize().map_err(bad_body)?;
                self.scanout_map(fd.into(), offset, width, height, stride, format)
            }
            (Some(MAP_IFACE), "UpdateMap") if self.options.map => {
                let (x, y, w, h): (i32, i32, i32, i32) = body.deserialize().map_err(bad_body)?;
                let frame = match &self.current {
                    Current::Mapped(frame) => frame,
                    // A ScanoutMap whose fd was a dma-buf: an update of that buffer.
                    &Current::Dmabuf { width, height } => {
                        let rect = checked_rect(x, y, w, h, width, height)?;
                        let (ack, presented) = FrameToken::new();
                        return Ok(Outcome::Gated(
                            QemuEvent::UpdateDmabuf { rect, ack },
                            presented,
                        ));
                    }
                    _ => {
                        return Err(QemuError::NoScanout {
                            method: "UpdateMap",
                        })
                    }
                };
                let (width, height) = {
                    let f = frame.lock();
                    (f.width, f.height)
                };
                let rect = checked_rect(x, y, w, h, width, height)?;
                let (ack, presented) = FrameToken::new();
                let event = QemuEvent::UpdateMap {
                    frame: frame.clone(),
                    rect,
                    ack,
                };
                Ok(Outcome::Gated(event, presented))
            }
            (Some(LISTENER_IFACE) | None, "Disable") => {
                self.current = Current::None;
                Ok(Outcome::Event(QemuEvent::Disable))
            }
            (Some(LISTENER_IFACE) | None, "MouseSet") => {
                let (x, y, on): (i32, i32, i32) = body.deserialize().map_err(bad_body)?;
                Ok(Outcome::Event(QemuEvent::MouseSet {
                    x,
                    y,
                    visible: on != 0,
                }))
            }
            (Some(LISTENER_IFACE) | None, "CursorDefine") => {
                let (w, h, hot_x, hot_y, data): (i32, i32, i32, i32, Vec<u8>) =
                    body.deserialize().map_err(bad_body)?;
                let cursor = checked_cursor(w, h, hot_x, hot_y, data)?;
                Ok(Outcome::Event(QemuEvent::CursorDefine { cursor }))
            }
            (Some("org.freedesktop.DBus.Properties"), "Get") => {
                let (iface, name): (String, String) = body.deserialize().map_err(bad_body)?;
                let props = self.properties(&iface);
                match props.into_iter().find(|(key, _)| *key == name) {
                    Some((_, value)) => Ok(Outcome::Reply(Body::Value(value))),
                    None => Err(QemuError::UnknownProperty {
                        interface: iface,
                        name,
                    }),
                }
            }
            (Some("org.freedesktop.DBus.Properties"), "GetAll") => {
                let (iface,): (String,) = body.deserialize().map_err(bad_body)?;
                let map = self.properties(&iface).into_iter().collect();
                Ok(Outcome::Reply(Body::Properties(map)))
            }
            (Some("org.freedesktop.DBus.Peer"), "Ping") => Ok(Outcome::Reply(Body::Empty)),
            (Some("org.freedesktop.DBus.Introspectable"), "Introspect") => {
                Ok(Outcome::Reply(Body::Xml(self.introspection())))
            }
            (interface, member) => Err(QemuError::UnknownMethod {
                interface: interface.unwrap_or_default().to_owned(),
                member: member.to_owned(),
            }),
        }
    }

    fn properties(&self, interface: &str) -> Vec<(String, OwnedValue)> {
        if interface != LISTENER_IFACE {
            return Vec::new();
        }
        let list = Value::from(self.options.interfaces());
        match OwnedValue::try_from(list) {
            Ok(value) => vec![("Interfaces".to_owned(), value)],
            Err(_) => Vec::new(),
        }
    }

    fn introspection(&self) -> String {
        let mut xml = String::from(
            "<node>\n <interface name=\"org.qemu.Display1.Listener\">\n\
             \x20 <method name=\"Scanout\"><arg type=\"u\"/><arg type=\"u\"/><arg type=\"u\"/>\
             <arg type=\"u\"/><arg type=\"ay\"/></method>\n\
             \x20 <method name=\"Update\"><arg type=\"i\"/><arg type=\"i\"/><arg type=\"i\"/>\
             <arg type=\"i\"/><arg type=\"u\"/><arg type=\"u\"/><arg type=\"ay\"/></method>\n\
             \x20 <method name=\"ScanoutDMABUF\"><arg type=\"h\"/><arg type=\"u\"/>\
             <arg type=\"u\"/><arg type=\"u\"/><arg type=\"u\"/><arg type=\"t\"/>\
             <arg type=\"b\"/></method>\n\
             \x20 <method name=\"UpdateDMABUF\"><arg type=\"i\"/><arg type=\"i\"/>\
             <arg type=\"i\"/><arg type=\"i\"/></method>\n\
             \x20 <method name=\"Disable\"/>\n\
             \x20 <method name=\"MouseSet\"><arg type=\"i\"/><arg type=\"i\"/>\
             <arg type=\"i\"/></method>\n\
             \x20 <method name=\"CursorDefine\"><arg type=\"i\"/><arg type=\"i\"/>\
             <arg type=\"i\"/><arg type=\"i\"/><arg type=\"ay\"/></method>\n\
             \x20 <property name=\"Interfaces\" type=\"as\" access=\"read\"/>\n </interface>\n",
        );
        if self.options.map {
            xml.push_str(
                " <interface name=\"org.qemu.Display1.Listener.Unix.Map\">\n\
                 \x20 <method name=\"ScanoutMap\"><arg type=\"h\"/><arg type=\"u\"/>\
                 <arg type=\"u\"/><arg type=\"u\"/><arg type=\"u\"/><arg type=\"u\"/></method>\n\
                 \x20 <method name=\"UpdateMap\"><arg type=\"i\"/><arg type=\"i\"/>\
                 <arg type=\"i\"/><arg type=\"i\"/></method>\n </interface>\n",
            );
        }
        if self.options.dmabuf2 {
            xml.push_str(
                " <interface name=\"org.qemu.Display1.Listener.Unix.ScanoutDMABUF2\">\n\
                 \x20 <method name=\"ScanoutDMABUF2\"><arg type=\"ah\"/><arg type=\"u\"/>\
                 <arg type=\"u\"/><arg type=\"u\"/><arg type=\"u\"/><arg type=\"au\"/>\
                 <arg type=\"au\"/><arg type=\"u\"/><arg type=\"u\"/><arg type=\"u\"/>\
                 <arg type=\"u\"/><arg type=\"t\"/><arg type=\"b\"/></method>\n </interface>\n",
            );
        }
        xml.push_str("</node>\n");
        xml
    }

    fn scanout(
        &mut self,
        width: u32,
        height: u32,
        stride: u32,
        pixman_format: u32,
        mut data: Vec<u8>,
    ) -> Handled {
        let format = checked_format(pixman_format)?;
        let len = checked_surface(width, height, stride, format)?;
        if (data.len() as u64) < len {
            return Err(QemuError::DataTooShort {
                method: "Scanout",
                len: data.len() as u64,
                need: len,
                stride,
                height,
            });
        }
        data.truncate(len as usize);
        let frame = SharedFrame::new(Frame {
            width,
            height,
            stride,
            format,
            pixman: pixman_format,
            storage: Storage::Owned(data),
        });
        self.current = Current::Owned(frame.clone());
        self.last_dmabuf = None;
        Ok(Outcome::Event(QemuEvent::Scanout { frame }))
    }

    #[allow(clippy::too_many_arguments)]
    fn update(
        &mut self,
        x: i32,
        y: i32,
        w: i32,
        h: i32,
        stride: u32,
        pixman_format: u32,
        data: &[u8],
    ) -> Handled {
        let Current::Owned(frame) = &self.current else {
            return Err(QemuError::NoScanout { method: "Update" });
        };
        let format = checked_format(pixman_format)?;
        let (frame_width, frame_height) = {
            let guard = frame.lock();
            (guard.width, guard.height)
        };
        if checked_rect(x, y, w, h, frame_width, frame_height).is_err() {
            if let Some(frame) = self.switched_surface(x, y, w, h, format, pixman_format) {
                // The new surface starts black; this update and the ones after it
                // (QEMU redraws the whole new surface) fill it in.
                self.current = Current::Owned(frame.clone());
                self.update(x, y, w, h, stride, pixman_format, data)?;
                return Ok(Outcome::Event(QemuEvent::Scanout { frame }));
            }
        }
        let Current::Owned(frame) = &self.current else {
            return Err(QemuError::NoScanout { method: "Update" });
        };
        let mut guard = frame.lock();
        if format != guard.format {
            return Err(QemuError::FormatChanged {
                scanout: guard.format,
                update: format,
            });
        }
        let rect = checked_rect(x, y, w, h, guard.width, guard.height)?;
        let bpp = u64::from(format.bytes_per_pixel());
        let row_len = u64::from(rect.width) * bpp;
        if u64::from(stride) < row_len {
            return Err(QemuError::StrideTooSmall {
                stride,
                width: rect.width,
                bytes_per_pixel: bpp as u32,
            });
        }
        let need = u64::from(stride) * u64::from(rect.height);
        if (data.len() as u64) < need {
            return Err(QemuError::DataTooShort {
                method: "Update",
                len: data.len() as u64,
                need,
                stride,
                height: rect.height,
            });
        }
        let dst_stride = guard.stride as usize;
        if let Storage::Owned(pixels) = &mut guard.storage {
            let row_len = row_len as usize;
            for row in 0..rect.height as usize {
                let src = row * stride as usize;
                let dst = (rect.y as usize + row) * dst_stride + rect.x as usize * bpp as usize;
                // In bounds: rect lies in the frame (checked_rect) and the frame holds
                // stride × height bytes (checked at Scanout); data holds need bytes.
                pixels[dst..dst + row_len].copy_from_slice(&data[src..src + row_len]);
            }
        }
        drop(guard);
        let (ack, presented) = FrameToken::new();
        let event = QemuEvent::Update {
            frame: frame.clone(),
            rect,
            ack,
        };
        Ok(Outcome::Gated(event, presented))
    }

    /// A black surface of the console's current size, when an update that does not fit
    /// the old surface fits that size; `None` otherwise (the update is then refused).
    fn switched_surface(
        &self,
        x: i32,
        y: i32,
        w: i32,
        h: i32,
        format: PixelFormat,
        pixman_format: u32,
    ) -> Option<SharedFrame> {
        let (width, height) = (self.surface_size.as_ref()?)()?;
        checked_rect(x, y, w, h, width, height).ok()?;
        let stride = width.checked_mul(format.bytes_per_pixel())?;
        let len = checked_surface(width, height, stride, format).ok()?;
        Some(SharedFrame::new(Frame {
            width,
            height,
            stride,
            format,
            pixman: pixman_format,
            storage: Storage::Owned(vec![0; usize::try_from(len).ok()?]),
        }))
    }

    fn scanout_map(
        &mut self,
        fd: OwnedFd,
        offset: u32,
        width: u32,
        height: u32,
        stride: u32,
        pixman_format: u32,
    ) -> Handled {
        let format = checked_format(pixman_format)?;
        let len = checked_surface(width, height, stride, format)?;
        let kind = fdkind::classify(fd.as_fd())?;
        // `Some(sealed for udmabuf)` for a memfd, `None` for a dma-buf.
        let memfd_sealed = match &kind {
            FdKind::DmaBuf { .. } => None,
            FdKind::Memfd { seals, .. } => Some(
                seals.contains(Seals::SHRINK)
                    && !seals.intersects(Seals::WRITE | Seals::FUTURE_WRITE),
            ),
            &FdKind::Other { what, .. } => {
                return Err(QemuError::NotShareable {
                    method: "ScanoutMap",
                    what,
                })
            }
        };
        let end = u64::from(offset) + len;
        if end > kind.size() {
            return Err(QemuError::MapOutOfRange {
                offset: u64::from(offset),
                len,
                size: kind.size(),
                kind: kind.name(),
            });
        }
        let Some(sealed_for_udmabuf) = memfd_sealed else {
            let exporter = match kind {
                FdKind::DmaBuf { exporter, .. } => exporter,
                _ => String::new(),
            };
            // A dma-buf (a virtio-gpu blob's udmabuf, where QEMU passes it as the
            // surface's share handle): a dma-buf scanout, shown without a copy.
            self.current = Current::Dmabuf { width, height };
            self.last_dmabuf = Some((width, height));
            return Ok(Outcome::Event(QemuEvent::ScanoutDmabuf {
                scanout: DmaBufScanout {
                    planes: vec![DmaBufPlane { fd, offset, stride }],
                    fourcc: format.fourcc() as u32,
                    modifier: Modifier::LINEAR,
                    backing_width: width,
                    backing_height: height,
                    visible: Rect::full(width, height),
                    y0_top: true,
                    method: "ScanoutMap",
                    exporter,
                },
            }));
        };
        let page = sys::page_size();
        let base = u64::from(offset) / page * page;
        let mapping = Mapping::new(fd.as_fd(), base, (end - base) as usize, Access::Read)
            .and_then(|m| m.narrow((u64::from(offset) - base) as usize, len as usize))
            .map_err(QemuError::Sys)?;
        // The mapping keeps the memory; the fd is kept only where it can be exported.
        let sealed = match sealed_for_udmabuf {
            true => Some((Arc::new(Memfd::from_fd(fd)?), u64::from(offset))),
            false => None,
        };
        let frame = SharedFrame::new(Frame {
            width,
            height,
            stride,
            format,
            pixman: pixman_format,
            storage: Storage::Mapped { mapping, sealed },
        });
        self.current = Current::Mapped(frame.clone());
        self.last_dmabuf = None;
        Ok(Outcome::Event(QemuEvent::ScanoutMap { frame }))
    }

    #[allow(clippy::too_many_arguments)]
    fn scanout_dmabuf(
        &mut self,
        fds: Vec<OwnedFd>,
        offsets: &[u32],
        strides: &[u32],
        num_planes: u32,
        fourcc: u32,
        modifier: u64,
        (backing_width, backing_height): (u32, u32),
        visible: Rect,
        qemu_y0_top: bool,
        method: &'static str,
    ) -> Handled {
        // QEMU's flag follows GL's texture origin, the opposite of guestfb's "memory
        // row 0 is the top": a virtio-gpu blob, stored top row first (QEMU's own gl=off
        // screendump of it is upright), comes with y0_top = false, and a GL-rendered
        // (bottom-up) virgl scanout with true. Seen with QEMU 10.0.2 in
        // tests/guest_nested.rs: taking the flag as guestfb's drew blobs upside down.
        let y0_top = !qemu_y0_top;
        let n = num_planes as usize;
        if !(1..=4).contains(&n) || fds.len() < n || offsets.len() < n || strides.len() < n {
            return Err(QemuError::BadPlanes {
                num_planes,
                fds: fds.len(),
                offsets: offsets.len(),
                strides: strides.len(),
            });
        }
        let mut exporter = String::new();
        for fd in fds.iter().take(n) {
            match fdkind::classify(fd.as_fd())? {
                FdKind::DmaBuf { exporter: name, .. } => exporter = name,
                other => {
                    return Err(QemuError::NotShareable {
                        method,
                        what: other.name(),
                    })
                }
            }
        }
        check_size(backing_width, backing_height)?;
        check_size(visible.width, visible.height)?;
        let fits =
            |start: u32, len: u32, limit: u32| start.checked_add(len).is_some_and(|e| e <= limit);
        if !fits(visible.x, visible.width, backing_width)
            || !fits(visible.y, visible.height, backing_height)
        {
            return Err(QemuError::RectOutOfBounds {
                x: i64::from(visible.x),
                y: i64::from(visible.y),
                width: i64::from(visible.width),
                height: i64::from(visible.height),
                frame_width: backing_width,
                frame_height: backing_height,
            });
        }
        if let Some(format) = PixelFormat::from_fourcc(fourcc) {
            for (plane, info) in format.planes().iter().enumerate().take(n) {
                let samples = backing_width.div_ceil(info.h_sub);
                let need = u64::from(samples) * u64::from(info.bytes_per_sample);
                if u64::from(strides[plane]) < need {
                    return Err(QemuError::StrideTooSmall {
                        stride: strides[plane],
                        width: samples,
                        bytes_per_pixel: info.bytes_per_sample,
                    });
                }
            }
        }
        let planes = fds
            .into_iter()
            .take(n)
            .zip(offsets.iter().zip(strides))
            .map(|(fd, (&offset, &stride))| DmaBufPlane { fd, offset, stride })
            .collect();
        self.current = Current::Dmabuf {
            width: backing_width,
            height: backing_height,
        };
        self.last_dmabuf = Some((backing_width, backing_height));
        Ok(Outcome::Event(QemuEvent::ScanoutDmabuf {
            scanout: DmaBufScanout {
                planes,
                fourcc,
                modifier: Modifier::from_raw(modifier),
                backing_width,
                backing_height,
                visible,
                y0_top,
                method,
                exporter,
            },
        }))
    }
}

fn checked_format(code: u32) -> Result<PixelFormat, QemuError> {
    pixman::pixel_format(code).ok_or(QemuError::UnsupportedPixman { code })
}

fn check_size(width: u32, height: u32) -> Result<(), QemuError> {
    if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(QemuError::BadSize {
            width,
            height,
            max: MAX_DIMENSION,
        });
    }
    Ok(())
}

/// Checks a surface's geometry; returns `stride × height`.
fn checked_surface(
    width: u32,
    height: u32,
    stride: u32,
    format: PixelFormat,
) -> Result<u64, QemuError> {
    check_size(width, height)?;
    let bpp = format.bytes_per_pixel();
    if u64::from(stride) < u64::from(width) * u64::from(bpp) {
        return Err(QemuError::StrideTooSmall {
            stride,
            width,
            bytes_per_pixel: bpp,
        });
    }
    Ok(u64::from(stride) * u64::from(height))
}

/// A damage rectangle from QEMU (signed), checked against the frame.
fn checked_rect(
    x: i32,
    y: i32,
    w: i32,
    h: i32,
    frame_width: u32,
    frame_height: u32,
) -> Result<Rect, QemuError> {
    let (x64, y64, w64, h64) = (i64::from(x), i64::from(y), i64::from(w), i64::from(h));
    if x < 0
        || y < 0
        || w < 0
        || h < 0
        || x64 + w64 > i64::from(frame_width)
        || y64 + h64 > i64::from(frame_height)
    {
        return Err(QemuError::RectOutOfBounds {
            x: x64,
            y: y64,
            width: w64,
            height: h64,
            frame_width,
            frame_height,
        });
    }
    Ok(Rect {
        x: x as u32,
        y: y as u32,
        width: w as u32,
        height: h as u32,
    })
}

fn checked_cursor(
    w: i32,
    h: i32,
    hot_x: i32,
    hot_y: i32,
    mut data: Vec<u8>,
) -> Result<Cursor, QemuError> {
    if !(1..=MAX_CURSOR as i32).contains(&w) || !(1..=MAX_CURSOR as i32).contains(&h) {
        return Err(QemuError::BadCursor {
            width: w,
            height: h,
            len: data.len(),
            max: MAX_CURSOR,
        });
    }
    let need = w as usize * h as usize * 4;
    if data.len() < need {
        return Err(QemuError::BadCursor {
            width: w,
            height: h,
            len: data.len(),
            max: MAX_CURSOR,
        });
    }
    data.truncate(need);
    Ok(Cursor {
        width: w as u32,
        height: h as u32,
        hot_x,
        hot_y,
        argb: data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rects_are_checked_against_the_frame() {
        assert!(checked_rect(0, 0, 640, 480, 640, 480).is_ok());
        assert!(checked_rect(1, 0, 640, 480, 640, 480).is_err());
        assert!(checked_rect(-1, 0, 1, 1, 640, 480).is_err());
        assert!(checked_rect(0, 0, -5, 1, 640, 480).is_err());
        assert!(checked_rect(i32::MAX, i32::MAX, i32::MAX, i32::MAX, 640, 480).is_err());
    }

    #[test]
    fn surfaces_are_checked() {
        let f = PixelFormat::Xrgb8888;
        assert_eq!(checked_surface(640, 480, 2560, f).unwrap(), 2560 * 480);
        assert!(checked_surface(640, 480, 2559, f).is_err());
        assert!(checked_surface(0, 480, 2560, f).is_err());
        assert!(checked_surface(MAX_DIMENSION + 1, 1, u32::MAX, f).is_err());
    }

    #[test]
    fn cursors_are_checked() {
        assert!(checked_cursor(2, 2, 0, 0, vec![0; 16]).is_ok());
        assert!(checked_cursor(2, 2, 0, 0, vec![0; 15]).is_err());
        assert!(checked_cursor(0, 2, 0, 0, vec![]).is_err());
        assert!(checked_cursor(4096, 4096, 0, 0, vec![]).is_err());
    }

    #[test]
    fn interfaces_follow_options() {
        let none = ListenerOptions {
            map: false,
            dmabuf2: false,
        };
        assert!(none.interfaces().is_empty());
        assert_eq!(
            ListenerOptions::default().interfaces(),
            [MAP_IFACE, DMABUF2_IFACE]
        );
    }
}
