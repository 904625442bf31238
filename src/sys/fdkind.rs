//! What kind of file an fd from a peer is: a dma-buf, a memfd, or something else.
//!
//! A VMM hands a display fds of several kinds behind one D-Bus signature: QEMU's
//! `ScanoutMap` carries a QEMU-private memfd for a 2D surface but a virtio-gpu blob's
//! udmabuf (a dma-buf, whose `fstat` size reads 0) for a blob scanout. Each kind has its
//! own zero-copy path, so the display asks the kernel before it maps anything:
//!
//! - a dma-buf has an `exp_name:` line in `/proc/self/fdinfo/<fd>`; its size is where
//!   `lseek(SEEK_END)` lands;
//! - a memfd (shmem or hugetlbfs file) answers `F_GET_SEALS`;
//! - anything else (pipe, socket, directory, device, regular file) is named by its
//!   `fstat` type.

use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::fs::FileType;

use super::memfd::{self, Seals};
use super::{Result, SysError};

/// The kind of file behind an fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdKind {
    /// A dma-buf.
    DmaBuf {
        /// Size in bytes (`lseek(SEEK_END)`).
        size: u64,
        /// The exporter's name from fdinfo (`udmabuf`, `vgem`, `virtio_gpu`…).
        exporter: String,
    },
    /// A memfd.
    Memfd {
        /// Size in bytes.
        size: u64,
        /// Its seals: udmabuf needs `F_SEAL_SHRINK` and refuses `F_SEAL_WRITE`.
        seals: Seals,
        /// Backed by hugetlbfs.
        hugetlb: bool,
    },
    /// Something that is neither.
    Other {
        /// What it is, for a message: "pipe", "socket", "directory"…
        what: &'static str,
        /// Its `fstat` size.
        size: u64,
    },
}

impl FdKind {
    /// A short name of the kind for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Self::DmaBuf { .. } => "dma-buf",
            Self::Memfd { .. } => "memfd",
            Self::Other { what, .. } => what,
        }
    }

    /// The size in bytes the kind reports.
    pub fn size(&self) -> u64 {
        match self {
            Self::DmaBuf { size, .. } | Self::Memfd { size, .. } | Self::Other { size, .. } => {
                *size
            }
        }
    }
}

/// Classifies `fd` without mapping or reading it.
pub fn classify(fd: BorrowedFd<'_>) -> Result<FdKind> {
    if let Some(exporter) = dmabuf_exporter(fd) {
        let size = rustix::fs::seek(fd, rustix::fs::SeekFrom::End(0))
            .map_err(SysError::syscall("lseek(dma-buf)"))?;
        return Ok(FdKind::DmaBuf { size, exporter });
    }
    let stat = rustix::fs::fstat(fd).map_err(SysError::syscall("fstat"))?;
    let size = stat.st_size as u64;
    let file_type = FileType::from_raw_mode(stat.st_mode);
    if file_type == FileType::RegularFile {
        if let Ok(seals) = memfd::seals_of(fd) {
            let hugetlb = memfd::backing_of(fd)?.hugetlb;
            return Ok(FdKind::Memfd {
                size,
                seals,
                hugetlb,
            });
        }
    }
    let what = match file_type {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Fifo => "pipe",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Symlink => "symlink",
        FileType::Unknown => "anonymous file",
    };
    Ok(FdKind::Other { what, size })
}

/// The `exp_name` of a dma-buf fd, `None` for any other fd.
fn dmabuf_exporter(fd: BorrowedFd<'_>) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("exp_name:"))
        .map(|name| name.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;
    use crate::sys::memfd::Memfd;

    #[test]
    fn memfds_pipes_and_directories_are_told_apart() {
        let memfd = Memfd::create("fdkind").unwrap();
        memfd.set_size(8192).unwrap();
        memfd.add_seals(Seals::SHRINK).unwrap();
        match classify(memfd.as_fd()).unwrap() {
            FdKind::Memfd {
                size,
                seals,
                hugetlb,
            } => {
                assert_eq!(size, 8192);
                assert!(seals.contains(Seals::SHRINK));
                assert!(!hugetlb);
            }
            other => panic!("a memfd classified as {other:?}"),
        }
        let (reader, _writer) = std::io::pipe().unwrap();
        assert_eq!(classify(reader.as_fd()).unwrap().name(), "pipe");
        let dir = std::fs::File::open("/").unwrap();
        assert_eq!(classify(dir.as_fd()).unwrap().name(), "directory");
        let null = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(classify(null.as_fd()).unwrap().name(), "character device");
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(classify(file.as_fd()).unwrap().name(), "regular file");
    }
}
