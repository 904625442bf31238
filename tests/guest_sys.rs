//! Guest tier: the sys layer against a real kernel (`/dev/udmabuf`, dma-buf mmap and
//! sync). Runs inside the QEMU guest of `scripts/guest/run.sh`; elsewhere each test
//! skips (or fails under `GUESTFB_REQUIRE_GUEST=1`). Run single-threaded
//! (`-- --test-threads=1`) so hugetlb pool use is deterministic.

mod common;

use std::os::fd::AsFd;

use guestfb::sys::dmabuf::{Access, DmaBuf, Mapping};
use guestfb::sys::hugetlb;
use guestfb::sys::memfd::{Memfd, Seals};
use guestfb::sys::udmabuf::{Limits, Range, Udmabuf};
use guestfb::sys::volatile::{VolatileSlice, VolatileSliceMut};
use guestfb::sys::SysError;
use rustix::io::Errno;

const PAGE: u64 = 4096;
const HUGE: u64 = 2 << 20;

/// Opens `/dev/udmabuf`, or `None` when the test must skip (not in the guest).
fn udmabuf(test: &str) -> Option<Udmabuf> {
    if !common::require_guest(test) {
        return None;
    }
    Some(Udmabuf::open().expect("open /dev/udmabuf"))
}

/// The 32-bit word expected at word `index` of a buffer tagged `tag`.
fn word(tag: u32, index: u64) -> u32 {
    tag.wrapping_mul(0x9E37_79B9) ^ (index as u32).wrapping_mul(0x0101_0101) ^ index as u32
}

/// Fills `bytes` (shared memory: written through its view) with the pattern of `tag`,
/// starting at word `first_word`.
fn fill(bytes: VolatileSliceMut<'_>, tag: u32, first_word: u64) {
    let pattern: Vec<u8> = (0..bytes.len() as u64 / 4)
        .flat_map(|i| word(tag, first_word + i).to_le_bytes())
        .collect();
    bytes.write_at(0, &pattern).unwrap();
}

/// Checks `bytes` against the pattern of `tag` from word `first_word`; panics at the
/// first wrong word, naming its byte offset.
fn check(bytes: VolatileSlice<'_>, tag: u32, first_word: u64, what: &str) {
    let bytes = bytes.to_vec();
    let mut wrong = 0usize;
    let mut first = None;
    for (i, chunk) in bytes.chunks_exact(4).enumerate() {
        let got = u32::from_le_bytes(chunk.try_into().unwrap());
        if got != word(tag, first_word + i as u64) {
            wrong += 1;
            first.get_or_insert(i * 4);
        }
    }
    assert!(
        first.is_none(),
        "{what}: {wrong} of {} words wrong, the first at byte {}",
        bytes.len() / 4,
        first.unwrap_or(0)
    );
}

/// A normal memfd of `size` bytes filled with the pattern of `tag`, then sealed.
fn filled_memfd(size: u64, tag: u32, seals: Seals) -> Memfd {
    let memfd = Memfd::create("guest-sys").unwrap();
    memfd.set_size(size).unwrap();
    {
        let map = Mapping::new(memfd.as_fd(), 0, size as usize, Access::ReadWrite).unwrap();
        fill(map.bytes_mut().unwrap(), tag, 0);
    }
    if !seals.is_empty() {
        memfd.add_seals(seals).unwrap();
    }
    memfd
}

fn range(memfd: &Memfd, offset: u64, size: u64) -> Range<'_> {
    Range {
        memfd: memfd.as_fd(),
        offset,
        size,
    }
}

/// Maps a dma-buf for reading and checks it against `tag` from word `first_word`.
fn check_dmabuf(dmabuf: &DmaBuf, tag: u32, first_word: u64, what: &str) {
    let map = dmabuf.mmap(Access::Read).unwrap();
    let guard = dmabuf.sync(Access::Read).unwrap();
    check(map.bytes(), tag, first_word, what);
    guard.end().unwrap();
}

