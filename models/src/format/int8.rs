//! The packed int8 weight layout of format version 2 (`docs/model-format.md`, "int8"): a
//! convolution's weights stored in the order the CPU kernels read them, so that an int8 model
//! runs straight from the memory-mapped file.
//!
//! Panels of [`PANEL_CHANNELS`] output channels; in a panel, for each group of
//! [`DEPTH_GROUP`] consecutive depth values (depth running over (ky, kx, ci) with ci padded to
//! a multiple of the group), the group's bytes of each of the panel's channels. The file
//! format owns these two numbers: the kernels in `fast::int8` assert that their register
//! blocking matches them, and a test pins both to the format document.

/// Output channels per panel.
pub const PANEL_CHANNELS: usize = 16;
/// Consecutive depth values stored together for one channel.
pub const DEPTH_GROUP: usize = 4;
/// Largest quantised weight magnitude.
pub const WEIGHT_MAX: f32 = 127.0;

/// Channels padded to a whole number of depth groups.
pub fn padded_channels(cin: usize) -> usize {
    cin.div_ceil(DEPTH_GROUP) * DEPTH_GROUP
}

/// Shape of a packed int8 convolution weight: `[panels, depth / 4, 16, 4]`, depth being
/// `k * k * padded_channels(cin)`.
pub fn packed_shape(cout: usize, cin: usize, k: usize) -> Vec<usize> {
    vec![
        cout.div_ceil(PANEL_CHANNELS),
        k * k * padded_channels(cin) / DEPTH_GROUP,
        PANEL_CHANNELS,
        DEPTH_GROUP,
    ]
}

/// Index in the packed layout of weight (o, ci, ky, kx).
fn packed_index(o: usize, ci: usize, ky: usize, kx: usize, cin: usize, k: usize) -> usize {
    let depth = k * k * padded_channels(cin);
    let d = (ky * k + kx) * padded_channels(cin) + ci;
    (o / PANEL_CHANNELS) * depth * PANEL_CHANNELS
        + (d / DEPTH_GROUP) * PANEL_CHANNELS * DEPTH_GROUP
        + (o % PANEL_CHANNELS) * DEPTH_GROUP
        + d % DEPTH_GROUP
}

/// Symmetric per-row int8 of a row-major `rows` x n matrix (a row: one output channel's
/// weights): `scale = max|w| / WEIGHT_MAX` (1.0 for an all-zero row), `q = round(w / scale)`.
pub fn quantize_rows(values: &[f32], rows: usize) -> (Vec<i8>, Vec<f32>) {
    let per_row = values.len() / rows.max(1);
    let mut q = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(rows);
    for row in values.chunks(per_row.max(1)).take(rows) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / WEIGHT_MAX } else { 1.0 };
        q.extend(
            row.iter()
                .map(|v| (v / scale).round().clamp(-WEIGHT_MAX, WEIGHT_MAX) as i8),
        );
        scales.push(scale);
    }
    (q, scales)
}

/// Packs int8 weights given as (cout, cin, k, k), row-major.
pub fn pack(weights: &[i8], cout: usize, cin: usize, k: usize) -> Vec<u8> {
    assert_eq!(weights.len(), cout * cin * k * k, "weight count");
    let mut out = vec![0u8; packed_shape(cout, cin, k).iter().product()];
    for (i, &w) in weights.iter().enumerate() {
        let (o, rest) = (i / (cin * k * k), i % (cin * k * k));
        let (ci, ky, kx) = (rest / (k * k), rest % (k * k) / k, rest % k);
        out[packed_index(o, ci, ky, kx, cin, k)] = w as u8;
    }
    out
}

/// The (cout, cin, k, k) row-major weights of a packed layout.
pub fn unpack(packed: &[u8], cout: usize, cin: usize, k: usize) -> Vec<i8> {
    (0..cout * cin * k * k)
        .map(|i| {
            let (o, rest) = (i / (cin * k * k), i % (cin * k * k));
            let (ci, ky, kx) = (rest / (k * k), rest % (k * k) / k, rest % k);
            packed
                .get(packed_index(o, ci, ky, kx, cin, k))
                .map_or(0, |&b| b as i8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The format document states the layout in numbers; these are the numbers the code uses.
    #[test]
    fn the_layout_constants_are_the_ones_the_format_document_states() {
        let doc = include_str!("../../../docs/model-format.md");
        let shape = format!(
            "[ceil(out/{PANEL_CHANNELS}), k*k*in4/{DEPTH_GROUP}, {PANEL_CHANNELS}, {DEPTH_GROUP}]"
        );
        assert!(
            doc.contains(&shape),
            "docs/model-format.md no longer says {shape}"
        );
        let index = format!(
            "(o / {PANEL_CHANNELS}) * (k*k*in4 * {PANEL_CHANNELS}) + (d / {DEPTH_GROUP}) * {} + (o % {PANEL_CHANNELS}) * {DEPTH_GROUP} + d % {DEPTH_GROUP}",
            PANEL_CHANNELS * DEPTH_GROUP
        );
        assert!(
            doc.contains(&index),
            "docs/model-format.md no longer says {index}"
        );
    }

    #[test]
    fn packing_follows_the_documented_index_and_unpacks_to_the_same_weights() {
        let (cout, cin, k) = (20, 3, 3);
        let weights: Vec<i8> = (0..cout * cin * k * k).map(|i| (i % 251) as i8).collect();
        let packed = pack(&weights, cout, cin, k);
        assert_eq!(
            packed.len(),
            packed_shape(cout, cin, k).iter().product::<usize>()
        );
        // (o, ci, ky, kx) = (17, 2, 1, 2): the documented formula, written out.
        let (o, ci, ky, kx) = (17, 2, 1, 2);
        let in4 = padded_channels(cin);
        let d = (ky * k + kx) * in4 + ci;
        let at = (o / 16) * (k * k * in4 * 16) + (d / 4) * 64 + (o % 16) * 4 + d % 4;
        assert_eq!(
            packed[at] as i8,
            weights[((o * cin + ci) * k + ky) * k + kx]
        );
        assert_eq!(unpack(&packed, cout, cin, k), weights);
    }
}
