//! Triton's system shared memory extension: the regions clients register (a name for a window of a POSIX shared
//! memory object, `/dev/shm/<key>`), and the one place a request's tensors are read from and written into them.
//!
//! A region is mapped once, at registration, and shared by `Arc`: a request holds the regions it uses from before
//! its model runs until its outputs are written, so unregistering a region in use only unlists it; the mapping
//! goes when the last request lets go. Every offset and size a request names is checked against the region
//! before any memory is touched, and the object's current size is checked again at each access, so a client
//! that shrinks the object after registering gets an error rather than the server a SIGBUS.
//!
//! Memory another process can write is never borrowed as a Rust slice: bytes are copied in and out through raw
//! pointers, so an input is a snapshot taken once and then validated, whatever the client does meanwhile.
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::error::InferError;
use crate::request::{InferRequest, InferResponse, RegionRef};
use crate::tensor::{count_bytes_elements, element_count, DataType};

/// Where POSIX shared memory objects live on Linux (what `shm_open` opens).
const SHM_DIR: &str = "/dev/shm";

#[derive(Debug, thiserror::Error)]
pub enum SharedMemoryError {
    #[error("system shared memory is turned off on this server (--allow-client-shm=false)")]
    Disabled,
    #[error("failed to register shared memory region: the region's name must not be empty")]
    EmptyName,
    #[error("shared memory region '{0}' already in manager")]
    AlreadyRegistered(String),
    #[error("Unable to find system shared memory region: '{0}'")]
    NotFound(String),
    #[error("failed to register shared memory region '{name}': invalid key '{key}': {why}")]
    BadKey {
        name: String,
        key: String,
        why: &'static str,
    },
    #[error("failed to register shared memory region '{name}': byte_size must be greater than 0")]
    Empty { name: String },
    #[error("Unable to open shared memory region: '{key}' (region '{name}'): {why}")]
    Open { name: String, key: String, why: String },
    #[error(
        "failed to register shared memory region '{name}': invalid args: offset {offset} + byte_size {byte_size} \
         is past the end of shared memory object '{key}' ({size} bytes)"
    )]
    OutOfObject {
        name: String,
        key: String,
        offset: u64,
        byte_size: u64,
        size: u64,
    },
    #[error("failed to register shared memory region '{name}': {why}")]
    Map { name: String, why: String },
    #[error(
        "{tensor}: offset {offset} + byte_size {byte_size} is out of bounds of shared memory region '{region}' \
         ({region_size} bytes)"
    )]
    OutOfRegion {
        tensor: String,
        region: String,
        offset: usize,
        byte_size: usize,
        region_size: usize,
    },
    #[error(
        "shared memory object '{key}' of region '{region}' has shrunk to {size} bytes since it was registered; \
         unregister and register it again"
    )]
    Shrunk { region: String, key: String, size: u64 },
    #[error(
        "input byte size mismatch for input '{input}': shared memory region '{region}' gives {byte_size} bytes, \
         its shape and datatype need {expected}"
    )]
    InputSize {
        input: String,
        region: String,
        byte_size: usize,
        expected: usize,
    },
    #[error("input '{input}' in shared memory region '{region}': {why}")]
    InputBytes { input: String, region: String, why: String },
    #[error(
        "shared memory size specified with the request for output '{output}' ({byte_size} bytes) should be at \
         least {needed} bytes to hold the results (shared memory region '{region}')"
    )]
    OutputTooSmall {
        output: String,
        region: String,
        byte_size: usize,
        needed: usize,
    },
    #[error(
        "failed to register CUDA shared memory region '{0}': CUDA shared memory is not supported by this server build"
    )]
    CudaUnsupported(String),
    #[error("Unable to find cuda shared memory region: '{0}'")]
    CudaNotFound(String),
}

/// Every shared memory error is the client's to fix: 400 / INVALID_ARGUMENT, naming the region.
impl From<SharedMemoryError> for InferError {
    fn from(e: SharedMemoryError) -> Self {
        InferError::invalid(e.to_string())
    }
}

type Result<T> = std::result::Result<T, SharedMemoryError>;