fn expect_einval(result: Result<DmaBuf, SysError>, what: &str) {
    match result {
        Err(SysError::Syscall { errno, .. }) if errno == Errno::INVAL => {}
        other => panic!("{what}: expected the kernel's EINVAL, got {other:?}"),
    }
}

#[test]
fn create_from_a_sealed_memfd_maps_its_contents() {
    let Some(udmabuf) = udmabuf("create_from_a_sealed_memfd_maps_its_contents") else {
        return;
    };
    let memfd = filled_memfd(16 * PAGE, 1, Seals::SHRINK);
    let whole = udmabuf.create(range(&memfd, 0, 16 * PAGE)).unwrap();
    assert_eq!(whole.size(), 16 * PAGE);
    check_dmabuf(&whole, 1, 0, "whole memfd");
    // A range from the middle: the dma-buf starts at that page.
    let part = udmabuf.create(range(&memfd, 4 * PAGE, 8 * PAGE)).unwrap();
    assert_eq!(part.size(), 8 * PAGE);
    check_dmabuf(&part, 1, 4 * PAGE / 4, "pages 4..12");
}

#[test]
fn create_from_a_hugetlb_memfd_maps_its_contents() {
    let Some(udmabuf) = udmabuf("create_from_a_hugetlb_memfd_maps_its_contents") else {
        return;
    };
    let free = hugetlb::pool(HUGE).map_or(0, |pool| pool.free);
    assert!(
        free >= 2,
        "need 2 free 2 MiB hugepages in the guest, have {free} (guestfb.hugepages=)"
    );
    let memfd = Memfd::create_hugetlb("guest-huge", HUGE).unwrap();
    assert!(memfd.backing().hugetlb);
    assert_eq!(memfd.backing().page_size, HUGE);
    memfd.set_size(2 * HUGE).unwrap();
    memfd.allocate(0, 2 * HUGE).unwrap();
    {
        let map = Mapping::new(memfd.as_fd(), 0, (2 * HUGE) as usize, Access::ReadWrite).unwrap();
        fill(map.bytes_mut().unwrap(), 2, 0);
    }
    memfd.add_seals(Seals::SHRINK).unwrap();
    let whole = udmabuf.create(range(&memfd, 0, 2 * HUGE)).unwrap();
    assert_eq!(whole.size(), 2 * HUGE);
    check_dmabuf(&whole, 2, 0, "whole 4 MiB hugetlb memfd");
    // 4 KiB-aligned sub-range inside the second huge page (per-page offsets in a folio).
    let offset = HUGE + 5 * PAGE;
    let part = udmabuf.create(range(&memfd, offset, 9 * PAGE)).unwrap();
    check_dmabuf(&part, 2, offset / 4, "9 pages inside the second huge page");
    // Straddling the two huge pages.
    let offset = HUGE - 3 * PAGE;
    let across = udmabuf.create(range(&memfd, offset, 6 * PAGE)).unwrap();
    check_dmabuf(
        &across,
        2,
        offset / 4,
        "6 pages across the huge page boundary",
    );
}

#[test]
fn create_list_keeps_the_order_given() {
    let Some(udmabuf) = udmabuf("create_list_keeps_the_order_given") else {
        return;
    };
    let memfd = filled_memfd(4 * PAGE, 3, Seals::SHRINK);
    let other = filled_memfd(2 * PAGE, 4, Seals::SHRINK | Seals::GROW);
    let dmabuf = udmabuf
        .create_list(&[
            range(&memfd, 2 * PAGE, 2 * PAGE),
            range(&memfd, 0, 2 * PAGE),
            range(&other, PAGE, PAGE),
        ])
        .unwrap();
    assert_eq!(dmabuf.size(), 5 * PAGE);
    let map = dmabuf.mmap(Access::Read).unwrap();
    let bytes = map.bytes();
    let page = PAGE as usize;
    check(
        bytes.subslice(0, 2 * page).unwrap(),
        3,
        2 * PAGE / 4,
        "list item 0: pages 2..4",
    );
    check(
        bytes.subslice(2 * page, 2 * page).unwrap(),
        3,
        0,
        "list item 1: pages 0..2",
    );
    check(
        bytes.subslice(4 * page, page).unwrap(),
        4,
        PAGE / 4,
        "list item 2: other memfd page 1",
    );
}

