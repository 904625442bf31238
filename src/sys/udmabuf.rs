//! `/dev/udmabuf`: turning memfd ranges into a dma-buf.
//!
//! Every precondition the kernel checks is checked here first, so a bad request gets a
//! precise error (which seal, which offset, which limit and how to raise it) instead of
//! a bare EINVAL.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::dmabuf::DmaBuf;
use super::hugetlb::read_number;
use super::memfd::{file_size, seals_of, Seals};
use super::{Result, SysError};

const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;
const UDMABUF_CREATE: libc::c_ulong = ioc_write(0x42, std::mem::size_of::<CreateArg>());
const UDMABUF_CREATE_LIST: libc::c_ulong = ioc_write(0x43, std::mem::size_of::<CreateListHeader>());

/// `_IOW('u', nr, size)`.
const fn ioc_write(nr: u8, size: usize) -> libc::c_ulong {
    const IOC_WRITE: libc::c_ulong = 1;
    (IOC_WRITE << 30)
        | ((size as libc::c_ulong) << 16)
        | ((b'u' as libc::c_ulong) << 8)
        | nr as libc::c_ulong
}

/// `struct udmabuf_create`.
#[repr(C)]
struct CreateArg {
    memfd: u32,
    flags: u32,
    offset: u64,
    size: u64,
}

/// `struct udmabuf_create_list` without its flexible array.
#[repr(C)]
struct CreateListHeader {
    flags: u32,
    count: u32,
}

/// `struct udmabuf_create_item`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CreateItem {
    memfd: u32,
    pad: u32,
    offset: u64,
    size: u64,
}

/// The udmabuf module's limits (`/sys/module/udmabuf/parameters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Largest udmabuf in MiB (`size_limit_mb`, default 64).
    pub size_limit_mb: u64,
    /// Most ranges in one `UDMABUF_CREATE_LIST` (`list_limit`, default 1024).
    pub list_limit: u64,
}

impl Limits {
    /// The kernel's defaults, used when sysfs does not show the parameters.
    pub const KERNEL_DEFAULTS: Self = Self {
        size_limit_mb: 64,
        list_limit: 1024,
    };

    /// Reads the limits from sysfs; `None` when the parameters are not visible.
    pub fn read() -> Option<Self> {
        let dir = Path::new("/sys/module/udmabuf/parameters");
        Some(Self {
            size_limit_mb: read_number(&dir.join("size_limit_mb"))?,
            list_limit: read_number(&dir.join("list_limit"))?,
        })
    }

    /// The limit in bytes.
    pub fn size_limit_bytes(&self) -> u64 {
        self.size_limit_mb.saturating_mul(1 << 20)
    }

    /// Checks a request of `count` ranges totalling `size` bytes against the limits.
    pub fn check(&self, count: usize, size: u64) -> Result<()> {
        if count as u64 > self.list_limit {
            return Err(SysError::ListLimit {
                count,
                limit: self.list_limit,
            });
        }
        if size > self.size_limit_bytes() {
            return Err(SysError::SizeLimit {
                size,
                limit_mb: self.size_limit_mb,
            });
        }
        Ok(())
    }
}

/// One memfd range of a udmabuf.
#[derive(Debug, Clone, Copy)]
pub struct Range<'fd> {
    /// The memfd holding the pages.
    pub memfd: BorrowedFd<'fd>,
    /// Byte offset in the memfd (page aligned).
    pub offset: u64,
    /// Length in bytes (page aligned).
    pub size: u64,
}

/// An open `/dev/udmabuf` with the module limits it enforces.
#[derive(Debug)]
pub struct Udmabuf {
    device: OwnedFd,
    limits: Limits,
}

/// Path of the udmabuf device node.
pub const DEVICE_PATH: &str = "/dev/udmabuf";

impl Udmabuf {
    /// Opens `/dev/udmabuf` and reads its limits.
    pub fn open() -> Result<Self> {
        let device = rustix::fs::open(DEVICE_PATH, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|errno| SysError::UdmabufUnavailable { errno })?;
        Ok(Self {
            device,
            limits: Limits::read().unwrap_or(Limits::KERNEL_DEFAULTS),
        })
    }

    /// Whether `/dev/udmabuf` exists on this system.
    pub fn is_present() -> bool {
        Path::new(DEVICE_PATH).exists()
    }

    /// The limits this device enforces.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Replaces the limits checked before each ioctl (tests use smaller ones).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// `UDMABUF_CREATE`: one range of one memfd becomes a dma-buf.
    pub fn create(&self, range: Range<'_>) -> Result<DmaBuf> {
        check_range(&range)?;
        self.limits.check(1, range.size)?;
        let arg = CreateArg {
            memfd: range.memfd.as_raw_fd() as u32,
            flags: UDMABUF_FLAGS_CLOEXEC,
            offset: range.offset,
            size: range.size,
        };
        // SAFETY: UDMABUF_CREATE reads one `struct udmabuf_create`, which `arg` is, and
        // returns a new fd or -1; it does not keep the pointer.
        let fd = unsafe {
            ioctl_returning_fd(&self.device, UDMABUF_CREATE, &arg as *const _ as *const u8)
        }
        .map_err(SysError::syscall("UDMABUF_CREATE"))?;
        DmaBuf::from_fd(fd)
    }

