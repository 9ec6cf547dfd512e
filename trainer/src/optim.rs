//! Adam, as the method uses it (no weight decay; the L2 term is part of the loss and touches
//! the last layer only).
//!
//! candle-nn's `AdamW` would do the arithmetic, but its moments are private, and a run that is
//! interrupted must resume with them; so the few lines of Adam live here, with state that can
//! be saved and loaded.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{backprop::GradStore, DType, Device, Result, Tensor, Var};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    /// The method's learning rate, PyTorch's other defaults.
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
}

/// Adam over named variables.
pub struct Adam {
    pub config: AdamConfig,
    slots: Vec<Slot>,
    step: u64,
}

impl Adam {
    pub fn new(vars: Vec<(String, Var)>, config: AdamConfig) -> Result<Self> {
        let slots = vars
            .into_iter()
            .map(|(name, var)| {
                let zeros = var.zeros_like()?;
                Ok(Slot {
                    name,
                    m: zeros.clone(),
                    v: zeros,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            slots,
            step: 0,
        })
    }

    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update from the gradients of `grads`; variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2 = 1.0 - c.beta2.powi(t);
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            // Gradients carry the graph of the step that made them; the moments must not,
            // or every step's activations stay alive through them.
            let g = g.detach();
            slot.m = ((&slot.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            slot.v = ((&slot.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&slot.m / bias1)?;
            let v_hat = (&slot.v / bias2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            slot.var.set(&(slot.var.as_tensor() - (update * c.lr)?)?)?;
        }
        Ok(())
    }

    /// Backward pass of `loss` and one step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// Saves the moments and the step count (safetensors, `m.<name>`, `v.<name>`, `step`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for slot in &self.slots {
            tensors.insert(format!("m.{}", slot.name), slot.m.clone());
            tensors.insert(format!("v.{}", slot.name), slot.v.clone());
        }
        tensors.insert(
            "step".into(),
            Tensor::new(&[self.step as i64], &Device::Cpu)?,
        );
        candle_core::safetensors::save(&tensors, path)
    }

    /// Restores what [`Adam::save`] wrote; every variable's moments must be there.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let get = |key: &str, like: &Tensor| -> Result<Tensor> {
            let t = tensors
                .get(key)
                .ok_or_else(|| candle_core::Error::Msg(format!("optimiser state lacks {key}")))?;
            if t.dims() != like.dims() {
                candle_core::bail!("optimiser state {key} has shape {:?}", t.dims());
            }
            t.to_dtype(like.dtype())?.to_device(like.device())
        };
        for slot in &mut self.slots {
            slot.m = get(&format!("m.{}", slot.name), &slot.m)?;
            slot.v = get(&format!("v.{}", slot.name), &slot.v)?;
        }
        let step = tensors
            .get("step")
            .ok_or_else(|| candle_core::Error::Msg("optimiser state lacks step".into()))?;
        self.step = step
            .to_dtype(DType::I64)?
            .flatten_all()?
            .to_vec1::<i64>()?
            .first()
            .map_or(0, |s| (*s).max(0) as u64);
        Ok(())
    }
}