#[test]
fn mappings_are_coherent_both_ways() {
    let Some(udmabuf) = udmabuf("mappings_are_coherent_both_ways") else {
        return;
    };
    let size = 8 * PAGE;
    let memfd = filled_memfd(size, 5, Seals::SHRINK);
    let dmabuf = udmabuf.create(range(&memfd, 0, size)).unwrap();
    let guest_view = Mapping::new(memfd.as_fd(), 0, size as usize, Access::ReadWrite).unwrap();
    let display_view = dmabuf.mmap(Access::ReadWrite).unwrap();

    // The guest writes, the display reads.
    fill(guest_view.bytes_mut().unwrap(), 6, 0);
    let guard = dmabuf.sync(Access::Read).unwrap();
    check(
        display_view.bytes(),
        6,
        0,
        "memfd write seen through the dma-buf",
    );
    guard.end().unwrap();

    // The display writes, the guest reads.
    let guard = dmabuf.sync(Access::Write).unwrap();
    fill(display_view.bytes_mut().unwrap(), 7, 0);
    guard.end().unwrap();
    check(
        guest_view.bytes(),
        7,
        0,
        "dma-buf write seen through the memfd",
    );
}

#[test]
fn sync_guards_start_and_end() {
    let Some(udmabuf) = udmabuf("sync_guards_start_and_end") else {
        return;
    };
    let memfd = filled_memfd(PAGE, 8, Seals::SHRINK);
    let dmabuf = udmabuf.create(range(&memfd, 0, PAGE)).unwrap();
    for access in [Access::Read, Access::Write, Access::ReadWrite] {
        let guard = dmabuf
            .sync(access)
            .unwrap_or_else(|e| panic!("sync start {access:?}: {e}"));
        guard
            .end()
            .unwrap_or_else(|e| panic!("sync end {access:?}: {e}"));
    }
    // Dropping a guard ends the access too; a new start works afterwards.
    drop(dmabuf.sync(Access::ReadWrite).unwrap());
    dmabuf.sync(Access::Read).unwrap().end().unwrap();
}

#[test]
fn bad_sync_flags_are_rejected() {
    let Some(udmabuf) = udmabuf("bad_sync_flags_are_rejected") else {
        return;
    };
    let memfd = filled_memfd(PAGE, 9, Seals::SHRINK);
    let dmabuf = udmabuf.create(range(&memfd, 0, PAGE)).unwrap();
    match guestfb::testing::sync_raw(&dmabuf, 0x80) {
        Err(SysError::Syscall { errno, .. }) if errno == Errno::INVAL => {}
        other => panic!("sync flags 0x80: expected EINVAL, got {other:?}"),
    }
}

#[test]
fn memfd_without_seal_shrink_is_refused() {
    let Some(udmabuf) = udmabuf("memfd_without_seal_shrink_is_refused") else {
        return;
    };
    let memfd = filled_memfd(PAGE, 10, Seals::GROW);
    match udmabuf.create(range(&memfd, 0, PAGE)) {
        Err(SysError::MissingSealShrink { seals }) => {
            assert_eq!(seals, Seals::GROW.bits());
        }
        other => panic!("expected MissingSealShrink, got {other:?}"),
    }
}

#[test]
fn memfd_with_a_write_seal_is_refused() {
    let Some(udmabuf) = udmabuf("memfd_with_a_write_seal_is_refused") else {
        return;
    };
    for seal in [Seals::WRITE, Seals::FUTURE_WRITE] {
        let memfd = filled_memfd(PAGE, 11, Seals::SHRINK | seal);
        match udmabuf.create(range(&memfd, 0, PAGE)) {
            Err(SysError::SealWriteSet { seals }) => {
                assert!(Seals::from_bits_retain(seals).contains(seal));
            }
            other => panic!("{seal:?}: expected SealWriteSet, got {other:?}"),
        }
        let list = udmabuf.create_list(&[range(&memfd, 0, PAGE)]);
        assert!(
            matches!(list, Err(SysError::SealWriteSet { .. })),
            "{seal:?} via create_list: {list:?}"
        );
    }
}

