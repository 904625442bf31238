//! dma-buf fds: size, CPU mapping and `DMA_BUF_IOCTL_SYNC`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

use super::volatile::{VolatileSlice, VolatileSliceMut};
use super::{Result, SysError};

const DMA_BUF_SYNC_READ: u64 = 1;
const DMA_BUF_SYNC_WRITE: u64 = 2;
const DMA_BUF_SYNC_END: u64 = 4;
/// `_IOW('b', 0, struct dma_buf_sync)`.
const DMA_BUF_IOCTL_SYNC: libc::c_ulong = (1 << 30) | (8 << 16) | ((b'b' as libc::c_ulong) << 8);

/// An owned dma-buf fd and its size.
#[derive(Debug)]
pub struct DmaBuf {
    fd: OwnedFd,
    size: u64,
}

/// Which way the CPU accesses a dma-buf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The CPU reads.
    Read,
    /// The CPU writes.
    Write,
    /// The CPU reads and writes.
    ReadWrite,
}

impl Access {
    fn sync_bits(self) -> u64 {
        match self {
            Self::Read => DMA_BUF_SYNC_READ,
            Self::Write => DMA_BUF_SYNC_WRITE,
            Self::ReadWrite => DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE,
        }
    }

    fn prot(self) -> ProtFlags {
        match self {
            Self::Read => ProtFlags::READ,
            Self::Write | Self::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
        }
    }
}

impl DmaBuf {
    /// Takes ownership of a dma-buf fd; its size is where `lseek(SEEK_END)` lands.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        let size = rustix::fs::seek(&fd, rustix::fs::SeekFrom::End(0))
            .map_err(SysError::syscall("lseek(dma-buf)"))?;
        Ok(Self { fd, size })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Maps the whole buffer shared (`MAP_SHARED`).
    pub fn mmap(&self, access: Access) -> Result<Mapping> {
        let len = usize::try_from(self.size).map_err(|_| SysError::OutOfBounds {
            offset: 0,
            len: self.size,
            size: self.size,
        })?;
        Mapping::new(self.fd.as_fd(), 0, len, access)
    }

    /// Starts CPU access (`DMA_BUF_IOCTL_SYNC` START); the guard ends it when dropped.
    pub fn sync(&self, access: Access) -> Result<SyncGuard<'_>> {
        self.sync_raw(access.sync_bits())?;
        Ok(SyncGuard {
            dmabuf: self,
            access,
        })
    }

    /// Issues `DMA_BUF_IOCTL_SYNC` with raw flags (the typed [`DmaBuf::sync`] and the
    /// guard's drop use it; tests send flags the typed API cannot express).
    pub(crate) fn sync_raw(&self, flags: u64) -> Result<()> {
        let arg: u64 = flags;
        // SAFETY: DMA_BUF_IOCTL_SYNC reads one `struct dma_buf_sync { __u64 flags; }`,
        // which `arg` is, for the duration of the call.
        let ret =
            unsafe { libc::ioctl(self.fd.as_raw_fd(), DMA_BUF_IOCTL_SYNC, &arg as *const u64) };
        if ret < 0 {
            let errno = Errno::from_raw_os_error(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            );
            return Err(SysError::Syscall {
                op: "DMA_BUF_IOCTL_SYNC",
                errno,
            });
        }
        Ok(())
    }

    /// Gives up the fd.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for DmaBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// CPU access to a dma-buf in progress; dropping it issues `DMA_BUF_IOCTL_SYNC` END.
#[derive(Debug)]
pub struct SyncGuard<'a> {
    dmabuf: &'a DmaBuf,
    access: Access,
}

impl SyncGuard<'_> {
    /// Ends the access now and reports the kernel's answer.
    pub fn end(self) -> Result<()> {
        let result = self
            .dmabuf
            .sync_raw(self.access.sync_bits() | DMA_BUF_SYNC_END);
        std::mem::forget(self);
        result
    }
}

impl Drop for SyncGuard<'_> {
    fn drop(&mut self) {
        // Nothing to do with an error here: the access is over either way.
        let _ = self
            .dmabuf
            .sync_raw(self.access.sync_bits() | DMA_BUF_SYNC_END);
    }
}

