//! Large zeroed output buffers backed by transparent huge pages where the OS offers them.

/// Size of a huge page on x86-64 and aarch64 Linux (2 MiB).
#[cfg(target_os = "linux")]
const HUGE_PAGE: usize = 2 << 20;

/// A zeroed `Vec<f32>` of `len` elements for a large output. The allocator maps fresh pages
/// for it; on Linux they are advised to be transparent huge pages before the first touch, so
/// that writing a 400 MB gradient costs a few hundred page faults instead of ~100 000 (each of
/// which also zeroes its page). The advice is only a hint: errors are ignored.
pub(crate) fn zeroed_output(len: usize) -> Vec<f32> {
    let out = vec![0f32; len]; // calloc: fresh mmapped pages, not yet touched when large
    #[cfg(target_os = "linux")]
    {
        let (start, end) = huge_page_span(out.as_ptr() as usize, std::mem::size_of_val(&*out));
        if end > start {
            // SAFETY: [start, end) lies inside the allocation of `out` (see `huge_page_span`);
            // MADV_HUGEPAGE changes no contents, only how later page faults are served.
            let _ = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE)
            };
        }
    }
    out
}

/// The huge-page-aligned span `[start, end)` inside the `bytes` bytes at address `begin`;
/// empty (`end ≤ start`) when no whole huge page fits.
#[cfg(target_os = "linux")]
fn huge_page_span(begin: usize, bytes: usize) -> (usize, usize) {
    (
        begin.next_multiple_of(HUGE_PAGE),
        (begin + bytes) / HUGE_PAGE * HUGE_PAGE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_output_is_zeroed_and_sized() {
        for len in [0usize, 1, 1000, 3 << 20] {
            let out = zeroed_output(len);
            assert_eq!(out.len(), len);
            assert!(out.iter().all(|&x| x == 0.0));
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn huge_page_span_stays_inside_the_buffer() {
        let h = HUGE_PAGE;
        // aligned start, two whole pages and a bit
        assert_eq!(huge_page_span(4 * h, 2 * h + 5), (4 * h, 6 * h));
        // unaligned start: the first whole page begins at the next boundary
        assert_eq!(huge_page_span(4 * h + 8, 2 * h), (5 * h, 6 * h));
        // no whole page inside
        let (s, e) = huge_page_span(4 * h + 8, h);
        assert!(e <= s);
    }
}
