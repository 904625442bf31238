//! Guest RAM as the VMM laid it out: guest-physical regions backed by memfds.

use std::os::fd::AsFd;
use std::sync::Arc;

use crate::sys::memfd::{Memfd, Seals};

use super::ExportError;

/// Identity of a memfd (device and inode), stable across dup'd fds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemfdId {
    dev: u64,
    ino: u64,
}

impl MemfdId {
    /// Reads the identity of a memfd.
    pub fn of(memfd: &Memfd) -> Result<Self, ExportError> {
        let stat = rustix::fs::fstat(memfd.as_fd()).map_err(|errno| {
            ExportError::Sys(crate::sys::SysError::Syscall {
                op: "fstat(memfd)",
                errno,
            })
        })?;
        Ok(Self {
            dev: stat.st_dev,
            ino: stat.st_ino,
        })
    }
}

/// One guest-physical region: `size` bytes at guest address `base`, stored in `memfd`
/// from `file_offset`.
#[derive(Debug, Clone)]
pub struct GuestRegion {
    base: u64,
    size: u64,
    memfd: Arc<Memfd>,
    memfd_id: MemfdId,
    file_offset: u64,
}

impl GuestRegion {
    /// Guest-physical start.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The memfd holding the region.
    pub fn memfd(&self) -> &Arc<Memfd> {
        &self.memfd
    }

    /// Offset of `base` in the memfd.
    pub fn file_offset(&self) -> u64 {
        self.file_offset
    }

    /// Guest-physical end (exclusive); cannot overflow, checked when added.
    pub fn end(&self) -> u64 {
        self.base + self.size
    }
}

/// A contiguous piece of memfd: what one guest-physical range resolves to.
#[derive(Debug, Clone)]
pub struct MemfdPiece {
    /// The memfd.
    pub memfd: Arc<Memfd>,
    /// Its identity.
    pub memfd_id: MemfdId,
    /// Offset in the memfd.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl MemfdPiece {
    /// End offset in the memfd (exclusive).
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The guest's RAM map. Regions never overlap and each lies inside a sealed memfd.
#[derive(Debug, Clone, Default)]
pub struct GuestMemory {
    /// Sorted by base.
    regions: Vec<GuestRegion>,
}

impl GuestMemory {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a region. Refused when it is empty, unaligned, overlaps another, wraps the
    /// address space, reaches past its memfd, or the memfd is not sealed against
    /// shrinking (pages a udmabuf holds must not be truncated away).
    pub fn add_region(
        &mut self,
        base: u64,
        size: u64,
        memfd: Arc<Memfd>,
        file_offset: u64,
    ) -> Result<(), ExportError> {
        let page = memfd.page_size();
        if size == 0 {
            return Err(ExportError::EmptyRegion { base });
        }
        let end = base
            .checked_add(size)
            .ok_or(ExportError::RegionOverflow { base, size })?;
        for (name, value) in [("base", base), ("size", size), ("file offset", file_offset)] {
            if value % page != 0 {
                return Err(ExportError::UnalignedRegion { name, value, page });
            }
        }
        let seals = crate::sys::memfd::seals_of(memfd.as_fd())?;
        if !seals.contains(Seals::SHRINK) || seals.contains(Seals::WRITE) {
            return Err(ExportError::RegionNotSealed {
                base,
                seals: seals.bits(),
            });
        }
        let file_size = memfd.size()?;
        if file_offset
            .checked_add(size)
            .is_none_or(|file_end| file_end > file_size)
        {
            return Err(ExportError::RegionPastMemfd {
                base,
                file_offset,
                size,
                file_size,
            });
        }
        if let Some(other) = self
            .regions
            .iter()
            .find(|region| base < region.end() && region.base < end)
        {
            return Err(ExportError::RegionOverlap {
                base,
                size,
                other_base: other.base,
                other_size: other.size,
            });
        }
        let memfd_id = MemfdId::of(&memfd)?;
        let index = self.regions.partition_point(|region| region.base < base);
        self.regions.insert(
            index,
            GuestRegion {
                base,
                size,
                memfd,
                memfd_id,
                file_offset,
            },
        );
        Ok(())
    }

