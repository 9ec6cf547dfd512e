//! Deterministic number streams that Python computes bit for bit the same way
//! (`scripts/make_parity_fixture.py`): the parity formula ([`crate::formula`]) and seeded
//! initialisation ([`crate::resnet::initialize_seeded`]) draw from them.

pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n` values uniform in [-1, 1), seeded by `name`.
pub fn uniform(name: &str, n: usize) -> Vec<f64> {
    seeded_uniform(0, name, n)
}

/// `n` values uniform in [-1, 1) from the stream of (`seed`, `name`); seed 0 is [`uniform`].
pub fn seeded_uniform(seed: u64, name: &str, n: usize) -> Vec<f64> {
    let seed = fnv1a64(name.as_bytes()) ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (0..n as u64)
        .map(|i| 2.0 * (splitmix64(seed.wrapping_add(i)) >> 40) as f64 / (1u64 << 24) as f64 - 1.0)
        .collect()
}
