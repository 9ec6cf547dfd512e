//! Choosing where the networks run.

use candle_core::Device;

use crate::{ModelError, Result};

/// `cpu`, `cuda` (the first GPU) or `cuda:N`. CUDA needs a build with the `cuda` feature.
pub fn device_from_name(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        _ if name == "cuda" || name.starts_with("cuda:") => {
            let ordinal = match name.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map_err(|_| ModelError::InvalidConfig(format!("bad device '{name}'")))?,
                None => 0,
            };
            if !cfg!(feature = "cuda") {
                return Err(ModelError::InvalidConfig(
                    "this build has no CUDA support: rebuild with --features cuda".into(),
                ));
            }
            Ok(Device::new_cuda(ordinal)?)
        }
        other => Err(ModelError::InvalidConfig(format!(
            "unknown device '{other}' (expected cpu, cuda or cuda:N)"
        ))),
    }
}