    /// The regions, by ascending base.
    pub fn regions(&self) -> &[GuestRegion] {
        &self.regions
    }

    /// Resolves `len` bytes at guest address `addr` to memfd pieces, in order. Fails if
    /// any byte is outside guest RAM.
    pub fn lookup(&self, addr: u64, len: u64) -> Result<Vec<MemfdPiece>, ExportError> {
        let outside = || ExportError::OutsideGuestMemory { addr, len };
        let end = addr.checked_add(len).ok_or_else(outside)?;
        if len == 0 {
            return Err(outside());
        }
        let mut pieces = Vec::new();
        let mut cursor = addr;
        while cursor < end {
            let index = self
                .regions
                .partition_point(|region| region.end() <= cursor);
            let region = self
                .regions
                .get(index)
                .filter(|region| region.base <= cursor)
                .ok_or_else(outside)?;
            let piece_end = end.min(region.end());
            pieces.push(MemfdPiece {
                memfd: region.memfd.clone(),
                memfd_id: region.memfd_id,
                offset: region.file_offset + (cursor - region.base),
                len: piece_end - cursor,
            });
            cursor = piece_end;
        }
        Ok(pieces)
    }
}

/// Joins pieces that continue each other in the same memfd.
pub(crate) fn coalesce(pieces: Vec<MemfdPiece>) -> Vec<MemfdPiece> {
    let mut out: Vec<MemfdPiece> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match out.last_mut() {
            Some(last) if last.memfd_id == piece.memfd_id && last.end() == piece.offset => {
                last.len += piece.len;
            }
            _ => out.push(piece),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed_memfd(size: u64) -> Arc<Memfd> {
        let memfd = Memfd::create("guest-ram").unwrap();
        memfd.set_size(size).unwrap();
        memfd.add_seals(Seals::SHRINK | Seals::GROW).unwrap();
        Arc::new(memfd)
    }

    #[test]
    fn lookup_spans_regions_and_rejects_gaps() {
        let low = sealed_memfd(1 << 20);
        let high = sealed_memfd(1 << 20);
        let mut memory = GuestMemory::new();
        memory.add_region(0x10_0000, 1 << 20, high, 0).unwrap();
        memory.add_region(0, 1 << 20, low, 0).unwrap();
        assert_eq!(memory.regions()[0].base(), 0);

        let pieces = memory.lookup(0xF_F000, 0x2000).unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!((pieces[0].offset, pieces[0].len), (0xF_F000, 0x1000));
        assert_eq!((pieces[1].offset, pieces[1].len), (0, 0x1000));

        assert!(matches!(
            memory.lookup(0x1F_F000, 0x2000),
            Err(ExportError::OutsideGuestMemory { .. })
        ));
        assert!(matches!(
            memory.lookup(u64::MAX - 1, 4),
            Err(ExportError::OutsideGuestMemory { .. })
        ));
    }

    #[test]
    fn overlapping_unsealed_and_oversized_regions_are_refused() {
        let memfd = sealed_memfd(1 << 20);
        let mut memory = GuestMemory::new();
        memory.add_region(0, 1 << 20, memfd.clone(), 0).unwrap();
        assert!(matches!(
            memory.add_region(0x8_0000, 1 << 20, memfd.clone(), 0),
            Err(ExportError::RegionOverlap { .. })
        ));
        assert!(matches!(
            memory.add_region(1 << 30, 2 << 20, memfd.clone(), 0),
            Err(ExportError::RegionPastMemfd { .. })
        ));
        assert!(matches!(
            memory.add_region(u64::MAX - 4095, 8192, memfd, 0),
            Err(ExportError::RegionOverflow { .. })
        ));
        let unsealed = Arc::new(Memfd::create("unsealed").unwrap());
        unsealed.set_size(4096).unwrap();
        assert!(matches!(
            memory.add_region(1 << 30, 4096, unsealed, 0),
            Err(ExportError::RegionNotSealed { .. })
        ));
    }
}
