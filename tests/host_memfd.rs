//! Host tier: memfd and hugetlb memfd creation and what backs them.
//!
//! The hugetlb test needs free 2 MiB pages; `scripts/test.sh` reserves some. Without
//! them it fails (with what to do), it does not pass silently.

use guestfb::sys::hugetlb;
use guestfb::sys::memfd::{Memfd, Seals};

const HUGE: u64 = 2 << 20;

#[test]
fn normal_memfd_is_not_hugetlb() {
    let memfd = Memfd::create("host-memfd").unwrap();
    let backing = memfd.backing();
    assert!(!backing.hugetlb);
    assert_eq!(backing.page_size, guestfb::sys::page_size());
    memfd.set_size(1 << 20).unwrap();
    memfd.add_seals(Seals::SHRINK).unwrap();
    assert!(memfd.seals().unwrap().contains(Seals::SHRINK));
}

#[test]
fn hugetlb_memfd_is_detected_with_its_page_size() {
    let pool = hugetlb::pool(HUGE);
    let free = pool.map_or(0, |pool| pool.free);
    assert!(
        free >= 2,
        "need at least 2 free 2 MiB hugepages, have {free} (pool {pool:?}); scripts/test.sh \
         reserves them as root, or run `echo 8 > /proc/sys/vm/nr_hugepages`"
    );
    let memfd = Memfd::create_hugetlb("host-huge", HUGE).unwrap();
    let backing = memfd.backing();
    assert!(
        backing.hugetlb,
        "a MFD_HUGETLB memfd must read as hugetlbfs"
    );
    assert_eq!(backing.page_size, HUGE);
    assert!(memfd.is_hugetlb());
    memfd.set_size(2 * HUGE).unwrap();
    memfd.allocate(0, 2 * HUGE).unwrap();
    memfd.add_seals(Seals::SHRINK).unwrap();
    assert!(memfd.seals().unwrap().contains(Seals::SHRINK));
}
