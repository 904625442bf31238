//! Probe for the udmabuf vmap quirk (Linux 6.11–6.15: `vmap_udmabuf()` ignores folio
//! offsets, so in-kernel readers see each hugetlb folio's head page repeated).

use std::os::fd::AsFd;
use std::time::Duration;

use drm::control::{atomic::AtomicModeReq, AtomicCommitFlags};

use crate::rect::Rect;
use crate::sys::dmabuf::{Access, Mapping};
use crate::sys::memfd::{Memfd, Seals};
use crate::sys::udmabuf::{Range, Udmabuf};
use crate::sys::SysError;

use super::card::{import_xrgb8888, Card};
use super::error::KmsError;
use super::pipe::Pipe;
use super::placement::Placement;
use super::presenter::ROTATE_0;
use super::writeback::{Writeback, WritebackTarget};

/// Size of the hugetlb pages the probe uses.
const HUGE: u64 = 2 << 20;
/// The base page: pixels in the first one of a folio are right even with the quirk.
const BASE_PAGE: u64 = 4096;

/// The probe pattern: a different colour for every pixel index.
fn probe_pixel(index: u64) -> u32 {
    (index.wrapping_mul(2_654_435_761) as u32 >> 4) & 0x00FF_FFFF
}

/// Scans out a known pattern from a 2 MiB-hugetlb udmabuf on `card`'s first connected
/// connector, captures it through the writeback connector, and compares.
///
/// `Ok(true)`: the quirk is present (pixels past the first 4 KiB of a folio are wrong,
/// the first 4 KiB right). `Ok(false)`: the picture is exact. Needs DRM master, a
/// writeback connector, `/dev/udmabuf` and two free 2 MiB huge pages. The pipe is left
/// disabled.
pub fn probe_hugetlb_vmap_quirk(card: &Card) -> Result<bool, KmsError> {
    let pipe = Pipe::find(card, None)?;
    let writeback = Writeback::find(card)?;
    let (width, height) = pipe.mode_size();
    let stride = width * 4;
    let len = (u64::from(stride) * u64::from(height)).next_multiple_of(HUGE);
    let memfd = Memfd::create_hugetlb("guestfb-vmap-probe", HUGE)?;
    memfd.set_size(len)?;
    memfd.add_seals(Seals::SHRINK | Seals::GROW)?;
    memfd.allocate(0, len)?;
    let map_len = usize::try_from(len).map_err(|_| SysError::OutOfBounds {
        offset: 0,
        len,
        size: usize::MAX as u64,
    })?;
    let map = Mapping::new(memfd.as_fd(), 0, map_len, Access::ReadWrite)?;
    let pixels = map.bytes_mut()?;
    for index in 0..map_len / 4 {
        let pixel = (probe_pixel(index as u64) | 0xFF00_0000).to_le_bytes();
        pixels.write_at(index * 4, &pixel)?;
    }
    let dmabuf = Udmabuf::open()?.create(Range {
        memfd: memfd.as_fd(),
        offset: 0,
        size: len,
    })?;
    let (fb, gem) = import_xrgb8888(card, &dmabuf, (width, height), stride, "probe")?;
    let full = Rect::full(width, height);
    let blob = pipe.mode_blob(card)?;
    let mut req = AtomicModeReq::new();
    pipe.add_modeset(&mut req, &blob)?;
    pipe.add_plane(
        &mut req,
        Some(fb.handle),
        Some(Placement {
            src: full,
            dst: full,
        }),
        Some(ROTATE_0),
    )?;
    card.commit(
        AtomicCommitFlags::ALLOW_MODESET,
        req,
        "probe modeset of the hugetlb udmabuf",
    )?;
    let target = WritebackTarget::dumb(card, width, height)?;
    let captured = writeback
        .capture(card, pipe.crtc, &target, Duration::from_secs(10))
        .and_then(|()| target.read_dumb());
    let disabled = pipe.disable_all(card);
    let captured = captured?.unwrap_or_default();
    disabled?;
    drop((fb, gem, blob));

    let out_stride = target.stride() as usize;
    let (mut wrong_first_page, mut wrong_rest, mut total) = (0, 0, 0);
    for y in 0..height as usize {
        for x in 0..width as usize {
            let src_offset = (y * stride as usize + x * 4) as u64;
            let expected = probe_pixel(src_offset / 4);
            let at = y * out_stride + x * 4;
            let got = captured
                .get(at..at + 4)
                .map(|bytes| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
                .unwrap_or(u32::MAX)
                & 0x00FF_FFFF;
            total += 1;
            if got != expected {
                if src_offset % HUGE < BASE_PAGE {
                    wrong_first_page += 1;
                } else {
                    wrong_rest += 1;
                }
            }
        }
    }
    if wrong_first_page > 0 {
        return Err(KmsError::ProbeInconclusive {
            wrong_first_page,
            wrong_rest,
            total,
        });
    }
    Ok(wrong_rest > 0)
}
