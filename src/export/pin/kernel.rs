//! What the kernel does for a pin, found out at run time: whether udmabuf pins long term
//! (migration observed out of ZONE_MOVABLE), its quirks, CAP_IPC_LOCK; populating a
//! range before it is pinned; where a range's pages live (pagemap + zoneinfo).

use std::os::fd::AsFd;

use rustix::mm::Advice;

use crate::export::ExportError;
use crate::sys::dmabuf::{Access, Mapping};
use crate::sys::memfd::Memfd;
use crate::sys::udmabuf::{self, Udmabuf};
use crate::sys::{self as sys, SysError};

/// Whether CAP_IPC_LOCK is in this process's effective set (`/proc/self/status`).
pub(super) fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// What the running kernel does when udmabuf pins pages.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LongtermPin {
    /// Seen: pages in ZONE_MOVABLE moved out when pinned.
    Verified {
        /// Pages that left ZONE_MOVABLE.
        moved_pages: u64,
    },
    /// Not observable here (no ZONE_MOVABLE, not root): assumed from the version
    /// (Linux ≥ 6.11 pins with memfd_pin_folios).
    ByVersion,
    /// Seen: pinned pages stayed in ZONE_MOVABLE. Not a long-term pin.
    NotMigrated {
        /// Pages still in ZONE_MOVABLE after the pin.
        pages_left: u64,
    },
    /// The kernel holds plain page references (udmabuf before 6.11).
    PlainReference,
    /// No udmabuf: nothing is pinned; memfds are mapped directly.
    NoUdmabuf,
}

impl LongtermPin {
    /// Whether pins are long-term.
    pub fn is_longterm(&self) -> bool {
        matches!(self, Self::Verified { .. } | Self::ByVersion)
    }
}

/// Known kernel bugs that change what guestfb must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quirk {
    /// `vmap_udmabuf()` ignores folio offsets (6.11 until fixed upstream): in-kernel
    /// vmap users such as the vkms composer see the head page of each hugetlb folio
    /// repeated. CPU mmap is correct. Avoid scanning hugetlb udmabufs through vmap.
    HugetlbVmapHeadPage,
}

/// What the running kernel offers, as [`PinManager::probe`](super::PinManager::probe) found it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PinSemantics {
    /// `uname -r`.
    pub kernel: String,
    /// `/dev/udmabuf` opens.
    pub udmabuf_present: bool,
    /// Long-term pinning, and how that was decided.
    pub longterm_pin: LongtermPin,
    /// hugetlb folios are pinned whole and mapped at the right offsets (≥ 6.11).
    pub hugetlb_folio_pin: bool,
    /// udmabuf mmap uses VM_PFNMAP (≥ 6.11).
    pub pfnmap_mmap: bool,
    /// The module limits.
    pub limits: Option<udmabuf::Limits>,
    /// Known quirks of this kernel.
    pub quirks: Vec<Quirk>,
}

/// Allocates the pages of a range before it is pinned: `fallocate` for hugetlb (an
/// empty pool fails here with ENOSPC), `MADV_POPULATE_WRITE` through a temporary
/// mapping otherwise (falling back to `fallocate` on kernels before 5.14).
pub fn populate(memfd: &Memfd, offset: u64, len: u64) -> Result<(), ExportError> {
    if memfd.is_hugetlb() {
        let page = memfd.page_size();
        let start = offset - offset % page;
        let end = (offset + len).next_multiple_of(page);
        let free_before = sys::hugetlb::pool(page).map_or(0, |pool| pool.free);
        return memfd
            .allocate(start, end - start)
            .map_err(|error| match error.errno() {
                Some(rustix::io::Errno::NOSPC) => ExportError::PoolExhausted {
                    page_size: page,
                    needed: (end - start) / page,
                    free: free_before,
                },
                _ => ExportError::Sys(error),
            });
    }
    let page = sys::page_size();
    let start = offset - offset % page;
    let map_len = usize::try_from((offset + len).next_multiple_of(page) - start).map_err(|_| {
        ExportError::Overflow {
            what: "populate length",
        }
    })?;
    let mapping = Mapping::new(memfd.as_fd(), start, map_len, Access::ReadWrite)?;
    match mapping.advise(Advice::LinuxPopulateWrite) {
        Ok(()) => Ok(()),
        Err(errno) if errno == rustix::io::Errno::INVAL => {
            Ok(memfd.allocate(start, map_len as u64)?)
        }
        Err(errno) => Err(ExportError::Sys(SysError::Syscall {
            op: "madvise(MADV_POPULATE_WRITE)",
            errno,
        })),
    }
}

/// Where the pages of a memfd range are, as `/proc/self/pagemap` and `/proc/zoneinfo`
/// tell a root process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ZoneAudit {
    /// Base pages in the range.
    pub pages: u64,
    /// Pages with a visible PFN (0 without CAP_SYS_ADMIN: PFNs read as zero).
    pub pages_with_pfn: u64,
    /// Pages whose PFN lies in a ZONE_MOVABLE span.
    pub in_movable: u64,
}

/// PFN spans `[start, end)` of every ZONE_MOVABLE, from `/proc/zoneinfo`.
pub fn movable_zone_spans() -> Vec<(u64, u64)> {
    std::fs::read_to_string("/proc/zoneinfo")
        .map(|text| parse_movable_spans(&text))
        .unwrap_or_default()
}

