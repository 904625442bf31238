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

mod checks;
mod frame;
mod surfaces;
mod worker;

pub use frame::{Cursor, Frame, FrameToken, SharedFrame};
pub(crate) use worker::SurfaceSize;

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use worker::{Current, Worker};

use crate::import::dmabuf::DmaBufImage;

use crate::rect::Rect;

use super::QemuError;

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
    /// A new dma-buf scanout: import it. gl=on (`ScanoutDMABUF`, `ScanoutDMABUF2`:
    /// what QEMU's `QemuDmaBuf` holds, `modifier` [`Modifier::Implicit`] for the old
    /// method, which sends whatever QEMU got from EGL), or gl=off when QEMU's surface is
    /// a dma-buf (`ScanoutMap` of a virtio-gpu blob's udmabuf).
    ///
    /// [`Modifier::Implicit`]: crate::format::Modifier::Implicit
    ScanoutDmaBuf {
        /// The image (owns the fds), `visible` and `y0_top` in guestfb's convention
        /// (QEMU's own `y0_top` argument means the opposite and is inverted on
        /// receipt).
        image: DmaBufImage<OwnedFd>,
        /// The D-Bus method that brought it: `ScanoutDMABUF`, `ScanoutDMABUF2` or
        /// `ScanoutMap`.
        method: &'static str,
        /// The dma-buf's exporter, from its fdinfo (`udmabuf`: guest RAM pages, pinned
        /// long-term by the kernel on Linux ≥ 6.11).
        exporter: String,
    },
    /// `rect` of the dma-buf scanout changed: draw it. QEMU holds the guest until
    /// `ack` completes.
    UpdateDmaBuf {
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
            peer: None,
            hung_up: false,
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

/// The listener's message handling without a connection or a thread: each message is
/// handled as the worker would, its events dropped at once (a gated update's token
/// completes on drop). For the fuzz target, through `guestfb::testing`.
#[cfg(feature = "testing")]
pub(crate) struct Harness {
    worker: Worker,
    events: Receiver<QemuEvent>,
    _wake: UnixStream,
}

#[cfg(feature = "testing")]
impl Harness {
    pub(crate) fn new(options: ListenerOptions) -> Result<Self, QemuError> {
        let (wake_tx, wake) = UnixStream::pair().map_err(QemuError::socket("socketpair"))?;
        wake_tx
            .set_nonblocking(true)
            .map_err(QemuError::socket("set_nonblocking"))?;
        let (tx, events) = mpsc::channel();
        let worker = Worker {
            options,
            surface_size: None,
            tx,
            wake: wake_tx,
            stop: Arc::new(AtomicBool::new(false)),
            current: Current::None,
            last_dmabuf: None,
            peer: None,
            hung_up: false,
        };
        Ok(Self {
            worker,
            events,
            _wake: wake,
        })
    }

    /// Handles `message` (its interface and member from its header); the error QEMU
    /// would get, if any.
    pub(crate) fn handle(&mut self, message: &zbus::message::Message) -> Result<(), QemuError> {
        let (interface, member) = worker::call_target(message);
        let outcome = self.worker.handle(interface.as_deref(), &member, message);
        while self.events.try_recv().is_ok() {}
        outcome.map(drop)
    }
}
