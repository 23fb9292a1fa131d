//! Giving back the code that only planning needed.
//!
//! Planning a script touches code all over the binary: DataFusion registers hundreds of
//! functions and optimizer rules, and the kernel maps a window of pages around each fault. On a
//! 100 MB binary that leaves 20-40 MB of code resident for the whole life of a job that then
//! runs a few hundred kilobytes of it. Once the job is running, the binary's read-only mappings
//! are advised `MADV_PAGEOUT`: the kernel drops the pages (they are clean file pages, read back
//! from the binary if ever needed again) and the job faults back in the little it uses. An idle
//! job measured 47 MB before and 11.6 MB after (docs/BENCHMARKS.md).

use std::time::Duration;

/// How long after the job starts the code is given back: the job's own code is warm by then,
/// and a job this short never pays for it.
pub const AFTER: Duration = Duration::from_secs(2);

/// Advises the kernel to page out the binary's read-only mappings; returns the bytes advised.
/// Best effort: on kernels without `MADV_PAGEOUT` (before Linux 5.4) nothing happens.
pub fn page_out_code() -> usize {
    let (Ok(exe), Ok(maps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/maps"),
    ) else {
        return 0;
    };
    let exe = exe.to_string_lossy();
    let mut advised = 0;
    for line in maps.lines() {
        // "lo-hi perms offset dev inode path"
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if fields.nth(3) != Some(exe.as_ref()) || perms.contains('w') {
            continue;
        }
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        else {
            continue;
        };
        if advise_pageout(lo, hi - lo) {
            advised += hi - lo;
        }
    }
    advised
}

/// `madvise(MADV_PAGEOUT)` over one mapping of our own executable.
#[allow(unsafe_code)]
fn advise_pageout(addr: usize, len: usize) -> bool {
    // SAFETY: `addr..addr + len` is a whole mapping listed in /proc/self/maps: page aligned and
    // mapped. MADV_PAGEOUT is advice about residency only: the mapping, its contents and its
    // protection are unchanged (clean file-backed pages are re-read on the next access), so no
    // Rust reference to that memory can observe a difference.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_PAGEOUT) == 0 }
}

/// glibc's threshold above which an allocation gets its own mapping, fixed (see
/// [`tune_allocator`]).
const MMAP_THRESHOLD: libc::c_int = 16 << 20;

/// Fixes glibc's mmap threshold at 16 MiB. By default it is dynamic and a pipeline's batch-sized
/// buffers (hundreds of KiB to a few MiB, allocated and freed per batch on several threads)
/// were mapped and unmapped over and over: page faults and page clearing cost 10-15% of the CPU
/// of the TUMBLE benchmark (`perf`: `clear_page_rep`, `exc_page_fault`; docs/BENCHMARKS.md).
/// Memory freed at the top of the heap is still trimmed (the trim threshold is untouched), so
/// an idle job still gives it back.
#[allow(unsafe_code)]
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