/// A registered region, as status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionStatus {
    pub name: String,
    pub key: String,
    pub offset: u64,
    pub byte_size: u64,
}

/// The mapped pages of a shared memory object.
struct Mapping {
    ptr: NonNull<libc::c_void>,
    len: usize,
}

// SAFETY: the mapping is plain memory valid for the life of `Mapping`; it is only ever accessed through copies
// (`Region::read`, `Region::write`), never borrowed, so sharing the pointer across threads adds no aliasing.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are exactly what `mmap` returned and mapped; nothing uses them after this.
        unsafe {
            libc::munmap(self.ptr.as_ptr(), self.len);
        }
    }
}

/// A registered region: `byte_size` bytes at `offset` of the object `key`, mapped.
pub struct Region {
    name: String,
    key: String,
    offset: u64,
    byte_size: usize,
    /// Kept open to check the object's size before each access.
    file: File,
    map: Mapping,
    /// Where the region starts within `map` (the mapping starts on a page boundary).
    start: usize,
}

impl Region {
    fn status(&self) -> RegionStatus {
        RegionStatus {
            name: self.name.clone(),
            key: self.key.clone(),
            offset: self.offset,
            byte_size: self.byte_size as u64,
        }
    }

    /// Checks that `[offset, offset + byte_size)` lies within the region, and that the object still holds it.
    fn check(&self, tensor: &str, offset: usize, byte_size: usize) -> Result<()> {
        if offset.checked_add(byte_size).is_none_or(|end| end > self.byte_size) {
            return Err(SharedMemoryError::OutOfRegion {
                tensor: tensor.to_string(),
                region: self.name.clone(),
                offset,
                byte_size,
                region_size: self.byte_size,
            });
        }
        let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        if size < self.offset + self.byte_size as u64 {
            return Err(SharedMemoryError::Shrunk {
                region: self.name.clone(),
                key: self.key.clone(),
                size,
            });
        }
        Ok(())
    }

    /// A copy of `byte_size` bytes at `offset` of the region.
    fn read(&self, tensor: &str, offset: usize, byte_size: usize) -> Result<Vec<u8>> {
        self.check(tensor, offset, byte_size)?;
        let mut out = Vec::with_capacity(byte_size);
        // SAFETY: `check` proved `start + offset + byte_size` lies within the mapping and within the object's
        // current size; `out` has room for `byte_size` bytes, which the copy initializes before `set_len`.
        unsafe {
            let src = self.map.ptr.as_ptr().cast::<u8>().add(self.start + offset);
            std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), byte_size);
            out.set_len(byte_size);
        }
        Ok(out)
    }

    /// Writes `data` at `offset` of the region.
    fn write(&self, tensor: &str, offset: usize, data: &[u8]) -> Result<()> {
        self.check(tensor, offset, data.len())?;
        // SAFETY: as in `read`; the mapping is writable (PROT_WRITE, MAP_SHARED) and `data` is our own memory,
        // so the two cannot overlap.
        unsafe {
            let dst = self.map.ptr.as_ptr().cast::<u8>().add(self.start + offset);
            std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
        }
        Ok(())
    }
}

/// The file name a key names in /dev/shm: `shm_open`'s rules (one optional leading '/', then a plain name).
fn object_name<'k>(name: &str, key: &'k str) -> Result<&'k str> {
    let bad = |why| SharedMemoryError::BadKey {
        name: name.to_string(),
        key: key.to_string(),
        why,
    };
    let file = key.strip_prefix('/').unwrap_or(key);
    if file.is_empty() {
        return Err(bad("it names no object"));
    }
    if file.contains('/') {
        return Err(bad("only a leading '/' is allowed"));
    }
    if file == "." || file == ".." || file.contains('\0') {
        return Err(bad("not a shared memory object name"));
    }
    if file.len() > 255 {
        return Err(bad("longer than 255 bytes"));
    }
    Ok(file)
}

