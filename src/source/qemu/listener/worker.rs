//! The listener thread: reads QEMU's calls in order, decodes and checks every argument,
//! keeps the current scanout (what each scanout and update does is in `surfaces.rs`)
//! and answers each call (after the frame's token for updates).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use zbus::blocking::{connection, Connection};
use zbus::message::{Message, Type as MessageType};
use zbus::zvariant::{self, OwnedValue, Value};

use crate::rect::Rect;
use crate::source::qemu::QemuError;

use super::checks::{checked_cursor, checked_rect};
use super::frame::{FrameToken, SharedFrame};
use super::{ListenerOptions, QemuEvent, DMABUF2_IFACE, LISTENER_IFACE, LISTENER_PATH, MAP_IFACE};

/// The scanout the listener last received, for checking updates against it.
#[derive(Debug)]
pub(super) enum Current {
    None,
    Owned(SharedFrame),
    Mapped(SharedFrame),
    DmaBuf { width: u32, height: u32 },
}

/// Asks QEMU for the console's current surface size (its `Width`/`Height` properties).
///
/// QEMU does not announce a surface switch on the pixel-data path: it sends `Scanout`
/// only for a full-surface update, so after a mode change (VGA graphics → 720×400
/// text, say) the `Update`s of the new surface come first. The listener asks this to
/// learn the new size (seen with QEMU 10.0).
pub(crate) type SurfaceSize = Box<dyn Fn() -> Option<(u32, u32)> + Send>;

pub(super) struct Worker {
    pub(super) options: ListenerOptions,
    pub(super) surface_size: Option<SurfaceSize>,
    pub(super) tx: Sender<QemuEvent>,
    pub(super) wake: UnixStream,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) current: Current,
    /// The size of the last dma-buf scanout, kept across `Disable`: QEMU 10's gl=on
    /// console sends `Disable` between a virtio-gpu blob's `ScanoutDMABUF` and its
    /// `UpdateDMABUF` (its console resize switches surfaces), and the update still
    /// means that dma-buf.
    pub(super) last_dmabuf: Option<(u32, u32)>,
    /// A dup of the socket to QEMU, to notice QEMU's death while an update waits for
    /// its frame (the message loop is not reading then).
    pub(super) peer: Option<UnixStream>,
    /// Set when QEMU hung up during such a wait.
    pub(super) hung_up: bool,
}

/// What handling one call produced.
pub(super) enum Outcome {
    /// Answer with this body right away.
    Reply(Body),
    /// Send the event, answer at once.
    Event(QemuEvent),
    /// Send the event, answer when the token's receiver says the frame was presented.
    Gated(QemuEvent, Receiver<()>),
}

pub(super) enum Body {
    Empty,
    Value(OwnedValue),
    Properties(std::collections::HashMap<String, OwnedValue>),
    Xml(String),
}

