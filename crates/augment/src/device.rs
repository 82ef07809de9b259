//! Choosing the device a command runs on: `--device auto|cpu|wgpu`.
//!
//! - `auto`: a hardware GPU through wgpu (discrete, then integrated, then virtual) when one exists,
//!   otherwise burn's fastest CPU backend (`flex`). Software adapters (Mesa lavapipe, SwiftShader)
//!   are never chosen automatically: they are far slower than `flex`.
//! - `cpu`: `flex`.
//! - `wgpu`: the best wgpu adapter, software ones included (how tests exercise the GPU path on a
//!   machine without a GPU).

use burn::tensor::Device;

use crate::AugmentError;

/// The `--device` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Auto,
    Cpu,
    Wgpu,
}

impl std::str::FromStr for DeviceChoice {
    type Err = AugmentError;
    fn from_str(s: &str) -> Result<Self, AugmentError> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "wgpu" => Ok(DeviceChoice::Wgpu),
            other => Err(AugmentError::Device(format!(
                "unknown device `{other}`: use auto, cpu or wgpu"
            ))),
        }
    }
}

/// A device and a line that says what it is.
#[derive(Debug, Clone)]
pub struct SelectedDevice {
    pub device: Device,
    /// For example `wgpu: NVIDIA H100 (DiscreteGpu, Vulkan)` or `cpu: flex on AMD EPYC (2 threads)`.
    pub description: String,
    /// A wgpu device (kernels run) rather than the CPU backend.
    pub is_gpu: bool,
}

/// Whether `device` is a CubeCL (wgpu) device, where the WGSL kernels run.
pub fn is_cube(device: &Device) -> bool {
    #[cfg(feature = "wgpu")]
    {
        matches!(
            device.clone().without_autodiff().as_dispatch(),
            burn::backend::DispatchDevice::Cube(_)
        )
    }
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = device;
        false
    }
}

/// The CPU backend, described.
pub fn cpu() -> SelectedDevice {
    SelectedDevice {
        device: Device::flex(),
        description: format!(
            "cpu: burn flex on {} ({} threads)",
            cpu_model().unwrap_or_else(|| "an unknown CPU".into()),
            rayon::current_num_threads()
        ),
        is_gpu: false,
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
}

/// Resolves a `--device` choice. Call it before any tensor is created on wgpu.
pub fn select(choice: DeviceChoice) -> Result<SelectedDevice, AugmentError> {
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        #[cfg(feature = "wgpu")]
        DeviceChoice::Auto => Ok(wgpu::hardware().unwrap_or_else(cpu)),
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => wgpu::any(),
        #[cfg(not(feature = "wgpu"))]
        DeviceChoice::Auto => Ok(cpu()),
        #[cfg(not(feature = "wgpu"))]
        DeviceChoice::Wgpu => Err(AugmentError::Device(
            "this build has no wgpu support: rebuild with the default features".into(),
        )),
    }
}

/// `n` devices for data parallelism, the first being the one [`select`] picks: GPUs 0..n of its
/// kind, or `n` replicas sharing the CPU (flex has one device; its replicas run in parallel threads).
pub fn select_many(choice: DeviceChoice, n: usize) -> Result<Vec<SelectedDevice>, AugmentError> {
    let first = select(choice)?;
    if n <= 1 {
        return Ok(vec![first]);
    }
    if !first.is_gpu {
        return Ok((0..n)
            .map(|k| SelectedDevice { description: format!("{} [replica {k}]", first.description), ..first.clone() })
            .collect());
    }
    #[cfg(feature = "wgpu")]
    {
        wgpu::same_kind(&first, n)
    }
    #[cfg(not(feature = "wgpu"))]
    unreachable!("without wgpu every device is the CPU")
}

#[cfg(feature = "wgpu")]
mod wgpu {
    use super::*;
    use burn::tensor::DeviceKind;
    use burn::tensor::wgpu::wgpu::DeviceType;

    fn try_kind(kind: DeviceKind) -> Result<SelectedDevice, String> {
        let (device, setup) = Device::wgpu_options()
            .device_kind(kind)
            .init_with_setup()
            .map_err(|e| e.to_string())?;
        let info = setup.adapter.get_info();
        let driver = if info.driver.is_empty() {
            String::new()
        } else {
            format!(", driver {} {}", info.driver, info.driver_info)
        };
        let software = if info.device_type == DeviceType::Cpu {
            "; a software adapter: correct but slow, for tests on tiny inputs"
        } else {
            ""
        };
        Ok(SelectedDevice {
            device,
            description: format!(
                "wgpu: {} ({:?}, {:?}{driver}{software})",
                info.name, info.device_type, info.backend
            ),
            is_gpu: true,
        })
    }

    /// The first hardware GPU, if any.
    pub fn hardware() -> Option<SelectedDevice> {
        [DeviceKind::DiscreteGpu(0), DeviceKind::IntegratedGpu(0), DeviceKind::VirtualGpu(0)]
            .into_iter()
            .find_map(|k| try_kind(k).ok())
    }

    /// GPUs 0..n of the kind of `first` (discrete, integrated, virtual or software).
    pub fn same_kind(first: &SelectedDevice, n: usize) -> Result<Vec<SelectedDevice>, AugmentError> {
        let kinds: [fn(usize) -> DeviceKind; 3] = [DeviceKind::DiscreteGpu, DeviceKind::IntegratedGpu, DeviceKind::VirtualGpu];
        let kind = kinds
            .into_iter()
            .find(|k| try_kind(k(0)).is_ok_and(|d| d.device == first.device))
            .ok_or_else(|| AugmentError::Device(format!("{}: several devices of this kind cannot be listed; use --devices 1", first.description)))?;
        (0..n)
            .map(|k| {
                try_kind(kind(k)).map_err(|e| {
                    AugmentError::Device(format!(
                        "--devices {n}: GPU {k} of the kind of {} is not available ({e}); this machine has {k}: lower --devices",
                        first.description
                    ))
                })
            })
            .collect()
    }

    /// A hardware GPU, else a software adapter.
    pub fn any() -> Result<SelectedDevice, AugmentError> {
        if let Some(d) = hardware() {
            return Ok(d);
        }
        try_kind(DeviceKind::Cpu).map_err(|e| {
            AugmentError::Device(format!(
                "no wgpu adapter found ({e}); install a GPU driver, or Mesa's software Vulkan \
                 (`apt-get install mesa-vulkan-drivers`), or use --device cpu"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_bad_ones_are_explained() {
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("wgpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Wgpu);
        let msg = "cuda".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(msg.contains("unknown device `cuda`: use auto, cpu or wgpu"), "{msg}");
    }

    #[test]
    fn cpu_is_flex_and_described() {
        let d = select(DeviceChoice::Cpu).unwrap();
        assert!(!d.is_gpu && !is_cube(&d.device));
        assert!(d.description.starts_with("cpu: burn flex on"), "{}", d.description);
    }
}
