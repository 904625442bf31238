//! What each scanout and update does to the console's surface: pixel data copied in,
//! QEMU's surface memfd mapped (sealed) or read (unsealed), dma-bufs checked into a
//! [`DmaBufImage`]. The worker decodes the calls (`worker.rs`) and comes here.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::format::{fourcc_name, Modifier, PixelFormat, ALL_FORMATS};
use crate::import::dmabuf::{DmaBufImage, DmaBufPlane};
use crate::rect::Rect;
use crate::source::qemu::QemuError;
use crate::sys;
use crate::sys::dmabuf::{Access, Mapping};
use crate::sys::fdkind::{self, FdKind};
use crate::sys::memfd::{Memfd, Seals};

use super::checks::{check_size, checked_format, checked_rect, checked_surface};
use super::frame::{read_exact_at, Frame, SharedFrame, Storage};
use super::worker::{gated, Current, Handled, Outcome, Worker};
use super::QemuEvent;

impl Worker {
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