/// Opens and maps `byte_size` bytes at `offset` of the object `key`.
fn map_region(name: &str, key: &str, offset: u64, byte_size: u64) -> Result<Region> {
    let file_name = object_name(name, key)?;
    if byte_size == 0 {
        return Err(SharedMemoryError::Empty { name: name.to_string() });
    }
    let open_error = |why: String| SharedMemoryError::Open {
        name: name.to_string(),
        key: key.to_string(),
        why,
    };
    // What shm_open does on Linux, without following a link or waiting on a FIFO planted under the name.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(std::path::Path::new(SHM_DIR).join(file_name))
        .map_err(|e| open_error(e.to_string()))?;
    let meta = file.metadata().map_err(|e| open_error(e.to_string()))?;
    if !meta.is_file() {
        return Err(open_error("not a shared memory object".into()));
    }
    let size = meta.len();
    let out_of_object = || SharedMemoryError::OutOfObject {
        name: name.to_string(),
        key: key.to_string(),
        offset,
        byte_size,
        size,
    };
    let end = offset
        .checked_add(byte_size)
        .filter(|&e| e <= size)
        .ok_or_else(out_of_object)?;
    // mmap's offset must be page-aligned: map from the page holding `offset`.
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .unwrap_or(4096)
        .max(1);
    let map_from = offset - offset % page;
    let (Ok(len), Ok(start), Ok(byte_size), Ok(map_offset)) = (
        usize::try_from(end - map_from),
        usize::try_from(offset - map_from),
        usize::try_from(byte_size),
        libc::off_t::try_from(map_from),
    ) else {
        return Err(out_of_object());
    };
    // SAFETY: a fresh shared mapping of an open regular file, within its current size (checked above); the
    // result is checked for MAP_FAILED before use.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            map_offset,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(SharedMemoryError::Map {
            name: name.to_string(),
            why: format!("unable to map shared memory: {}", std::io::Error::last_os_error()),
        });
    }
    let Some(ptr) = NonNull::new(ptr) else {
        return Err(SharedMemoryError::Map {
            name: name.to_string(),
            why: "unable to map shared memory: mmap returned null".into(),
        });
    };
    Ok(Region {
        name: name.to_string(),
        key: key.to_string(),
        offset,
        byte_size,
        file,
        map: Mapping { ptr, len },
        start,
    })
}

/// The registry of system shared memory regions.
pub struct SharedMemory {
    enabled: bool,
    regions: Mutex<HashMap<String, Arc<Region>>>,
}

impl Default for SharedMemory {
    fn default() -> Self {
        Self::new(true)
    }
}