impl Worker {
    /// Whether QEMU closed its end of the socket.
    fn peer_hung_up(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let Some(peer) = &self.peer else {
            return false;
        };
        let mut fds = [PollFd::new(peer, PollFlags::RDHUP)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(n) if n > 0)
            && fds[0]
                .revents()
                .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR)
    }

    pub(super) fn send(&self, event: QemuEvent) -> bool {
        if self.tx.send(event).is_err() {
            return false;
        }
        let _ = (&self.wake).write(&[1]);
        true
    }

    pub(super) fn run(mut self, stream: UnixStream) {
        let reason = match self.serve(stream) {
            Ok(reason) => reason,
            Err(error) => error.to_string(),
        };
        self.current = Current::None;
        self.send(QemuEvent::Disconnected { reason });
    }

    pub(super) fn serve(&mut self, stream: UnixStream) -> Result<String, QemuError> {
        // QEMU authenticates as the D-Bus *server* of this peer-to-peer connection (it
        // makes up the GUID in RegisterListener); the listener is the auth client that
        // serves the objects. `unix_stream` is deprecated only in favour of the
        // async-io type; this crate never enables zbus's tokio feature.
        // The message stream must exist before the reader starts: QEMU reads the
        // listener's properties right after authenticating, and a message that arrives
        // before a stream is subscribed is lost (`build_message_iterator`).
        self.peer = stream.try_clone().ok();
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
                return Ok(if self.hung_up {
                    "QEMU hung up while an update waited for its frame".into()
                } else {
                    "listener closed".into()
                });
            }
        }
        Ok("QEMU closed the listener connection".into())
    }

    /// Handles one call and answers it. False when the listener should stop.
    pub(super) fn dispatch(&mut self, conn: &Connection, message: &Message) -> bool {
        let header = message.header();
        let (interface, member) = call_target(message);
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
                            if self.peer_hung_up() {
                                self.hung_up = true;
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

    pub(super) fn handle(
        &mut self,
        interface: Option<&str>,
        member: &str,
        message: &Message,
    ) -> Handled {
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
                let (fd, width, height, stride, fourcc, modifier, y0_top): ScanoutDmaBufArgs =
                    body.deserialize().map_err(bad_body)?;
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
                let (fds, x, y, w, h, offsets, strides, planes, fourcc, bw, bh, modifier, y0): ScanoutDmaBuf2Args =
                    body.deserialize().map_err(bad_body)?;
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
                    (&Current::DmaBuf { width, height }, _) => (width, height),
                    // After a Disable: the last dma-buf is shown again.
                    (Current::None, Some(size)) => size,
                    _ => {
                        return Err(QemuError::NoScanout {
                            method: "UpdateDMABUF",
                        })
                    }
                };
                let rect = checked_rect(x, y, w, h, width, height)?;
                self.current = Current::DmaBuf { width, height };
                gated(|ack| QemuEvent::UpdateDmaBuf { rect, ack })
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
                    &Current::DmaBuf { width, height } => {
                        let rect = checked_rect(x, y, w, h, width, height)?;
                        return gated(|ack| QemuEvent::UpdateDmaBuf { rect, ack });
                    }
                    _ => {
                        return Err(QemuError::NoScanout {
                            method: "UpdateMap",
                        })
                    }
                };
                let rect = {
                    let mut f = frame.lock();
                    let rect = checked_rect(x, y, w, h, f.width, f.height)?;
                    // An unsealed memfd is read again where the update is: the rows
                    // from the rect's first byte to its last.
                    if !rect.is_empty() {
                        let bpp = u64::from(f.format.bytes_per_pixel());
                        let stride = u64::from(f.stride);
                        let start = u64::from(rect.y) * stride + u64::from(rect.x) * bpp;
                        let end = u64::from(rect.y + rect.height - 1) * stride
                            + u64::from(rect.x + rect.width) * bpp;
                        f.reread(start, end - start)?;
                    }
                    rect
                };
                gated(|ack| QemuEvent::UpdateMap {
                    frame: frame.clone(),
                    rect,
                    ack,
                })
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

    pub(super) fn properties(&self, interface: &str) -> Vec<(String, OwnedValue)> {
        if interface != LISTENER_IFACE {
            return Vec::new();
        }
        let list = Value::from(self.options.interfaces());
        match OwnedValue::try_from(list) {
            Ok(value) => vec![("Interfaces".to_owned(), value)],
            Err(_) => Vec::new(),
        }
    }

    pub(super) fn introspection(&self) -> String {
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
}

/// The interface (if named) and the member a method call is for.
pub(super) fn call_target(message: &Message) -> (Option<String>, String) {
    let header = message.header();
    let member = header.member().map(|m| m.as_str().to_owned());
    let interface = header.interface().map(|i| i.as_str().to_owned());
    (interface, member.unwrap_or_default())
}

/// What handling one message gives.
pub(super) type Handled = Result<Outcome, QemuError>;

/// An event QEMU waits on: its reply goes when the event's token completes.
pub(super) fn gated(event: impl FnOnce(FrameToken) -> QemuEvent) -> Handled {
    let (ack, presented) = FrameToken::new();
    Ok(Outcome::Gated(event(ack), presented))
}

/// `ScanoutDMABUF(h dmabuf, u width, u height, u stride, u fourcc, t modifier,
/// b y0_top)`, as QEMU's org.qemu.Display1.Listener has it.
type ScanoutDmaBufArgs = (zvariant::OwnedFd, u32, u32, u32, u32, u64, bool);

/// `ScanoutDMABUF2(ah dmabuf, u x, u y, u width, u height, au offset, au stride,
/// u num_planes, u fourcc, u backing_width, u backing_height, t modifier, b y0_top)`.
type ScanoutDmaBuf2Args = (
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
);
