//! What kind of page backs a mapping, as `/proc/self/pagemap` and `/proc/kpageflags`
//! tell a process with `CAP_SYS_ADMIN`.
//!
//! A peer's dma-buf (QEMU's udmabuf of a virtio-gpu blob) says nothing of the memory
//! under it, yet whether that memory is hugetlb decides whether a kernel quirk (6.12's
//! udmabuf vmap) makes a scanout engine read wrong pixels. Its first page, faulted into
//! a read-only mapping, answers: pagemap gives the PFN, kpageflags the page's flags.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsFd;

use super::dmabuf::{Access, DmaBuf, Mapping};

/// `KPF_HUGE` in `/proc/kpageflags`: the page belongs to a hugetlb folio.
const KPF_HUGE: u64 = 1 << 17;
/// pagemap: page present.
const PM_PRESENT: u64 = 1 << 63;
/// pagemap: PFN bits.
const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// What backs a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PageKind {
    /// A page of a hugetlb folio (hugetlbfs, `MFD_HUGETLB`).
    Hugetlb,
    /// Any other page (base pages, THP, device memory).
    Other,
    /// Not known: without `CAP_SYS_ADMIN` PFNs read as zero, or the page is not present.
    Unknown,
}

/// The kind of the page of this process mapped at `address` (already faulted in).
fn page_kind_at(address: usize) -> PageKind {
    let page = super::page_size();
    let read_u64 = |path: &str, index: u64| -> Option<u64> {
        let mut file = std::fs::File::open(path).ok()?;
        file.seek(SeekFrom::Start(index.checked_mul(8)?)).ok()?;
        let mut raw = [0u8; 8];
        file.read_exact(&mut raw).ok()?;
        Some(u64::from_le_bytes(raw))
    };
    let Some(entry) = read_u64("/proc/self/pagemap", address as u64 / page) else {
        return PageKind::Unknown;
    };
    let pfn = entry & PM_PFN_MASK;
    if entry & PM_PRESENT == 0 || pfn == 0 {
        return PageKind::Unknown;
    }
    match read_u64("/proc/kpageflags", pfn) {
        Some(flags) if flags & KPF_HUGE != 0 => PageKind::Hugetlb,
        Some(_) => PageKind::Other,
        None => PageKind::Unknown,
    }
}

impl DmaBuf {
    /// The kind of memory under the dma-buf's first page: mapped read-only for a moment,
    /// one byte read inside a `DMA_BUF_IOCTL_SYNC` bracket to fault it in.
    /// [`PageKind::Unknown`] where the dma-buf cannot be mapped or PFNs are hidden.
    pub fn first_page_kind(&self) -> PageKind {
        let page = super::page_size().min(self.size()) as usize;
        if page == 0 {
            return PageKind::Unknown;
        }
        let Ok(mapping) = Mapping::new(self.as_fd(), 0, page, Access::Read) else {
            return PageKind::Unknown;
        };
        let Ok(sync) = self.sync(Access::Read) else {
            return PageKind::Unknown;
        };
        // SAFETY: the mapping is `page` > 0 readable bytes and lives for this read; a
        // volatile read of a byte others may write forms no reference and tears nothing.
        let _ = unsafe { mapping.as_ptr().read_volatile() };
        let _ = sync.end();
        page_kind_at(mapping.as_ptr() as usize)
    }
}
