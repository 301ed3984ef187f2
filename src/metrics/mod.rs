//! Sample quality: images → Inception features → statistics → Fréchet distance (FID).
pub mod datasets;
pub mod fid_cli;
pub mod frechet;
pub mod stats;

use crate::{BenchError, Result};
use std::fmt;
use std::str::FromStr;

/// How images are resized to Inception's 299×299 input and normalised; each mode reproduces one
/// reference pipeline and is recorded with every FID it produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum ResizeMode {
    /// pytorch-fid: uint8 → [0,1] → `F.interpolate(bilinear, align_corners=False)` → 2x−1.
    #[default]
    PytorchFid,
    /// TF1 `resize_bilinear(align_corners=False)` on [0,255] → (x−128)/128 (TTUR, torch-fidelity, EDM).
    Tf,
    /// clean-fid: PIL bicubic antialiased float resize → (x−128)/128.
    Clean,
}

impl ResizeMode {
    pub const ALL: [ResizeMode; 3] = [ResizeMode::PytorchFid, ResizeMode::Tf, ResizeMode::Clean];

    pub fn name(self) -> &'static str {
        match self {
            ResizeMode::PytorchFid => "pytorch-fid",
            ResizeMode::Tf => "tf",
            ResizeMode::Clean => "clean",
        }
    }
}

impl fmt::Display for ResizeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ResizeMode {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self> {
        ResizeMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| BenchError::user(format!("unknown FID mode '{s}'; allowed: pytorch-fid, tf, clean")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_mode_names_round_trip_and_unknown_is_a_user_error() {
        for m in ResizeMode::ALL {
            assert_eq!(m.name().parse::<ResizeMode>().unwrap(), m);
        }
        let e = "bicubic".parse::<ResizeMode>().unwrap_err();
        assert_eq!(e.to_string(), "unknown FID mode 'bicubic'; allowed: pytorch-fid, tf, clean");
        assert_eq!(e.exit_code(), 2);
    }
}
