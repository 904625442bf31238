//! hugetlb pools as the kernel reports them in sysfs.

use std::path::Path;

/// One hugetlb pool (one page size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HugePool {
    /// Page size in bytes.
    pub page_size: u64,
    /// Pages reserved in the pool (`nr_hugepages`).
    pub total: u64,
    /// Pages not in use (`free_hugepages`).
    pub free: u64,
}

const HUGEPAGES_DIR: &str = "/sys/kernel/mm/hugepages";

/// All hugetlb pools of the running kernel, smallest page size first.
pub fn pools() -> Vec<HugePool> {
    let Ok(entries) = std::fs::read_dir(HUGEPAGES_DIR) else {
        return Vec::new();
    };
    let mut pools: Vec<HugePool> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let kib: u64 = name
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let dir = entry.path();
            Some(HugePool {
                page_size: kib * 1024,
                total: read_number(&dir.join("nr_hugepages"))?,
                free: read_number(&dir.join("free_hugepages"))?,
            })
        })
        .collect();
    pools.sort_by_key(|pool| pool.page_size);
    pools
}

/// The pool for one page size, if the kernel has it.
pub fn pool(page_size: u64) -> Option<HugePool> {
    pools().into_iter().find(|pool| pool.page_size == page_size)
}

/// Reads a decimal number from a sysfs or procfs file.
pub(crate) fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