/// A shared mapping of a file (a dma-buf or memfd pieces), unmapped on drop.
///
/// The memory is shared with the guest, which may write it at any time: it is reached
/// only through [`VolatileSlice`] views ([`Mapping::bytes`], [`Mapping::bytes_mut`]).
#[derive(Debug)]
pub struct Mapping {
    /// What mmap returned (whole pages).
    base: NonNull<u8>,
    base_len: usize,
    /// The bytes this mapping shows: `base + start .. + len`.
    start: usize,
    len: usize,
    /// Mapped PROT_WRITE.
    writable: bool,
}

// SAFETY: the mapping is plain shared memory with no thread affinity; the raw pointer
// is only reached through bounds-checked volatile views.
unsafe impl Send for Mapping {}
// SAFETY: as above; shared reads of shared memory are what the mapping is for.
unsafe impl Sync for Mapping {}

/// One piece of a stitched mapping: `len` bytes of `fd` at `offset`, both page aligned.
#[derive(Debug, Clone, Copy)]
pub struct MapPiece<'fd> {
    /// The file.
    pub fd: BorrowedFd<'fd>,
    /// Page-aligned offset in the file.
    pub offset: u64,
    /// Page-aligned length.
    pub len: usize,
}

impl Mapping {
    /// Maps `len` bytes of `fd` from `offset` (page aligned), shared.
    pub fn new(fd: BorrowedFd<'_>, offset: u64, len: usize, access: Access) -> Result<Self> {
        if len == 0 {
            return Err(SysError::EmptyRange { offset });
        }
        // SAFETY: a fresh mapping chosen by the kernel (no MAP_FIXED) overlaps nothing
        // Rust owns; it is unmapped exactly once, in Drop.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                access.prot(),
                MapFlags::SHARED,
                fd,
                offset,
            )
        }
        .map_err(SysError::syscall("mmap"))?;
        Ok(Self {
            base: NonNull::new(ptr as *mut u8).ok_or(SysError::Syscall {
                op: "mmap",
                errno: Errno::NOMEM,
            })?,
            base_len: len,
            start: 0,
            len,
            writable: access != Access::Read,
        })
    }

    /// Maps several file pieces read-only, back to back, into one contiguous range of
    /// addresses: a scattered framebuffer read as one buffer, without a udmabuf.
    ///
    /// Each piece must be aligned to the page size of its file (huge pages for hugetlb).
    pub fn stitched(pieces: &[MapPiece<'_>]) -> Result<Self> {
        let total = pieces
            .iter()
            .try_fold(0usize, |sum, piece| sum.checked_add(piece.len))
            .filter(|&total| total > 0)
            .ok_or(SysError::EmptyRange { offset: 0 })?;
        if let [piece] = pieces {
            return Self::new(piece.fd, piece.offset, piece.len, Access::Read);
        }
        // Reserve the whole range, then map each piece over its part of it.
        // SAFETY: a fresh anonymous PROT_NONE reservation chosen by the kernel overlaps
        // nothing Rust owns; Drop unmaps it (and whatever was mapped over it) once.
        let reserve = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                total,
                ProtFlags::empty(),
                MapFlags::PRIVATE,
            )
        }
        .map_err(SysError::syscall("mmap(reserve)"))?;
        let mapping = Self {
            base: NonNull::new(reserve as *mut u8).ok_or(SysError::Syscall {
                op: "mmap(reserve)",
                errno: Errno::NOMEM,
            })?,
            base_len: total,
            start: 0,
            len: total,
            writable: false,
        };
        let mut position = 0;
        for piece in pieces {
            // SAFETY: the target lies inside our own reservation (position + len ≤
            // total), which no Rust reference points into yet; MAP_FIXED replaces only
            // reservation pages.
            unsafe {
                rustix::mm::mmap(
                    mapping.base.as_ptr().add(position).cast(),
                    piece.len,
                    ProtFlags::READ,
                    MapFlags::SHARED | MapFlags::FIXED,
                    piece.fd,
                    piece.offset,
                )
            }
            .map_err(SysError::syscall("mmap(MAP_FIXED piece)"))?;
            position += piece.len;
        }
        Ok(mapping)
    }

    /// Narrows the mapping to `len` bytes from `start` (for a framebuffer that begins
    /// mid-page).
    pub fn narrow(mut self, start: usize, len: usize) -> Result<Self> {
        if start.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(SysError::OutOfBounds {
                offset: start as u64,
                len: len as u64,
                size: self.len as u64,
            });
        }
        self.start += start;
        self.len = len;
        Ok(self)
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: empty mappings cannot be created.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mapped bytes, read-only: a view, never a slice, because the guest (or a
    /// device) may write them at any time (see [`crate::sys::volatile`]).
    pub fn bytes(&self) -> VolatileSlice<'_> {
        // SAFETY: base + start .. + len lies inside the mapping (checked when narrowed),
        // which is readable and stays mapped for the life of `self`; guestfb forms no
        // reference into it.
        unsafe { VolatileSlice::new(self.base.as_ptr().add(self.start), self.len) }
    }

    /// The mapped bytes, writable; an error for a read-only mapping.
    pub fn bytes_mut(&self) -> Result<VolatileSliceMut<'_>> {
        if !self.writable {
            return Err(SysError::ReadOnlyMapping {
                len: self.len as u64,
            });
        }
        // SAFETY: as for `bytes`, and the mapping was made PROT_WRITE.
        Ok(unsafe { VolatileSliceMut::new(self.base.as_ptr().add(self.start), self.len) })
    }

    /// `madvise` over the whole mapping (populate, for instance).
    pub fn advise(&self, advice: rustix::mm::Advice) -> std::result::Result<(), Errno> {
        // SAFETY: the range is exactly this mapping, which lives as long as `self`;
        // the advice values used (populate) do not change what the memory holds.
        unsafe { rustix::mm::madvise(self.base.as_ptr().cast(), self.base_len, advice) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base/base_len are exactly what mmap returned (pieces mapped over a
        // reservation go with it), and nothing borrows the mapping any more.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.base_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_ioctl_number_matches_the_uapi_header() {
        assert_eq!(DMA_BUF_IOCTL_SYNC, 0x4008_6200);
    }

    #[test]
    fn memfd_mapping_reads_what_was_written() {
        let memfd = crate::sys::memfd::Memfd::create("map").unwrap();
        memfd.set_size(8192).unwrap();
        let writer = Mapping::new(memfd.as_fd(), 0, 8192, Access::ReadWrite).unwrap();
        writer.bytes_mut().unwrap().write_at(4096, b"gfb!").unwrap();
        let reader = Mapping::new(memfd.as_fd(), 4096, 4096, Access::Read).unwrap();
        let mut out = [0u8; 4];
        reader.bytes().read_at(0, &mut out).unwrap();
        assert_eq!(&out, b"gfb!");
        assert!(matches!(
            reader.bytes().read_at(4094, &mut out),
            Err(SysError::OutOfBounds { .. })
        ));
        // A read-only mapping cannot be written from safe code.
        assert!(matches!(
            reader.bytes_mut(),
            Err(SysError::ReadOnlyMapping { len: 4096 })
        ));
    }

    #[test]
    fn stitched_pieces_read_back_to_back() {
        let memfd = crate::sys::memfd::Memfd::create("stitch").unwrap();
        memfd.set_size(4 * 4096).unwrap();
        let writer = Mapping::new(memfd.as_fd(), 0, 4 * 4096, Access::ReadWrite).unwrap();
        let bytes = writer.bytes_mut().unwrap();
        for page in 0..4 {
            bytes.fill_range(page * 4096, 4096, page as u8 + 1).unwrap();
        }
        let piece = |page: u64| MapPiece {
            fd: memfd.as_fd(),
            offset: page * 4096,
            len: 4096,
        };
        let stitched = Mapping::stitched(&[piece(3), piece(1)])
            .unwrap()
            .narrow(100, 8000)
            .unwrap();
        assert_eq!(stitched.len(), 8000);
        let bytes = stitched.bytes();
        assert_eq!(bytes.get(0), Some(4));
        assert_eq!(bytes.get(4095 - 100), Some(4));
        assert_eq!(bytes.get(4096 - 100), Some(2));
        assert!(
            stitched.bytes_mut().is_err(),
            "stitched mappings are read-only"
        );
        assert!(Mapping::stitched(&[]).is_err());
    }
}
