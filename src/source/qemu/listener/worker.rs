//! The listener thread: reads QEMU's calls in order, checks every argument, keeps the
//! current scanout and answers each call (after the frame's token for updates).

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use zbus::blocking::{connection, Connection};
use zbus::message::{Message, Type as MessageType};
use zbus::zvariant::{self, OwnedValue, Value};

use crate::format::{fourcc_name, Modifier, PixelFormat, ALL_FORMATS};
use crate::rect::Rect;
use crate::source::qemu::QemuError;
use crate::sys;
use crate::sys::dmabuf::{Access, Mapping};
use crate::sys::fdkind::{self, FdKind};
use crate::sys::memfd::{Memfd, Seals};

use super::checks::checked_format;
use super::checks::{check_size, checked_cursor, checked_rect, checked_surface};
use super::frame::{read_exact_at, Frame, FrameToken, SharedFrame, Storage};
use super::{ListenerOptions, QemuEvent, DMABUF2_IFACE, LISTENER_IFACE, LISTENER_PATH, MAP_IFACE};
use crate::import::dmabuf::{DmaBufImage, DmaBufPlane};

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

    pub(super) fn scanout(
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
        let storage = Storage::Owned(data);
        let frame = self.new_frame(
            Frame::new(width, height, stride, format, pixman_format, storage),
            Current::Owned,
        );
        Ok(Outcome::Event(QemuEvent::Scanout { frame }))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn update(
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
        gated(|ack| QemuEvent::Update {
            frame: frame.clone(),
            rect,
            ack,
        })
    }

    /// A black surface of the console's current size, when an update that does not fit
    /// the old surface fits that size; `None` otherwise (the update is then refused).
    pub(super) fn switched_surface(
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
        let storage = Storage::Owned(vec![0; usize::try_from(len).ok()?]);
        let frame = Frame::new(width, height, stride, format, pixman_format, storage);
        Some(SharedFrame::new(frame))
    }

    pub(super) fn scanout_map(
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
            self.current = Current::DmaBuf { width, height };
            self.last_dmabuf = Some((width, height));
            return Ok(Outcome::Event(QemuEvent::ScanoutDmaBuf {
                image: DmaBufImage {
                    planes: vec![DmaBufPlane { fd, offset, stride }],
                    format,
                    modifier: Modifier::LINEAR,
                    width,
                    height,
                    visible: Rect::full(width, height),
                    y0_top: true,
                },
                method: "ScanoutMap",
                exporter,
            }));
        };
        if !sealed_for_udmabuf && !memfd_shrink_sealed(&kind) {
            // QEMU could truncate this memfd under a mapping (SIGBUS on the next read):
            // read it instead, checked.
            let mut pixels = vec![0; len as usize];
            read_exact_at(fd.as_fd(), &mut pixels, u64::from(offset))?;
            let storage = Storage::Read {
                memfd: fd,
                offset: u64::from(offset),
                pixels,
            };
            let frame = self.new_frame(
                Frame::new(width, height, stride, format, pixman_format, storage),
                Current::Mapped,
            );
            return Ok(Outcome::Event(QemuEvent::ScanoutMap { frame }));
        }
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
        let storage = Storage::Mapped { mapping, sealed };
        let frame = self.new_frame(
            Frame::new(width, height, stride, format, pixman_format, storage),
            Current::Mapped,
        );
        Ok(Outcome::Event(QemuEvent::ScanoutMap { frame }))
    }

    /// Makes `frame` the console's current surface (`current` says how it is held).
    fn new_frame(&mut self, frame: Frame, current: fn(SharedFrame) -> Current) -> SharedFrame {
        let frame = SharedFrame::new(frame);
        self.current = current(frame.clone());
        self.last_dmabuf = None;
        frame
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn scanout_dmabuf(
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
        let Some(format) = PixelFormat::from_fourcc(fourcc) else {
            return Err(QemuError::UnsupportedFourcc {
                method,
                fourcc,
                name: fourcc_name(fourcc),
                supported: ALL_FORMATS.map(|f| f.to_string()).join(", "),
            });
        };
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
        let planes = fds
            .into_iter()
            .take(n)
            .zip(offsets.iter().zip(strides))
            .map(|(fd, (&offset, &stride))| DmaBufPlane { fd, offset, stride })
            .collect();
        self.current = Current::DmaBuf {
            width: backing_width,
            height: backing_height,
        };
        self.last_dmabuf = Some((backing_width, backing_height));
        Ok(Outcome::Event(QemuEvent::ScanoutDmaBuf {
            image: DmaBufImage {
                planes,
                format,
                modifier: Modifier::from_raw(modifier),
                width: backing_width,
                height: backing_height,
                visible,
                y0_top,
            },
            method,
            exporter,
        }))
    }
}

/// Whether a memfd's seals keep it from shrinking.
fn memfd_shrink_sealed(kind: &FdKind) -> bool {
    matches!(kind, FdKind::Memfd { seals, .. } if seals.contains(Seals::SHRINK))
}

/// What handling one message gives.
type Handled = Result<Outcome, QemuError>;

/// An event QEMU waits on: its reply goes when the event's token completes.
fn gated(event: impl FnOnce(FrameToken) -> QemuEvent) -> Handled {
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