#[test]
fn unaligned_offset_is_refused() {
    let Some(udmabuf) = udmabuf("unaligned_offset_is_refused") else {
        return;
    };
    let memfd = filled_memfd(4 * PAGE, 12, Seals::SHRINK);
    match udmabuf.create(range(&memfd, 100, PAGE)) {
        Err(SysError::UnalignedOffset { offset: 100, page }) => assert_eq!(page, PAGE),
        other => panic!("expected UnalignedOffset, got {other:?}"),
    }
}

#[test]
fn range_past_the_end_is_refused() {
    let Some(udmabuf) = udmabuf("range_past_the_end_is_refused") else {
        return;
    };
    let memfd = filled_memfd(2 * PAGE, 13, Seals::SHRINK);
    match udmabuf.create(range(&memfd, PAGE, 2 * PAGE)) {
        Err(SysError::RangePastEnd {
            offset,
            size,
            file_size,
        }) => assert_eq!((offset, size, file_size), (PAGE, 2 * PAGE, 2 * PAGE)),
        other => panic!("expected RangePastEnd, got {other:?}"),
    }
}

#[test]
fn non_memfd_fds_are_refused() {
    let Some(udmabuf) = udmabuf("non_memfd_fds_are_refused") else {
        return;
    };
    let (reader, _writer) = std::io::pipe().unwrap();
    let pipe = udmabuf.create(Range {
        memfd: reader.as_fd(),
        offset: 0,
        size: PAGE,
    });
    assert!(
        matches!(pipe, Err(SysError::NotMemfd { .. })),
        "pipe: expected NotMemfd, got {pipe:?}"
    );
    // A regular file on a non-shmem filesystem (the test binary, on 9p + overlay).
    let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
    let regular = udmabuf.create(Range {
        memfd: file.as_fd(),
        offset: 0,
        size: PAGE,
    });
    assert!(
        matches!(regular, Err(SysError::NotMemfd { .. })),
        "regular file: expected NotMemfd, got {regular:?}"
    );
    // A tmpfs file answers F_GET_SEALS (shmem: F_SEAL_SEAL), so it reads as a file
    // without F_SEAL_SHRINK; the kernel refuses it for the same reason.
    let path = std::path::Path::new("/dev/shm/guestfb-not-a-memfd");
    let tmpfs = std::fs::File::create(path).unwrap();
    std::fs::remove_file(path).unwrap();
    tmpfs.set_len(PAGE).unwrap();
    let shm = udmabuf.create(Range {
        memfd: tmpfs.as_fd(),
        offset: 0,
        size: PAGE,
    });
    assert!(
        matches!(shm, Err(SysError::MissingSealShrink { .. })),
        "tmpfs file: expected MissingSealShrink, got {shm:?}"
    );
}