    /// `UDMABUF_CREATE_LIST`: ranges (of one or several memfds) become one dma-buf, in
    /// the order given.
    pub fn create_list(&self, ranges: &[Range<'_>]) -> Result<DmaBuf> {
        let mut total: u64 = 0;
        for range in ranges {
            check_range(range)?;
            total = total.saturating_add(range.size);
        }
        self.limits.check(ranges.len(), total)?;
        if ranges.is_empty() {
            return Err(SysError::EmptyRange { offset: 0 });
        }
        // Header then items, in one u64-aligned buffer.
        let header_words = std::mem::size_of::<CreateListHeader>() / 8;
        let item_words = std::mem::size_of::<CreateItem>() / 8;
        let mut buffer = vec![0u64; header_words + item_words * ranges.len()];
        let header = CreateListHeader {
            flags: UDMABUF_FLAGS_CLOEXEC,
            count: ranges.len() as u32,
        };
        let items: Vec<CreateItem> = ranges
            .iter()
            .map(|range| CreateItem {
                memfd: range.memfd.as_raw_fd() as u32,
                pad: 0,
                offset: range.offset,
                size: range.size,
            })
            .collect();
        let bytes = buffer.as_mut_ptr() as *mut u8;
        // SAFETY: `buffer` is u64-aligned and holds exactly one header followed by
        // `items.len()` items, all plain-old-data `repr(C)` structs.
        unsafe {
            std::ptr::write_unaligned(bytes as *mut CreateListHeader, header);
            std::ptr::copy_nonoverlapping(
                items.as_ptr() as *const u8,
                bytes.add(std::mem::size_of::<CreateListHeader>()),
                std::mem::size_of_val(items.as_slice()),
            );
        }
        // SAFETY: UDMABUF_CREATE_LIST reads the header and `count` items that follow it,
        // all inside `buffer`; it returns a new fd or -1 and keeps no pointer.
        let fd = unsafe { ioctl_returning_fd(&self.device, UDMABUF_CREATE_LIST, bytes) }
            .map_err(SysError::syscall("UDMABUF_CREATE_LIST"))?;
        DmaBuf::from_fd(fd)
    }
}

/// Checks one range the way the kernel will: memfd with F_SEAL_SHRINK and without
/// F_SEAL_WRITE or F_SEAL_FUTURE_WRITE, page-aligned, non-empty and inside the file.
pub fn check_range(range: &Range<'_>) -> Result<()> {
    let seals = seals_of(range.memfd)?;
    if !seals.contains(Seals::SHRINK) {
        return Err(SysError::MissingSealShrink {
            seals: seals.bits(),
        });
    }
    // The kernel denies F_SEAL_FUTURE_WRITE as well (SEALS_DENIED in udmabuf.c).
    if seals.intersects(Seals::WRITE | Seals::FUTURE_WRITE) {
        return Err(SysError::SealWriteSet {
            seals: seals.bits(),
        });
    }
    let page = super::page_size();
    if range.offset % page != 0 {
        return Err(SysError::UnalignedOffset {
            offset: range.offset,
            page,
        });
    }
    if range.size == 0 {
        return Err(SysError::EmptyRange {
            offset: range.offset,
        });
    }
    if range.size % page != 0 {
        return Err(SysError::UnalignedSize {
            size: range.size,
            page,
        });
    }
    let file_size = file_size(range.memfd)?;
    if range
        .offset
        .checked_add(range.size)
        .is_none_or(|end| end > file_size)
    {
        return Err(SysError::RangePastEnd {
            offset: range.offset,
            size: range.size,
            file_size,
        });
    }
    Ok(())
}

/// Issues an ioctl whose return value is a new fd.
///
/// # Safety
/// `arg` must point to the argument `request` expects, valid for the whole call.
unsafe fn ioctl_returning_fd(
    device: &OwnedFd,
    request: libc::c_ulong,
    arg: *const u8,
) -> std::result::Result<OwnedFd, Errno> {
    // SAFETY: the caller guarantees `arg` matches `request`; the device fd is open.
    let ret = unsafe { libc::ioctl(device.as_fd().as_raw_fd(), request, arg) };
    if ret < 0 {
        return Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    // SAFETY: a non-negative return of these ioctls is a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_uapi_header() {
        assert_eq!(UDMABUF_CREATE, 0x4018_7542);
        assert_eq!(UDMABUF_CREATE_LIST, 0x4008_7543);
    }

    #[test]
    fn limits_say_which_and_how_to_raise() {
        let limits = Limits {
            size_limit_mb: 64,
            list_limit: 2,
        };
        assert!(limits.check(2, 64 << 20).is_ok());
        let too_big = limits.check(1, (64 << 20) + 4096).unwrap_err();
        assert!(matches!(too_big, SysError::SizeLimit { limit_mb: 64, .. }));
        assert!(too_big.to_string().contains("udmabuf.size_limit_mb"));
        let too_many = limits.check(3, 4096).unwrap_err();
        assert!(matches!(
            too_many,
            SysError::ListLimit { count: 3, limit: 2 }
        ));
    }
}
