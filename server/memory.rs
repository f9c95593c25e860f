//! Handing freed memory back to the operating system after a model version is gone.
//!
//! A version's weights and runtime buffers are freed when its last instance thread ends, but glibc keeps freed
//! pages in the arena of the thread that used them, and a reload's new instance threads get arenas of their
//! own: without a trim, every reload of a large model raised resident memory by the model's size (seen in the
//! soak run: +40-60 MiB per reload of MiniLM on ONNX Runtime). The server's own allocations go through
//! mimalloc, which keeps freed memory for a purge delay (so that a large tensor's buffer is reused rather than
//! faulted in again) and purges only when it allocates again: loads and unloads force the purge.

/// Returns the free pages of mimalloc and of every malloc arena to the OS. Costs milliseconds; call it after a
/// load and at an unload, not per request.
pub fn return_freed_memory() {
    // SAFETY: mi_collect takes no arguments to check; forced, it frees the calling thread's empty pages and
    // purges what mimalloc holds freed, whether or not mimalloc is the global allocator.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