impl SharedMemory {
    /// A registry; a disabled one refuses every request that names shared memory.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            regions: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn regions(&self) -> Result<MutexGuard<'_, HashMap<String, Arc<Region>>>> {
        if !self.enabled {
            return Err(SharedMemoryError::Disabled);
        }
        // The map stays consistent whatever panicked while holding it: each change is one insert or remove.
        Ok(self.regions.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Maps `byte_size` bytes at `offset` of object `key` as region `name`.
    pub fn register(&self, name: &str, key: &str, offset: u64, byte_size: u64) -> Result<()> {
        if name.is_empty() {
            return Err(SharedMemoryError::EmptyName);
        }
        if self.regions()?.contains_key(name) {
            return Err(SharedMemoryError::AlreadyRegistered(name.to_string()));
        }
        // Mapped outside the lock; a racing registration of the same name is caught when inserting.
        let region = map_region(name, key, offset, byte_size)?;
        let mut regions = self.regions()?;
        if regions.contains_key(name) {
            return Err(SharedMemoryError::AlreadyRegistered(name.to_string()));
        }
        regions.insert(name.to_string(), Arc::new(region));
        Ok(())
    }

    /// Unlists region `name` (none: every region). Unknown names are not an error, as in Triton. Requests
    /// using a region keep it mapped until they finish.
    pub fn unregister(&self, name: Option<&str>) -> Result<()> {
        let mut regions = self.regions()?;
        match name {
            Some(n) => {
                regions.remove(n);
            }
            None => regions.clear(),
        }
        Ok(())
    }

    /// Region `name`, or every region (by name).
    pub fn status(&self, name: Option<&str>) -> Result<Vec<RegionStatus>> {
        let regions = self.regions()?;
        match name {
            Some(n) => regions
                .get(n)
                .map(|r| vec![r.status()])
                .ok_or_else(|| SharedMemoryError::NotFound(n.to_string())),
            None => {
                let mut all: Vec<_> = regions.values().map(|r| r.status()).collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(all)
            }
        }
    }

    fn get(&self, name: &str) -> Result<Arc<Region>> {
        self.regions()?
            .get(name)
            .cloned()
            .ok_or_else(|| SharedMemoryError::NotFound(name.to_string()))
    }

    /// This build has no CUDA IPC: registering CUDA shared memory is refused, with the reason.
    pub fn cuda_register(&self, name: &str) -> Result<()> {
        Err(SharedMemoryError::CudaUnsupported(name.to_string()))
    }

    /// No CUDA region is ever registered: all of them is none, a named one is unknown.
    pub fn cuda_status(&self, name: Option<&str>) -> Result<()> {
        match name {
            Some(n) => Err(SharedMemoryError::CudaNotFound(n.to_string())),
            None => Ok(()),
        }
    }

    /// Reads the inputs a request left in regions into its tensors, and takes hold of the regions its outputs
    /// go to (checked now, so a request whose output cannot be written fails before its model runs).
    pub fn resolve(&self, req: &mut InferRequest) -> Result<HeldOutputs> {
        let mut held = Vec::new();
        if req.input_regions.is_empty() && req.outputs.iter().all(|o| o.region.is_none()) {
            return Ok(HeldOutputs(held));
        }
        for (index, at) in std::mem::take(&mut req.input_regions) {
            let Some(tensor) = req.inputs.get_mut(index) else {
                continue;
            };
            let region = self.get(&at.region)?;
            if let Some(expected) = tensor
                .datatype
                .size()
                .and_then(|s| element_count(&tensor.shape)?.checked_mul(s))
            {
                if expected != at.byte_size {
                    return Err(SharedMemoryError::InputSize {
                        input: tensor.name.clone(),
                        region: at.region,
                        byte_size: at.byte_size,
                        expected,
                    });
                }
            }
            let data = region.read(&format!("input '{}'", tensor.name), at.offset, at.byte_size)?;
            if tensor.datatype == DataType::Bytes {
                count_bytes_elements(&data, &tensor.name).map_err(|e| SharedMemoryError::InputBytes {
                    input: tensor.name.clone(),
                    region: at.region.clone(),
                    why: e.to_string(),
                })?;
            }
            tensor.data = Bytes::from(data);
        }
        for out in &req.outputs {
            let Some(at) = &out.region else { continue };
            let region = self.get(&at.region)?;
            region.check(&format!("output '{}'", out.name), at.offset, at.byte_size)?;
            held.push((out.name.clone(), at.clone(), region));
        }
        Ok(HeldOutputs(held))
    }
}

/// The regions a running request's outputs go to, held (and so mapped) until they are written.
pub struct HeldOutputs(Vec<(String, RegionRef, Arc<Region>)>);

impl HeldOutputs {
    /// Writes each held output into its region; the response then carries where, in place of the bytes.
    pub fn write(self, mut resp: InferResponse) -> Result<InferResponse> {
        for (name, at, region) in self.0 {
            let Some(tensor) = resp.outputs.iter_mut().find(|t| t.name == name) else {
                continue;
            };
            if tensor.data.len() > at.byte_size {
                return Err(SharedMemoryError::OutputTooSmall {
                    output: name,
                    region: at.region,
                    byte_size: at.byte_size,
                    needed: tensor.data.len(),
                });
            }
            region.write(&format!("output '{name}'"), at.offset, &tensor.data)?;
            let written = RegionRef {
                byte_size: tensor.data.len(),
                ..at
            };
            tensor.data = Bytes::new();
            resp.in_regions.push((name, written));
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A shared memory object of `size` bytes (0, 1, 2, ...), removed on drop.
    struct Object(String);

    impl Object {
        fn new(size: usize) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let key = format!(
                "/inferd-unit-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            let bytes: Vec<u8> = (0..size).map(|i| i as u8).collect();
            std::fs::write(format!("{SHM_DIR}{key}"), bytes).unwrap();
            Self(key)
        }
    }

    impl Drop for Object {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(format!("{SHM_DIR}{}", self.0));
        }
    }

    #[test]
    fn a_region_reads_and_writes_at_its_offset_within_the_object() {
        let obj = Object::new(10_000);
        let shm = SharedMemory::new(true);
        shm.register("r", &obj.0, 5000, 100).unwrap();
        let region = shm.get("r").unwrap();
        assert_eq!(
            region.read("x", 2, 3).unwrap(),
            vec![(5002 % 256) as u8, (5003 % 256) as u8, (5004 % 256) as u8]
        );
        region.write("x", 0, &[9, 9]).unwrap();
        let file = std::fs::read(format!("{SHM_DIR}{}", obj.0)).unwrap();
        assert_eq!(&file[5000..5003], &[9, 9, (5002 % 256) as u8]);
        let err = region.read("input 'A'", 99, 2).unwrap_err().to_string();
        assert!(err.contains("'r'") && err.contains("out of bounds"), "{err}");
        assert!(region.read("x", usize::MAX, 2).is_err());
    }

    #[test]
    fn registration_checks_the_name_key_and_bounds() {
        let obj = Object::new(64);
        let shm = SharedMemory::new(true);
        for key in ["", "/", "/a/b", "../etc/passwd", "/..", "a\0b"] {
            let err = shm.register("r", key, 0, 8).unwrap_err().to_string();
            assert!(err.contains("invalid key") && err.contains("'r'"), "{key:?}: {err}");
        }
        let err = shm.register("r", &obj.0, 60, 8).unwrap_err().to_string();
        assert!(err.contains("invalid args") && err.contains("64 bytes"), "{err}");
        assert!(shm.register("r", &obj.0, u64::MAX, 2).is_err());
        assert!(shm.register("r", &obj.0, 0, 0).is_err());
        assert!(shm
            .register("r", "/inferd-no-such-object", 0, 8)
            .unwrap_err()
            .to_string()
            .contains("Unable to open"));
        shm.register("r", &obj.0, 0, 64).unwrap();
        assert_eq!(
            shm.register("r", &obj.0, 0, 8).unwrap_err().to_string(),
            "shared memory region 'r' already in manager"
        );
        // The same object under another name is allowed (Triton refuses it only as a known limitation).
        shm.register("s", obj.0.trim_start_matches('/'), 8, 8).unwrap();
        let names: Vec<_> = shm.status(None).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, vec!["r", "s"]);
    }

