//! dma-buf fds: size, CPU mapping and `DMA_BUF_IOCTL_SYNC`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

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

    /// Issues `DMA_BUF_IOCTL_SYNC` with raw flags. Prefer [`DmaBuf::sync`]; this exists
    /// to show the kernel's answer to flags the typed API cannot express.
    pub fn sync_raw(&self, flags: u64) -> Result<()> {
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
/// The memory is shared with the guest, which may write it at any time: read it
/// through short-lived slices (a blit), never keep a `&[u8]` for long.
#[derive(Debug)]
pub struct Mapping {
    /// What mmap returned (whole pages).
    base: NonNull<u8>,
    base_len: usize,
    /// The bytes this mapping shows: `base + start .. + len`.
    start: usize,
    len: usize,
}

// SAFETY: the mapping is plain shared memory with no thread affinity; the raw pointer
// is only dereferenced through methods that bound-check.
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

    /// Start of the mapped bytes.
    pub fn as_ptr(&self) -> *const u8 {
        // SAFETY: start ≤ base_len, checked when narrowed.
        unsafe { self.base.as_ptr().add(self.start) }
    }

    /// The mapped bytes as a slice, for a short read (a blit).
    ///
    /// The guest may change the bytes meanwhile; that tears a picture, it does not
    /// break memory safety for plain bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: start..start+len lies inside the mapping, readable for the life of
        // `self`.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len) }
    }

    /// The mapped bytes as a mutable slice (the mapping must be writable).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as for `as_slice`, and `&mut self` keeps this the only slice into it
        // from this process.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr() as *mut u8, self.len) }
    }

    /// `madvise` over the whole mapping (populate, for instance).
    pub fn advise(&self, advice: rustix::mm::Advice) -> std::result::Result<(), Errno> {
        // SAFETY: the range is exactly this mapping, which lives as long as `self`;
        // the advice values used (populate) do not change what the memory holds.
        unsafe { rustix::mm::madvise(self.base.as_ptr().cast(), self.base_len, advice) }
    }

    /// Copies bytes out, bounds checked.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(out.len()).filter(|&end| end <= self.len);
        if end.is_none() {
            return Err(SysError::OutOfBounds {
                offset: offset as u64,
                len: out.len() as u64,
                size: self.len as u64,
            });
        }
        out.copy_from_slice(&self.as_slice()[offset..offset + out.len()]);
        Ok(())
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
        let mut writer = Mapping::new(memfd.as_fd(), 0, 8192, Access::ReadWrite).unwrap();
        writer.as_mut_slice()[4096..4100].copy_from_slice(b"gfb!");
        let reader = Mapping::new(memfd.as_fd(), 4096, 4096, Access::Read).unwrap();
        let mut out = [0u8; 4];
        reader.read_at(0, &mut out).unwrap();
        assert_eq!(&out, b"gfb!");
        assert!(matches!(
            reader.read_at(4094, &mut out),
            Err(SysError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn stitched_pieces_read_back_to_back() {
        let memfd = crate::sys::memfd::Memfd::create("stitch").unwrap();
        memfd.set_size(4 * 4096).unwrap();
        let mut writer = Mapping::new(memfd.as_fd(), 0, 4 * 4096, Access::ReadWrite).unwrap();
        for (page, chunk) in writer.as_mut_slice().chunks_mut(4096).enumerate() {
            chunk.fill(page as u8 + 1);
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
        assert_eq!(stitched.as_slice()[0], 4);
        assert_eq!(stitched.as_slice()[4095 - 100], 4);
        assert_eq!(stitched.as_slice()[4096 - 100], 2);
        assert!(Mapping::stitched(&[]).is_err());
    }
}
