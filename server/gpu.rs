//! GPU discovery and GPU metrics, compiled for real only with the `cuda-ort` feature (part of `cuda`).
//!
//! Discovery goes through the CUDA driver API (`cudarc::driver`, result level): it is what
//! ONNX Runtime's CUDA execution provider will see, so the index is the CUDA ordinal (the
//! provider's `device_id`) and `CUDA_VISIBLE_DEVICES` is honoured. Memory used, utilization
//! and power come from NVML (`nvml-wrapper`; cudarc has no NVML bindings), matched by UUID.
//! Where the CUDA driver library is missing or refuses to initialise, NVML's own list is used.
//!
//! With `cuda-ort` alone both libraries (`libcuda.so*`, `libnvidia-ml.so.1`) are dlopen'ed at
//! run time: the build needs no CUDA toolkit, no nvcc and no driver, and the binary links
//! against neither. With `candle-cuda` candle links libcuda (the binary then needs it, or a stub,
//! to start). Without a driver or a GPU every function here answers "no GPU"; none returns an
//! error or panics.
//!
//! cudarc panics (instead of returning an error) when its library or a symbol is missing,
//! so it is touched only after `is_culib_present()` and a look-up of every symbol used
//! (all present in any driver since CUDA 11.4), and inside `catch_unwind` as a backstop.
//! No CUDA context is created: a context costs hundreds of MiB of GPU memory, and
//! everything needed here works without one.

/// One GPU as seen at the moment of the call.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuStatus {
    /// CUDA ordinal (the CUDA execution provider's `device_id`); NVML's index when CUDA
    /// discovery is unavailable.
    pub index: u32,
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as `nvidia-smi -L` prints it.
    pub uuid: String,
    pub name: String,
    pub memory_total_bytes: u64,
    /// 0 where NVML is unavailable.
    pub memory_used_bytes: u64,
    /// Fraction of the last sample period a kernel was running, 0..=1; 0 where NVML is unavailable.
    pub utilization: f64,
    /// 0 where NVML is unavailable or the board does not report power.
    pub power_watts: f64,
}

/// Every GPU the CUDA driver (or, failing that, NVML) sees; empty (never an error or panic)
/// without the feature, a driver or a GPU.
pub fn gpus() -> Vec<GpuStatus> {
    imp::gpus()
}

/// Why there is no GPU, for the start-up log line; `None` when there is at least one.
pub fn unavailable_reason() -> Option<String> {
    imp::unavailable_reason()
}

#[cfg(not(feature = "cuda-ort"))]
mod imp {
    use super::GpuStatus;

    pub fn gpus() -> Vec<GpuStatus> {
        Vec::new()
    }

    pub fn unavailable_reason() -> Option<String> {
        Some("built without the `cuda` feature".to_string())
    }
}

#[cfg(feature = "cuda-ort")]
mod imp {
    use super::GpuStatus;
    use cudarc::driver::{result as cu, sys as cusys};
    use nvml_wrapper::error::NvmlError;
    use nvml_wrapper::Nvml;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::OnceLock;

    /// What does not change while the process runs, probed once.
    struct State {
        /// Static facts per CUDA device, or why CUDA discovery is unavailable.
        cuda: Result<Vec<Static>, String>,
        /// NVML is initialised once and kept: `nvmlInit` loads symbols and is not cheap.
        nvml: Result<Nvml, String>,
    }

    struct Static {
        index: u32,
        uuid: String,
        name: String,
        memory_total_bytes: u64,
    }

