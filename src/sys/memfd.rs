//! memfd creation, sizing and sealing; telling hugetlb memfds from normal ones.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{FallocateFlags, MemfdFlags, SealFlags};

use super::{Result, SysError};

/// `HUGETLBFS_MAGIC` from `<linux/magic.h>`: `f_type` of a hugetlb memfd.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// What backs a memfd, as read from `fstatfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backing {
    /// True for hugetlbfs.
    pub hugetlb: bool,
    /// The page size of the backing: the base page, or the huge page size.
    pub page_size: u64,
}

/// Reads what backs `fd` (hugetlbfs or not, and its page size).
pub fn backing_of(fd: BorrowedFd<'_>) -> Result<Backing> {
    let stat = rustix::fs::fstatfs(fd).map_err(SysError::syscall("fstatfs"))?;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs
    let hugetlb = stat.f_type as i64 == HUGETLBFS_MAGIC;
    Ok(Backing {
        hugetlb,
        page_size: if hugetlb {
            stat.f_bsize as u64
        } else {
            super::page_size()
        },
    })
}

/// Seals on a memfd (`F_SEAL_*`).
pub type Seals = SealFlags;

/// An owned memfd, with what backs it.
#[derive(Debug)]
pub struct Memfd {
    fd: OwnedFd,
    backing: Backing,
}

impl Memfd {
    /// Creates a sealable memfd with normal (base) pages.
    pub fn create(name: &str) -> Result<Self> {
        let fd = rustix::fs::memfd_create(name, MemfdFlags::ALLOW_SEALING | MemfdFlags::CLOEXEC)
            .map_err(SysError::syscall("memfd_create"))?;
        Self::from_fd(fd)
    }

    /// Creates a sealable hugetlb memfd with pages of `page_size` bytes (e.g. 2 MiB).
    ///
    /// The pool for that size must exist; pages are taken from it when first touched or
    /// allocated with [`Memfd::allocate`].
    pub fn create_hugetlb(name: &str, page_size: u64) -> Result<Self> {
        if !page_size.is_power_of_two() || !(1 << 16..=1 << 34).contains(&page_size) {
            return Err(SysError::BadHugePageSize(page_size));
        }
        // MFD_HUGE_* encode log2(page size) at MFD_HUGE_SHIFT (26).
        let size_bits = MemfdFlags::from_bits_retain(page_size.trailing_zeros() << 26);
        let flags = MemfdFlags::ALLOW_SEALING | MemfdFlags::CLOEXEC | MemfdFlags::HUGETLB;
        let fd = rustix::fs::memfd_create(name, flags | size_bits)
            .map_err(SysError::syscall("memfd_create(MFD_HUGETLB)"))?;
        Self::from_fd(fd)
    }

    /// Wraps an existing fd (for instance one a VMM passed over a socket).
    ///
    /// This does not check that it is a memfd; [`Memfd::seals`] fails on other files.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        let backing = backing_of(fd.as_fd())?;
        Ok(Self { fd, backing })
    }

    /// What backs this memfd.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// True for a hugetlb memfd.
    pub fn is_hugetlb(&self) -> bool {
        self.backing.hugetlb
    }

    /// The page size of the backing.
    pub fn page_size(&self) -> u64 {
        self.backing.page_size
    }

    /// Sets the size (a hugetlb memfd needs a multiple of its page size).
    pub fn set_size(&self, size: u64) -> Result<()> {
        rustix::fs::ftruncate(&self.fd, size).map_err(SysError::syscall("ftruncate"))
    }

    /// The current size in bytes.
    pub fn size(&self) -> Result<u64> {
        file_size(self.fd.as_fd())
    }

    /// Adds seals.
    pub fn add_seals(&self, seals: Seals) -> Result<()> {
        rustix::fs::fcntl_add_seals(&self.fd, seals).map_err(SysError::syscall("F_ADD_SEALS"))
    }

    /// Reads the seals.
    pub fn seals(&self) -> Result<Seals> {
        seals_of(self.fd.as_fd())
    }

    /// Allocates backing pages for a range now (`fallocate` mode 0), so a hugetlb pool
    /// that is too small is an error here rather than a SIGBUS on first touch.
    pub fn allocate(&self, offset: u64, len: u64) -> Result<()> {
        rustix::fs::fallocate(&self.fd, FallocateFlags::empty(), offset, len)
            .map_err(SysError::syscall("fallocate"))
    }

    /// Frees the pages of a range, keeping the size (`FALLOC_FL_PUNCH_HOLE`).
    pub fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        rustix::fs::fallocate(
            &self.fd,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )
        .map_err(SysError::syscall("fallocate(PUNCH_HOLE)"))
    }

    /// Gives up the fd.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl AsFd for Memfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Reads the seals of any fd; a non-memfd gives [`SysError::NotMemfd`].
pub fn seals_of(fd: BorrowedFd<'_>) -> Result<Seals> {
    rustix::fs::fcntl_get_seals(fd).map_err(|errno| SysError::NotMemfd { errno })
}

/// The size of the file behind `fd`.
pub fn file_size(fd: BorrowedFd<'_>) -> Result<u64> {
    let stat = rustix::fs::fstat(fd).map_err(SysError::syscall("fstat"))?;
    Ok(stat.st_size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_memfd_is_sealable_and_sized() {
        let memfd = Memfd::create("guestfb-test").unwrap();
        assert!(!memfd.is_hugetlb());
        assert_eq!(memfd.page_size(), crate::sys::page_size());
        memfd.set_size(3 * 4096).unwrap();
        assert_eq!(memfd.size().unwrap(), 3 * 4096);
        memfd.add_seals(Seals::SHRINK | Seals::GROW).unwrap();
        let seals = memfd.seals().unwrap();
        assert!(seals.contains(Seals::SHRINK | Seals::GROW));
        assert!(!seals.contains(Seals::WRITE));
        // A shrink seal holds.
        assert!(memfd.set_size(4096).is_err());
    }

    #[test]
    fn a_pipe_is_not_a_memfd() {
        let (reader, _writer) = std::io::pipe().unwrap();
        assert!(matches!(
            seals_of(reader.as_fd()),
            Err(SysError::NotMemfd { .. })
        ));
    }

    #[test]
    fn odd_huge_page_sizes_are_refused() {
        assert!(matches!(
            Memfd::create_hugetlb("x", 3 << 20),
            Err(SysError::BadHugePageSize(_))
        ));
    }
}
