//! Where a version's instances run, from its config's instance groups, by Triton's rules: KIND_CPU (and
//! KIND_MODEL) puts `count` instances on the CPU; KIND_GPU puts `count` on each GPU it lists, or on every GPU
//! when it lists none, and fails the load when a GPU is missing; KIND_AUTO is KIND_GPU when there is a GPU and
//! KIND_CPU otherwise.
use crate::backend::Placement;
use crate::proto::model_instance_group::Kind;
use crate::proto::ModelConfig;

/// Most instances one version may have. Each is a thread with its own session; Triton sets no bound, and
/// `count` goes up to i32::MAX, which exhausted memory before the load could fail.
pub const MAX_INSTANCES: usize = 1024;

/// Instance groups that cannot be placed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("instance group {group} asks for KIND_GPU, but there is no GPU: {why}")]
    NoGpu { group: String, why: String },
    #[error("instance group {group} names GPU {gpu}, but the GPUs present are {present:?}")]
    MissingGpu { group: String, gpu: i32, present: Vec<u32> },
    #[error("instance group {group} brings the model to {total} instances; at most {MAX_INSTANCES} are supported")]
    TooMany { group: String, total: usize },
}

/// The GPUs a load may use: their CUDA ordinals, or why there are none.
pub struct Gpus {
    pub present: Vec<u32>,
    pub why_none: Option<String>,
}

impl Gpus {
    /// What this process sees (none without the `cuda-ort` feature, a driver or a GPU).
    pub fn discover() -> Self {
        Self {
            present: crate::gpu::gpus().iter().map(|g| g.index).collect(),
            why_none: crate::gpu::unavailable_reason(),
        }
    }
}

/// One placement per instance, in instance-group order.
pub fn placements(model: &str, cfg: &ModelConfig, gpus: &Gpus) -> Result<Vec<Placement>, PlacementError> {
    let mut out = Vec::new();
    for (i, group) in cfg.instance_group.iter().enumerate() {
        let name = if group.name.is_empty() {
            format!("#{i}")
        } else {
            format!("'{}'", group.name)
        };
        let count = group.count.max(1) as usize;
        let kind = Kind::try_from(group.kind).unwrap_or(Kind::Auto);
        let devices = match kind {
            Kind::Cpu | Kind::Model => None,
            Kind::Auto if gpus.present.is_empty() => {
                tracing::info!(
                    model,
                    "model '{model}': instance group {name} is KIND_AUTO and there is no GPU ({}); it runs on the CPU",
                    gpus.why_none.as_deref().unwrap_or("none found")
                );
                None
            }
            Kind::Gpu if gpus.present.is_empty() => {
                return Err(PlacementError::NoGpu {
                    group: name,
                    why: gpus.why_none.as_deref().unwrap_or("none found").to_string(),
                })
            }
            Kind::Gpu | Kind::Auto if group.gpus.is_empty() => Some(gpus.present.clone()),
            Kind::Gpu | Kind::Auto => Some(
                group
                    .gpus
                    .iter()
                    .map(|&d| {
                        u32::try_from(d)
                            .ok()
                            .filter(|d| gpus.present.contains(d))
                            .ok_or_else(|| PlacementError::MissingGpu {
                                group: name.clone(),
                                gpu: d,
                                present: gpus.present.clone(),
                            })
                    })
                    .collect::<Result<Vec<u32>, _>>()?,
            ),
        };
        let total = count
            .saturating_mul(devices.as_ref().map_or(1, Vec::len))
            .saturating_add(out.len());
        if total > MAX_INSTANCES {
            return Err(PlacementError::TooMany { group: name, total });
        }
        match devices {
            None => out.extend(std::iter::repeat_n(Placement::Cpu, count)),
            Some(devices) => {
                for d in devices {
                    out.extend(std::iter::repeat_n(Placement::Gpu(d), count));
                }
            }
        }
    }
    if out.is_empty() {
        out.push(Placement::Cpu);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ModelInstanceGroup;

    fn config(groups: &[(Kind, i32, &[i32])]) -> ModelConfig {
        ModelConfig {
            instance_group: groups
                .iter()
                .map(|(kind, count, gpus)| ModelInstanceGroup {
                    kind: *kind as i32,
                    count: *count,
                    gpus: gpus.to_vec(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    fn gpus(present: &[u32]) -> Gpus {
        Gpus {
            present: present.to_vec(),
            why_none: present.is_empty().then(|| "no NVIDIA driver".to_string()),
        }
    }

    #[test]
    fn kind_gpu_puts_count_instances_on_each_listed_gpu_or_every_gpu() {
        let listed = placements("m", &config(&[(Kind::Gpu, 2, &[1])]), &gpus(&[0, 1])).unwrap();
        assert_eq!(listed, vec![Placement::Gpu(1), Placement::Gpu(1)]);
        let all = placements(
            "m",
            &config(&[(Kind::Gpu, 1, &[]), (Kind::Cpu, 1, &[])]),
            &gpus(&[0, 1]),
        )
        .unwrap();
        assert_eq!(all, vec![Placement::Gpu(0), Placement::Gpu(1), Placement::Cpu]);
    }

    #[test]
    fn kind_gpu_without_a_gpu_fails_saying_why() {
        let err = placements("m", &config(&[(Kind::Gpu, 1, &[])]), &gpus(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("KIND_GPU") && err.contains("no NVIDIA driver"), "{err}");
        let err = placements("m", &config(&[(Kind::Gpu, 1, &[3])]), &gpus(&[0]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("names GPU 3"), "{err}");
    }

    #[test]
    fn more_instances_than_the_limit_fail_the_load_instead_of_exhausting_memory() {
        // count: 2147483647 aborted the process while loading the model (the config_pbtxt fuzz target's seed
        // fuzz/corpus/config_pbtxt/oom_instance_count.pbtxt).
        let n = MAX_INSTANCES as i32;
        assert_eq!(
            placements("m", &config(&[(Kind::Cpu, n, &[])]), &gpus(&[]))
                .unwrap()
                .len(),
            MAX_INSTANCES
        );
        let err = placements("m", &config(&[(Kind::Cpu, i32::MAX, &[])]), &gpus(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("#0 brings the model to 2147483647 instances; at most 1024"),
            "{err}"
        );
        // Counted over every group, and per GPU.
        let err = placements("m", &config(&[(Kind::Cpu, n, &[]), (Kind::Cpu, 1, &[])]), &gpus(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("#1 brings the model to 1025 instances"), "{err}");
        let err = placements("m", &config(&[(Kind::Gpu, n / 2 + 1, &[0, 1])]), &gpus(&[0, 1]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("to 1026 instances"), "{err}");
    }

    #[test]
    fn kind_auto_uses_the_gpus_when_there_are_some_and_the_cpu_otherwise() {
        let cfg = config(&[(Kind::Auto, 2, &[])]);
        assert_eq!(placements("m", &cfg, &gpus(&[0])).unwrap(), vec![Placement::Gpu(0); 2]);
        assert_eq!(placements("m", &cfg, &gpus(&[])).unwrap(), vec![Placement::Cpu; 2]);
    }
}
