//! Thin safe wrappers over the kernel interfaces guestfb uses: memfd, hugetlb pools,
//! `/dev/udmabuf` and dma-buf. Nothing above this module issues these syscalls itself.
//! [`volatile`] is the one view type of memory others write (guest RAM, dma-buf
//! mappings): every layer above reads and writes such memory through it.
//!
//! The kernel-interface `unsafe` blocks live here, each in a small wrapper with a
//! `// SAFETY:` line. The others are FFI and SIMD: EGL and GL calls (`import::egl`,
//! `present::gl`, `present::wayland::egl`, `present::kms::glfill`) and the conversion
//! kernels' intrinsics (`import::convert`), each with its own `// SAFETY:` line.

pub mod dmabuf;
pub mod fdkind;
pub mod hugetlb;
pub mod memfd;
pub mod udmabuf;
pub mod volatile;

use rustix::io::Errno;

/// Errors from the kernel-interface layer. Each variant names what was wrong and the
/// numbers involved, so a user can act on the message alone.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A system call failed.
    #[error("{op} failed: {errno}")]
    Syscall {
        /// What was being done.
        op: &'static str,
        /// The kernel's error.
        errno: Errno,
    },
    /// The fd is not a memfd (no seals can be read from it).
    #[error("fd is not a memfd (F_GET_SEALS: {errno}); udmabuf takes only memfds")]
    NotMemfd {
        /// The error F_GET_SEALS returned.
        errno: Errno,
    },
    /// The memfd lacks `F_SEAL_SHRINK`, so the pages under a udmabuf could vanish.
    #[error("memfd is not sealed with F_SEAL_SHRINK (seals {seals:#x}); udmabuf requires it")]
    MissingSealShrink {
        /// The memfd's seals.
        seals: u32,
    },
    /// The memfd has `F_SEAL_WRITE` or `F_SEAL_FUTURE_WRITE`, which udmabuf refuses (it
    /// maps pages writable).
    #[error(
        "memfd is sealed with F_SEAL_WRITE or F_SEAL_FUTURE_WRITE (seals {seals:#x}); \
         udmabuf refuses both"
    )]
    SealWriteSet {
        /// The memfd's seals.
        seals: u32,
    },
    /// An offset is not a multiple of the page size.
    #[error("offset {offset} is not page aligned (page {page})")]
    UnalignedOffset {
        /// The offset given.
        offset: u64,
        /// The required alignment.
        page: u64,
    },
    /// A size is not a multiple of the page size.
    #[error("size {size} is not page aligned (page {page})")]
    UnalignedSize {
        /// The size given.
        size: u64,
        /// The required alignment.
        page: u64,
    },
    /// A range has zero length.
    #[error("range at offset {offset} is empty")]
    EmptyRange {
        /// Where the empty range starts.
        offset: u64,
    },
    /// A range does not lie inside its memfd.
    #[error("range {offset}+{size} ends past the memfd's end ({file_size} bytes)")]
    RangePastEnd {
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        size: u64,
        /// Size of the memfd.
        file_size: u64,
    },
    /// The total size is over the udmabuf module's `size_limit_mb`.
    #[error(
        "udmabuf of {size} bytes is over size_limit_mb={limit_mb}; raise it with \
         `udmabuf.size_limit_mb=N` on the kernel command line (built in) or \
         /sys/module/udmabuf/parameters/size_limit_mb (module)"
    )]
    SizeLimit {
        /// Requested total size in bytes.
        size: u64,
        /// The module's limit in MiB.
        limit_mb: u64,
    },
    /// More ranges than the udmabuf module's `list_limit`.
    #[error(
        "udmabuf list of {count} ranges is over list_limit={limit}; raise it with \
         `udmabuf.list_limit=N` on the kernel command line (built in) or \
         /sys/module/udmabuf/parameters/list_limit (module)"
    )]
    ListLimit {
        /// Number of ranges requested.
        count: usize,
        /// The module's limit.
        limit: u64,
    },
    /// `/dev/udmabuf` could not be opened.
    #[error("cannot open /dev/udmabuf: {errno} (needs CONFIG_UDMABUF and access to the node)")]
    UdmabufUnavailable {
        /// The open error.
        errno: Errno,
    },
    /// A mapping or access would go past the end of a buffer.
    #[error("access {offset}+{len} is outside the {size}-byte buffer")]
    OutOfBounds {
        /// Start of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Size of the buffer.
        size: u64,
    },
    /// Writing was asked of a read-only mapping.
    #[error(
        "the {len}-byte mapping is read-only; map it with Access::Write or \
         Access::ReadWrite to write it"
    )]
    ReadOnlyMapping {
        /// Length of the mapping.
        len: u64,
    },
    /// A hugetlb page size the kernel cannot express in memfd flags.
    #[error("hugetlb page size {0} is not a power of two between 64 KiB and 16 GiB")]
    BadHugePageSize(u64),
}

impl SysError {
    pub(crate) fn syscall(op: &'static str) -> impl FnOnce(Errno) -> Self {
        move |errno| Self::Syscall { op, errno }
    }

    /// The errno behind the error, where there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Syscall { errno, .. }
            | Self::NotMemfd { errno }
            | Self::UdmabufUnavailable { errno } => Some(*errno),
            _ => None,
        }
    }
}

/// Result of the `sys` layer.
pub type Result<T, E = SysError> = std::result::Result<T, E>;

/// The base page size of the running kernel.
pub fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

/// The running kernel's release string (`uname -r`).
pub fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

/// Parses a kernel release such as `6.12.117+deb12-amd64` into (major, minor).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Waits up to `timeout` for `fd` to become readable (a DRM event, a signalled sync
/// file). `Ok(false)` on timeout; EINTR is retried.
pub fn poll_readable(
    fd: std::os::fd::BorrowedFd<'_>,
    timeout: std::time::Duration,
) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let millis = libc::c_int::try_from(left.as_millis()).unwrap_or(libc::c_int::MAX);
        let mut pollfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pollfd` is one valid, writable pollfd for the duration of the call and
        // its fd is kept open by the borrow.
        let ret = unsafe { libc::poll(&mut pollfd, 1, millis) };
        match ret {
            0 => return Ok(false),
            n if n > 0 => return Ok(true),
            _ => {
                let error = std::io::Error::last_os_error();
                if error.kind() != std::io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

/// Takes ownership of an fd number the kernel wrote into memory it was given (an
/// out-fence pointer); `None` for a negative number.
///
/// Only for numbers the kernel has just created for this process and nobody else owns.
pub fn adopt_kernel_fd(raw: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if raw < 0 {
        return None;
    }
    // SAFETY: the kernel installed `raw` for us in the call that wrote it (for example
    // WRITEBACK_OUT_FENCE_PTR); nothing else in the process owns it, so it is ours to close.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_kernel_version("6.12.117+deb12-amd64"), Some((6, 12)));
        assert_eq!(parse_kernel_version("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(parse_kernel_version("garbage"), None);
    }

    #[test]
    fn errors_carry_their_numbers() {
        let error = SysError::UnalignedOffset {
            offset: 4097,
            page: 4096,
        };
        assert_eq!(
            error.to_string(),
            "offset 4097 is not page aligned (page 4096)"
        );
    }
}