pub(super) fn parse_movable_spans(zoneinfo: &str) -> Vec<(u64, u64)> {
    let mut spans = Vec::new();
    let mut in_movable = false;
    let mut spanned = 0;
    for line in zoneinfo.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("Node") => {
                in_movable = line.trim_end().ends_with("Movable");
                spanned = 0;
            }
            Some("spanned") if in_movable => {
                spanned = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            }
            Some("start_pfn:") if in_movable => {
                if let Some(start) = words.next().and_then(|w| w.parse::<u64>().ok()) {
                    if spanned > 0 {
                        spans.push((start, start + spanned));
                    }
                }
            }
            _ => {}
        }
    }
    spans
}

/// Audits where the pages of `len` bytes of `memfd` at `offset` are (faulting them
/// into a temporary read mapping first).
pub fn audit(memfd: &Memfd, offset: u64, len: u64) -> Result<ZoneAudit, ExportError> {
    use std::io::{Read, Seek, SeekFrom};
    let map_len = usize::try_from(len).map_err(|_| ExportError::Overflow {
        what: "audit length",
    })?;
    let mapping = Mapping::new(memfd.as_fd(), offset, map_len, Access::Read)?;
    mapping
        .advise(Advice::LinuxPopulateRead)
        .map_err(|errno| SysError::Syscall {
            op: "madvise(MADV_POPULATE_READ)",
            errno,
        })?;
    let page = sys::page_size();
    let pages = len.div_ceil(page);
    let mut pagemap =
        std::fs::File::open("/proc/self/pagemap").map_err(io_error("open pagemap"))?;
    pagemap
        .seek(SeekFrom::Start(mapping.bytes().as_ptr() as u64 / page * 8))
        .map_err(io_error("seek pagemap"))?;
    let mut raw = vec![0u8; pages as usize * 8];
    pagemap
        .read_exact(&mut raw)
        .map_err(io_error("read pagemap"))?;
    let spans = movable_zone_spans();
    let mut audit = ZoneAudit {
        pages,
        pages_with_pfn: 0,
        in_movable: 0,
    };
    for entry in raw.chunks_exact(8) {
        let entry = u64::from_le_bytes(entry.try_into().expect("8-byte chunk"));
        let present = entry >> 63 == 1;
        let pfn = entry & ((1 << 55) - 1);
        if present && pfn != 0 {
            audit.pages_with_pfn += 1;
            if spans
                .iter()
                .any(|&(start, end)| (start..end).contains(&pfn))
            {
                audit.in_movable += 1;
            }
        }
    }
    Ok(audit)
}

pub(super) fn io_error(op: &'static str) -> impl FnOnce(std::io::Error) -> ExportError {
    move |error| {
        ExportError::Sys(SysError::Syscall {
            op,
            errno: rustix::io::Errno::from_io_error(&error).unwrap_or(rustix::io::Errno::IO),
        })
    }
}

pub(super) fn probe_with(device: Option<&Udmabuf>) -> PinSemantics {
    let kernel = sys::kernel_release();
    let modern = sys::parse_kernel_version(&kernel).is_some_and(|version| version >= (6, 11));
    let longterm_pin = match device {
        None => LongtermPin::NoUdmabuf,
        Some(device) => match observe_migration(device) {
            Some(observed) => observed,
            None if modern => LongtermPin::ByVersion,
            None => LongtermPin::PlainReference,
        },
    };
    let mut quirks = Vec::new();
    // Fixed upstream by "udmabuf: fix vmap missed offset page" (after 6.15).
    if device.is_some()
        && modern
        && sys::parse_kernel_version(&kernel).is_some_and(|version| version < (6, 16))
    {
        quirks.push(Quirk::HugetlbVmapHeadPage);
    }
    PinSemantics {
        kernel,
        udmabuf_present: device.is_some(),
        longterm_pin,
        hugetlb_folio_pin: device.is_some() && modern,
        pfnmap_mmap: device.is_some() && modern,
        limits: device.map(Udmabuf::limits),
        quirks,
    }
}

/// Pins a small memfd and watches whether its pages leave ZONE_MOVABLE. `None` when
/// that cannot be seen (no movable zone, PFNs hidden, pages not in the zone to start).
pub(super) fn observe_migration(device: &Udmabuf) -> Option<LongtermPin> {
    if movable_zone_spans().is_empty() {
        return None;
    }
    const LEN: u64 = 4 << 20;
    let memfd = Memfd::create("guestfb-probe").ok()?;
    memfd.set_size(LEN).ok()?;
    memfd
        .add_seals(sys::memfd::Seals::SHRINK | sys::memfd::Seals::GROW)
        .ok()?;
    populate(&memfd, 0, LEN).ok()?;
    let before = audit(&memfd, 0, LEN).ok()?;
    if before.pages_with_pfn == 0 || before.in_movable == 0 {
        return None;
    }
    let pin = device
        .create(udmabuf::Range {
            memfd: memfd.as_fd(),
            offset: 0,
            size: LEN,
        })
        .ok()?;
    let after = audit(&memfd, 0, LEN).ok()?;
    drop(pin);
    Some(if after.in_movable == 0 {
        LongtermPin::Verified {
            moved_pages: before.in_movable,
        }
    } else {
        LongtermPin::NotMigrated {
            pages_left: after.in_movable,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoneinfo_movable_spans_parse() {
        let text = "Node 0, zone   Normal\n  pages free     1\n        spanned  100\n  start_pfn:           4096\n\
                    Node 0, zone  Movable\n  pages free     5\n        spanned  262144\n        present  262144\n  start_pfn:           393216\n\
                    Node 0, zone   Device\n  pages free     0\n        spanned  0\n  start_pfn:           0\n";
        assert_eq!(parse_movable_spans(text), vec![(393216, 393216 + 262144)]);
    }
}
