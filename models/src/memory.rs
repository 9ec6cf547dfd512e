//! How a training process keeps the memory it frees (`trainer train` and `trainer bench`).
//!
//! A CPU training step allocates and frees hundreds of tensors, the largest hundreds of MB
//! (`conv`'s im2col of a ResNet-18's first stage at batch 32 and 112x112 is 231 MB). glibc's malloc gives
//! every block above its mmap threshold (at most 32 MB by default) its own mapping and
//! unmaps it when freed, and trims the heap's free top back to the system beyond 128 KB, so
//! the next step faults every page in again, and the kernel zeroes each: measured here, a
//! quarter of a training epoch's time went to page faults and system time. Keeping freed
//! blocks in the heap costs no more peak memory (a step's tensors are the same every step).

use std::sync::OnceLock;

/// Largest block glibc may serve from its heap instead of a mapping of its own (1 GiB: every
/// tensor of a ResNet step at the batch sizes a CPU trains with).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 1 << 30;

/// Free heap top glibc keeps instead of returning it (2 GiB, the most a `c_int` setting can say).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = libc::c_int::MAX;

/// Tells the allocator to keep freed tensors' memory for the next step (see the module's
/// documentation). Once per process; later calls return the first call's answer: `true`
/// where the allocator took both settings, `false` where it refused one or is not glibc's
/// (training then only runs slower).
pub fn keep_freed_memory() -> bool {
    static APPLIED: OnceLock<bool> = OnceLock::new();
    *APPLIED.get_or_init(apply)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes two of glibc's global tuning values (it takes malloc's own
    // lock); no pointer crosses the call, and memory allocated before stays valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_both_settings() {
        assert!(keep_freed_memory());
        // A second call answers the same without setting anything again.
        assert!(keep_freed_memory());
    }
}