    fn state() -> &'static State {
        static STATE: OnceLock<State> = OnceLock::new();
        STATE.get_or_init(|| State {
            cuda: cuda_devices(),
            nvml: Nvml::init().map_err(nvml_reason),
        })
    }

    pub fn gpus() -> Vec<GpuStatus> {
        let state = state();
        let nvml = state.nvml.as_ref().ok();
        match &state.cuda {
            Ok(devices) => devices
                .iter()
                .map(|d| {
                    let mut status = GpuStatus {
                        index: d.index,
                        uuid: d.uuid.clone(),
                        name: d.name.clone(),
                        memory_total_bytes: d.memory_total_bytes,
                        memory_used_bytes: 0,
                        utilization: 0.0,
                        power_watts: 0.0,
                    };
                    if let Some(device) = nvml.and_then(|n| n.device_by_uuid(d.uuid.as_str()).ok()) {
                        fill_metrics(&device, &mut status);
                    }
                    status
                })
                .collect(),
            // CUDA discovery unavailable (e.g. a container given NVML but not libcuda): list what NVML sees.
            Err(_) => nvml.map(nvml_devices).unwrap_or_default(),
        }
    }

    pub fn unavailable_reason() -> Option<String> {
        if !gpus().is_empty() {
            return None;
        }
        let state = state();
        Some(match (&state.cuda, &state.nvml) {
            (Ok(_), _) => "the CUDA driver sees no GPU (check CUDA_VISIBLE_DEVICES)".to_string(),
            (Err(cuda), Ok(_)) => format!("{cuda}; NVML sees no GPU"),
            (Err(cuda), Err(nvml)) => format!("{cuda}; {nvml}"),
        })
    }

    /// The CUDA devices with their static facts; `Ok(empty)` when the driver has no device.
    fn cuda_devices() -> Result<Vec<Static>, String> {
        // With `candle-cuda`, candle turns cudarc to `dynamic-linking`: libcuda is linked (the process
        // could not have started without it) and a missing symbol fails at load, so there is nothing to probe.
        #[cfg(not(feature = "candle-cuda"))]
        {
            // cudarc's dynamic loading panics on first use when no candidate library loads.
            // SAFETY: only tries to dlopen the driver library's usual names and drops the handles.
            if !unsafe { cusys::is_culib_present() } {
                return Err("libcuda.so not found: no NVIDIA driver".to_string());
            }
            // A symbol missing from the library (a driver older than CUDA 11.4, or not a real
            // driver) panics inside cudarc too, so look every one up first.
            // SAFETY: the library loads (checked just above); symbols are only looked up, not called.
            let lib = unsafe { cusys::culib() };
            if let Some(missing) = CUDA_SYMBOLS
                .iter()
                .find(|name| unsafe { lib.get::<unsafe extern "C" fn()>(name.as_bytes()) }.is_err())
            {
                return Err(format!(
                    "the CUDA driver library lacks {missing} (driver older than CUDA 11.4?)"
                ));
            }
        }
        // Backstop for any other panic in cudarc (e.g. its `expect` on the name buffer).
        catch_unwind(AssertUnwindSafe(cuda_devices_unguarded))
            .unwrap_or_else(|_| Err("CUDA device discovery panicked".to_string()))
    }

    /// Every driver entry point `cuda_devices_unguarded` reaches through cudarc.
    #[cfg(not(feature = "candle-cuda"))]
    const CUDA_SYMBOLS: [&str; 6] = [
        "cuInit",
        "cuDeviceGetCount",
        "cuDeviceGet",
        "cuDeviceGetName",
        "cuDeviceGetUuid_v2",
        "cuDeviceTotalMem_v2",
    ];

    fn cuda_devices_unguarded() -> Result<Vec<Static>, String> {
        // Formatting the CUresult rather than DriverError: its Debug calls back into the driver.
        let why = |what: &str, e: cu::DriverError| format!("CUDA {what} failed: {:?}", e.0);
        match cu::init() {
            Ok(()) => {}
            // Driver present, no (visible) device: a definite answer, not a failure.
            Err(cu::DriverError(cusys::CUresult::CUDA_ERROR_NO_DEVICE)) => return Ok(Vec::new()),
            Err(e) => return Err(why("initialisation (cuInit)", e)),
        }
        let count = cu::device::get_count().map_err(|e| why("device count", e))?;
        let mut devices = Vec::new();
        for ordinal in 0..count {
            let dev = cu::device::get(ordinal).map_err(|e| why("cuDeviceGet", e))?;
            devices.push(Static {
                index: ordinal as u32,
                uuid: cu::device::get_uuid(dev)
                    .map(|u| format_uuid(&u.bytes))
                    .unwrap_or_default(),
                name: cu::device::get_name(dev).unwrap_or_default(),
                // SAFETY: `dev` was just returned by cuDeviceGet.
                memory_total_bytes: unsafe { cu::device::total_mem(dev) }.map(|b| b as u64).unwrap_or(0),
            });
        }
        Ok(devices)
    }

    /// NVML's spelling of a GPU UUID, so the two APIs' devices can be matched.
    fn format_uuid(bytes: &[std::ffi::c_char; 16]) -> String {
        let hex: Vec<String> = bytes.iter().map(|b| format!("{:02x}", *b as u8)).collect();
        format!(
            "GPU-{}-{}-{}-{}-{}",
            hex[0..4].concat(),
            hex[4..6].concat(),
            hex[6..8].concat(),
            hex[8..10].concat(),
            hex[10..16].concat()
        )
    }

    fn nvml_devices(nvml: &Nvml) -> Vec<GpuStatus> {
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|i| nvml.device_by_index(i).ok().map(|d| (i, d)))
            .map(|(i, device)| {
                let memory = device.memory_info().ok();
                let mut status = GpuStatus {
                    index: i,
                    uuid: device.uuid().unwrap_or_default(),
                    name: device.name().unwrap_or_default(),
                    memory_total_bytes: memory.as_ref().map_or(0, |m| m.total),
                    memory_used_bytes: 0,
                    utilization: 0.0,
                    power_watts: 0.0,
                };
                fill_metrics(&device, &mut status);
                status
            })
            .collect()
    }

    /// The changing numbers; each one that the board does not report stays 0.
    fn fill_metrics(device: &nvml_wrapper::Device<'_>, status: &mut GpuStatus) {
        if let Ok(memory) = device.memory_info() {
            status.memory_used_bytes = memory.used;
        }
        if let Ok(rates) = device.utilization_rates() {
            status.utilization = (f64::from(rates.gpu) / 100.0).clamp(0.0, 1.0);
        }
        if let Ok(milliwatts) = device.power_usage() {
            status.power_watts = f64::from(milliwatts) / 1000.0;
        }
    }

    fn nvml_reason(e: NvmlError) -> String {
        match e {
            NvmlError::LibloadingError(_) => "libnvidia-ml.so.1 not found: no NVIDIA driver".to_string(),
            NvmlError::DriverNotLoaded => "NVML: the NVIDIA kernel driver is not loaded".to_string(),
            NvmlError::NoPermission => "NVML: no permission to talk to the driver".to_string(),
            other => format!("NVML initialisation failed: {other}"),
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn uuid_is_spelled_like_nvml() {
            let bytes: [std::ffi::c_char; 16] =
                std::array::from_fn(|i| (0x10 * (i as u8 % 16) + i as u8) as std::ffi::c_char);
            assert_eq!(super::format_uuid(&bytes), "GPU-00112233-4455-6677-8899-aabbccddeeff");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without driver or GPU (CI): empty, with a reason, and no panic.
    #[test]
    fn no_gpu_is_not_an_error() {
        let list = gpus();
        if list.is_empty() {
            assert!(unavailable_reason().is_some());
        } else {
            assert!(unavailable_reason().is_none());
            for g in &list {
                assert!((0.0..=1.0).contains(&g.utilization));
                assert!(g.memory_used_bytes <= g.memory_total_bytes);
            }
        }
    }
}