    #[test]
    fn an_unregistered_region_stays_mapped_for_those_holding_it() {
        let obj = Object::new(16);
        let shm = SharedMemory::new(true);
        shm.register("r", &obj.0, 0, 16).unwrap();
        let held = shm.get("r").unwrap();
        shm.unregister(Some("r")).unwrap();
        assert!(shm
            .status(Some("r"))
            .unwrap_err()
            .to_string()
            .contains("Unable to find system shared memory region: 'r'"));
        held.write("x", 0, &[7; 16]).unwrap();
        assert_eq!(held.read("x", 0, 16).unwrap(), vec![7; 16]);
        shm.unregister(Some("never-registered")).unwrap();
    }

    #[test]
    fn a_shrunk_object_is_an_error_not_a_crash() {
        let obj = Object::new(8192);
        let shm = SharedMemory::new(true);
        shm.register("r", &obj.0, 4096, 4096).unwrap();
        let region = shm.get("r").unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("{SHM_DIR}{}", obj.0))
            .unwrap()
            .set_len(100)
            .unwrap();
        assert!(region.read("x", 0, 8).unwrap_err().to_string().contains("shrunk"));
    }

    #[test]
    fn a_disabled_registry_refuses_everything() {
        let shm = SharedMemory::new(false);
        assert!(matches!(shm.status(None), Err(SharedMemoryError::Disabled)));
        assert!(matches!(shm.unregister(None), Err(SharedMemoryError::Disabled)));
        assert!(matches!(
            shm.register("r", "/x", 0, 1),
            Err(SharedMemoryError::Disabled)
        ));
    }
}