#[test]
fn size_over_size_limit_is_refused_before_the_ioctl() {
    let Some(mut udmabuf) = udmabuf("size_over_size_limit_is_refused_before_the_ioctl") else {
        return;
    };
    // The real limit comes from sysfs: run.sh boots with udmabuf.size_limit_mb=256.
    let real = udmabuf.limits();
    assert_eq!(Limits::read(), Some(real));
    assert_eq!(
        real.size_limit_mb, 256,
        "udmabuf.size_limit_mb=256 from the kernel command line"
    );

    // Sparse memfd just over the real limit: refused by the typed check.
    let big = (256 << 20) + PAGE;
    let memfd = Memfd::create("over-limit").unwrap();
    memfd.set_size(big).unwrap();
    memfd.add_seals(Seals::SHRINK).unwrap();
    match udmabuf.create(range(&memfd, 0, big)) {
        Err(SysError::SizeLimit { size, limit_mb }) => assert_eq!((size, limit_mb), (big, 256)),
        other => panic!("expected SizeLimit at 256 MiB, got {other:?}"),
    }
    // The kernel agrees when our check is lifted (its size check comes before pinning).
    udmabuf.set_limits(Limits {
        size_limit_mb: 1 << 20,
        ..real
    });
    expect_einval(
        udmabuf.create(range(&memfd, 0, big)),
        "257 MiB past the kernel's limit",
    );

    // A small configured limit is checked before any ioctl.
    udmabuf.set_limits(Limits {
        size_limit_mb: 1,
        ..real
    });
    let two_mib = filled_memfd(2 << 20, 14, Seals::SHRINK);
    match udmabuf.create(range(&two_mib, 0, 2 << 20)) {
        Err(SysError::SizeLimit { size, limit_mb: 1 }) => assert_eq!(size, 2 << 20),
        other => panic!("expected SizeLimit at 1 MiB, got {other:?}"),
    }
    match udmabuf.create_list(&[range(&two_mib, 0, 1 << 20), range(&two_mib, 1 << 20, PAGE)]) {
        Err(SysError::SizeLimit { limit_mb: 1, .. }) => {}
        other => panic!("list over 1 MiB: expected SizeLimit, got {other:?}"),
    }
    // At the limit it still works.
    udmabuf.create(range(&two_mib, 0, 1 << 20)).unwrap();
}

#[test]
fn list_over_list_limit_is_refused() {
    let Some(mut udmabuf) = udmabuf("list_over_list_limit_is_refused") else {
        return;
    };
    let real = udmabuf.limits();
    assert_eq!(real.list_limit, 1024);
    let count = real.list_limit + 1;
    let memfd = filled_memfd(count * PAGE, 15, Seals::SHRINK);
    let pages: Vec<Range<'_>> = (0..count).map(|i| range(&memfd, i * PAGE, PAGE)).collect();
    match udmabuf.create_list(&pages) {
        Err(SysError::ListLimit { count: c, limit }) => {
            assert_eq!((c as u64, limit), (count, 1024))
        }
        other => panic!("expected ListLimit 1024, got {other:?}"),
    }
    // The kernel agrees when our check is lifted.
    udmabuf.set_limits(Limits {
        list_limit: u64::MAX,
        ..real
    });
    expect_einval(
        udmabuf.create_list(&pages),
        "1025 ranges past the kernel's list_limit",
    );
    // Exactly at the kernel's limit works.
    let dmabuf = udmabuf.create_list(&pages[..1024]).unwrap();
    assert_eq!(dmabuf.size(), 1024 * PAGE);
    check_dmabuf(&dmabuf, 15, 0, "1024 one-page ranges");

    udmabuf.set_limits(Limits {
        list_limit: 2,
        ..real
    });
    match udmabuf.create_list(&pages[..3]) {
        Err(SysError::ListLimit { count: 3, limit: 2 }) => {}
        other => panic!("expected ListLimit 2, got {other:?}"),
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn no_fd_leaks_over_1000_cycles() {
    let Some(udmabuf) = udmabuf("no_fd_leaks_over_1000_cycles") else {
        return;
    };
    let memfd = filled_memfd(4 * PAGE, 16, Seals::SHRINK);
    let before = open_fds();
    for cycle in 0..1000u64 {
        let dmabuf = if cycle % 2 == 0 {
            udmabuf.create(range(&memfd, 0, 4 * PAGE)).unwrap()
        } else {
            udmabuf
                .create_list(&[range(&memfd, 2 * PAGE, 2 * PAGE), range(&memfd, 0, PAGE)])
                .unwrap()
        };
        let map = dmabuf.mmap(Access::Read).unwrap();
        let guard = dmabuf.sync(Access::Read).unwrap();
        assert_eq!(
            map.bytes().get_u32_le(0),
            Some(word(16, if cycle % 2 == 0 { 0 } else { 2 * PAGE / 4 }))
        );
        guard.end().unwrap();
        // Failed creates must not leak either.
        assert!(udmabuf.create(range(&memfd, 3, PAGE)).is_err());
    }
    assert_eq!(open_fds(), before, "fds open before and after 1000 cycles");
}
