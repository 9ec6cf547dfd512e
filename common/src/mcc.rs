//! Minutia Cylinder-Code (MCC): a second minutiae matcher beside BOZORTH3, after Cappelli,
//! Ferrara and Maltoni, "Minutia Cylinder-Code: a new representation and matching technique
//! for fingerprint recognition", IEEE TPAMI 32(12), 2010, with the parameters the paper gives.
//!
//! Why a second one: BOZORTH3 pairs minutiae by the edges between them, and a moved, pressed or
//! distorted impression loses those edges; on the FVC2002 B-sets a few genuine scans score
//! inside the strangers' tail whatever rule is put on its scores. MCC describes each minutia
//! by its neighbourhood (a cylinder of cells around it, in the minutia's own frame: position
//! and relative direction of the neighbours, blurred by Gaussians), which tolerates local
//! distortion, and ranks the best-matching pairs by how consistent they are with each other
//! (LSS-R: local similarity sort with relaxation).
//!
//! Input is minutiae in NIST xyt form (pixels at 500 dpi, angles in degrees counter-clockwise
//! with y up), so no gallery needs re-enrolling: cylinders are derived from the stored
//! minutiae when a template is prepared for comparison. No crate on crates.io implements MCC.

use std::f32::consts::PI;
use std::sync::OnceLock;

/// Cylinder radius, in pixels at 500 dpi.
const R: f32 = 70.0;
/// Cells along a side of the cylinder's base.
const NS: usize = 16;
/// Cells along its height (directions).
const ND: usize = 6;
const CELLS: usize = NS * NS * ND;
const DELTA_S: f32 = 2.0 * R / NS as f32;
const DELTA_D: f32 = 2.0 * PI / ND as f32;
const SIGMA_S: f32 = 28.0 / 3.0;
const SIGMA_D: f32 = 2.0 * PI / 9.0;
/// A cell's activation: sigmoid of the neighbours' summed contributions.
const MU_PSI: f32 = 0.01;
const TAU_PSI: f32 = 400.0;
/// Cells outside the minutiae's convex hull grown by this many pixels are not valid: no
/// minutia could be seen there, so their emptiness says nothing.
const HULL_OFFSET: f32 = 50.0;
/// A cylinder is kept when this many other minutiae lie within its reach.
const MIN_NEIGHBOURS: usize = 2;
/// Two cylinders compare when their minutiae's directions differ by at most this.
const MAX_DIRECTION_DIFFERENCE: f32 = PI / 2.0;

/// A cylinder is kept when at least this share of the cells in its circle is valid.
const MIN_VALID_SHARE: f32 = 0.75;
/// Two cylinders compare when they share at least this share of the circle's cells as valid.
const MIN_COMMON_SHARE: f32 = 0.6;
/// How many pairs the global score averages: from MIN_PAIRS (few minutiae) to MAX_PAIRS.
const MIN_PAIRS: usize = 4;
const MAX_PAIRS: usize = 12;
const MU_PAIRS: f32 = 20.0;
const TAU_PAIRS: f32 = 0.4;
/// Relaxation (LSS-R): iterations, weight of a pair's own similarity, and the compatibility
/// sigmoids on distance (pixels), direction and radial-angle differences between two pairs.
const RELAXATION_WEIGHT: f32 = 0.5;
const RELAXATION_ROUNDS: usize = 5;
const COMPAT_DISTANCE: (f32, f32) = (5.0, -1.6);
const COMPAT_DIRECTION: (f32, f32) = (PI / 12.0, -30.0);
const COMPAT_RADIAL: (f32, f32) = (PI / 12.0, -30.0);

fn sigmoid(v: f32, mu: f32, tau: f32) -> f32 {
    1.0 / (1.0 + (-tau * (v - mu)).exp())
}

/// The difference of two angles, in [-pi, pi).
fn angle_difference(a: f32, b: f32) -> f32 {
    let d = a - b;
    d - 2.0 * PI * floor((d + PI) / (2.0 * PI))
}

/// `f32::floor`, inline: baseline x86-64 has no rounding instruction, so `floor` is a call,
/// and comparisons make millions of them. The same value for every input.
fn floor(q: f32) -> f32 {
    if q.abs() < 8_388_608.0 {
        // Below 2^23 in magnitude the truncation is exact (its sign kept, for -0.0); a
        // negative non-integer steps down.
        let truncated = (q as i32 as f32).copysign(q);
        if truncated > q {
            truncated - 1.0
        } else {
            truncated
        }
    } else {
        // Already an integer, an infinity or NaN.
        q.floor()
    }
}

/// A minutia in radians.
#[derive(Clone, Copy, Debug)]
struct Point {
    x: f32,
    y: f32,
    theta: f32,
}

/// The cells of the base (NS x NS) that lie within the cylinder's radius.
fn in_circle(i: usize, j: usize) -> bool {
    let (u, v) = cell_offset(i, j);
    u * u + v * v <= R * R
}

/// A base cell's centre relative to the minutia, before rotation.
fn cell_offset(i: usize, j: usize) -> (f32, f32) {
    let half = (NS as f32 + 1.0) / 2.0;
    (
        DELTA_S * (i as f32 + 1.0 - half),
        DELTA_S * (j as f32 + 1.0 - half),
    )
}

fn cells_in_circle() -> usize {
    (0..NS)
        .flat_map(|i| (0..NS).map(move |j| (i, j)))
        .filter(|&(i, j)| in_circle(i, j))
        .count()
}

/// The convex hull of the minutiae, counter-clockwise (Andrew's monotone chain).
fn convex_hull(points: &[Point]) -> Vec<(f32, f32)> {
    let mut p: Vec<(f32, f32)> = points.iter().map(|m| (m.x, m.y)).collect();
    p.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    p.dedup();
    if p.len() < 3 {
        return p;
    }
    let cross = |o: (f32, f32), a: (f32, f32), b: (f32, f32)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    let mut hull: Vec<(f32, f32)> = Vec::with_capacity(2 * p.len());
    for pass in 0..2 {
        let start = hull.len();
        let iter: Box<dyn Iterator<Item = &(f32, f32)>> = if pass == 0 {
            Box::new(p.iter())
        } else {
            Box::new(p.iter().rev())
        };
        for &q in iter {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], q) <= 0.0
            {
                hull.pop();
            }
            hull.push(q);
        }
        hull.pop();
    }
    hull
}

/// The area of a simple polygon (shoelace formula); 0 for fewer than 3 corners.
fn polygon_area(corners: &[(f32, f32)]) -> f32 {
    if corners.len() < 3 {
        return 0.0;
    }
    let twice: f32 = corners
        .iter()
        .zip(corners.iter().cycle().skip(1))
        .map(|(a, b)| a.0 * b.1 - b.0 * a.1)
        .sum();
    twice.abs() / 2.0
}

/// Whether `q` lies inside the hull or within `offset` of it.
fn near_hull(hull: &[(f32, f32)], q: (f32, f32), offset: f32) -> bool {
    let segment_distance = |a: (f32, f32), b: (f32, f32)| {
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = dx * dx + dy * dy;
        let t = if len2 > 0.0 {
            (((q.0 - a.0) * dx + (q.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let (px, py) = (a.0 + t * dx - q.0, a.1 + t * dy - q.1);
        (px * px + py * py).sqrt()
    };
    match hull.len() {
        0 => false,
        1 => segment_distance(hull[0], hull[0]) <= offset,
        _ => {
            let mut inside = hull.len() >= 3;
            let mut nearest = f32::INFINITY;
            for k in 0..hull.len() {
                let (a, b) = (hull[k], hull[(k + 1) % hull.len()]);
                if (b.0 - a.0) * (q.1 - a.1) - (b.1 - a.1) * (q.0 - a.0) < 0.0 {
                    inside = false;
                }
                nearest = nearest.min(segment_distance(a, b));
            }
            inside || nearest <= offset
        }
    }
}

/// A squared distance surely beyond 3 sigma of a cell's centre: 1% above (3 sigma)^2.
const FAR_SQUARED: f32 = 1.01 * (3.0 * SIGMA_S) * (3.0 * SIGMA_S);

/// Most minutiae a template's cylinders are built from: a cylinder's index must fit 16 bits
/// (see `local_key`).
pub const MAX_POINTS: usize = 1 << 16;

/// Words of a cylinder's bits, one bit a cell (NS x NS x ND, direction innermost).
const WORDS: usize = CELLS.div_ceil(64);
/// Words of a cylinder's base, one bit a base cell (NS x NS).
const BASE_WORDS: usize = (NS * NS).div_ceil(64);

/// One minutia's cylinder, binarised as in the paper's MCC16b: a cell's bit is set where
/// its neighbours' contribution passes the activation sigmoid's midpoint. `valid` has every
/// direction's bit set for each base cell that is valid; `valid_base` one bit per valid base
/// cell, to count the cells two cylinders share with a sixth of the work.
#[derive(Clone, Debug)]
struct Cylinder {
    minutia: usize,
    valid: [u64; WORDS],
    valid_base: [u64; BASE_WORDS],
    bits: [u64; WORDS],
}

/// A template's cylinders, ready to compare.
#[derive(Clone, Debug, Default)]
pub struct Cylinders {
    points: Vec<Point>,
    cylinders: Vec<Cylinder>,
    /// Area of the minutiae's convex hull, in square pixels at 500 dpi.
    area: f32,
    /// The relaxation's geometry of every two minutiae with cylinders (row-major by cylinder
    /// index), filled on the first comparison where this template is the probe (`self` of
    /// [`Cylinders::score`]) and reused by its others; a gallery's templates never fill it.
    probe_geometry: OnceLock<Vec<PairGeometry>>,
}

/// What the relaxation compares of two minutiae t and k of one template: their distance, the
/// difference of their directions, and t's direction against the line from t to k.
#[derive(Clone, Copy, Debug, Default)]
struct PairGeometry {
    distance: f32,
    direction: f32,
    radial: f32,
}

impl PairGeometry {
    fn of(t: Point, k: Point) -> Self {
        Self {
            distance: (t.x - k.x).hypot(t.y - k.y),
            direction: angle_difference(t.theta, k.theta),
            radial: angle_difference(t.theta, (k.y - t.y).atan2(k.x - t.x)),
        }
    }
}

fn set_bit(words: &mut [u64; WORDS], bit: usize) {
    words[bit / 64] |= 1 << (bit % 64);
}

/// The share of a direction's Gaussian (sigma SIGMA_D) falling in a cell ΔD wide at `alpha`.
fn direction_weight(alpha: f32) -> f32 {
    let s = f64::from(SIGMA_D) * std::f64::consts::SQRT_2;
    let (lo, hi) = (
        f64::from(alpha - DELTA_D / 2.0),
        f64::from(alpha + DELTA_D / 2.0),
    );
    (0.5 * (libm::erf(hi / s) - libm::erf(lo / s))) as f32
}

impl Cylinders {
    /// Builds the cylinders of a print's minutiae, given as (x, y, theta in degrees); those
    /// with too few valid cells or neighbours are left out, as the paper does. Past
    /// [`MAX_POINTS`] minutiae (a template has at most 150) the rest are ignored.
    pub fn new(xyt: impl IntoIterator<Item = (i32, i32, i32)>) -> Self {
        let points: Vec<Point> = xyt
            .into_iter()
            .take(MAX_POINTS)
            .map(|(x, y, theta)| Point {
                x: x as f32,
                y: y as f32,
                theta: (theta as f32).to_radians(),
            })
            .collect();
        let hull = convex_hull(&points);
        let area = polygon_area(&hull);
        let min_valid = (MIN_VALID_SHARE * cells_in_circle() as f32).ceil() as usize;
        let reach = R + 3.0 * SIGMA_S;
        let gauss_norm = 1.0 / (SIGMA_S * (2.0 * PI).sqrt());
        let mut cylinders = Vec::new();
        for (index, m) in points.iter().enumerate() {
            // Each neighbour with its direction weights, one per direction cell: they depend
            // on the neighbour's direction only, not on the cell's position.
            let neighbours: Vec<(&Point, [f32; ND])> = points
                .iter()
                .enumerate()
                .filter(|&(t, p)| t != index && (p.x - m.x).hypot(p.y - m.y) <= reach)
                .map(|(_, p)| {
                    let relative = angle_difference(m.theta, p.theta);
                    let weights = std::array::from_fn(|k| {
                        let phi = -PI + (k as f32 + 0.5) * DELTA_D;
                        direction_weight(angle_difference(phi, relative))
                    });
                    (p, weights)
                })
                .collect();
            if neighbours.len() < MIN_NEIGHBOURS {
                continue;
            }
            let (sin, cos) = m.theta.sin_cos();
            let mut valid = [0u64; WORDS];
            let mut valid_base = [0u64; BASE_WORDS];
            let mut bits = [0u64; WORDS];
            let mut valid_count = 0;
            for i in 0..NS {
                for j in 0..NS {
                    if !in_circle(i, j) {
                        continue;
                    }
                    let (u, v) = cell_offset(i, j);
                    let centre = (m.x + cos * u - sin * v, m.y + sin * u + cos * v);
                    if !near_hull(&hull, centre, HULL_OFFSET) {
                        continue;
                    }
                    let cell = i * NS + j;
                    valid_base[cell / 64] |= 1 << (cell % 64);
                    for k in 0..ND {
                        set_bit(&mut valid, cell * ND + k);
                    }
                    valid_count += 1;
                    let mut sums = [0.0f32; ND];
                    for (p, weights) in &neighbours {
                        let (dx, dy) = (p.x - centre.0, p.y - centre.1);
                        // Most neighbours lie far beyond 3 sigma: the squared distance, with a
                        // margin far above its rounding error, rules them out before `hypot`
                        // (which decides, as before, for the rest).
                        if dx * dx + dy * dy > FAR_SQUARED {
                            continue;
                        }
                        let d = dx.hypot(dy);
                        if d > 3.0 * SIGMA_S {
                            continue;
                        }
                        let spatial = gauss_norm * (-d * d / (2.0 * SIGMA_S * SIGMA_S)).exp();
                        for (sum, weight) in sums.iter_mut().zip(weights) {
                            *sum += spatial * weight;
                        }
                    }
                    for (k, sum) in sums.iter().enumerate() {
                        if sigmoid(*sum, MU_PSI, TAU_PSI) > 0.5 {
                            set_bit(&mut bits, cell * ND + k);
                        }
                    }
                }
            }
            if valid_count >= min_valid {
                cylinders.push(Cylinder {
                    minutia: index,
                    valid,
                    valid_base,
                    bits,
                });
            }
        }
        Self {
            points,
            cylinders,
            area,
            probe_geometry: OnceLock::new(),
        }
    }

    /// How many minutiae have a cylinder.
    pub fn len(&self) -> usize {
        self.cylinders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cylinders.is_empty()
    }

    /// Area of the minutiae's convex hull, in square pixels at 500 dpi: how much of the
    /// finger the print shows minutiae on.
    pub fn area(&self) -> f32 {
        self.area
    }

    /// The global similarity of two templates, 0..1 (LSS-R).
    pub fn score(&self, other: &Cylinders) -> f32 {
        let (na, nb) = (self.cylinders.len(), other.cylinders.len());
        if na == 0 || nb == 0 {
            return 0.0;
        }
        let min_common = (MIN_COMMON_SHARE * (cells_in_circle() * ND) as f32).ceil() as u32;
        let mut local = Vec::with_capacity(na * nb);
        for (r, a) in self.cylinders.iter().enumerate() {
            for (c, b) in other.cylinders.iter().enumerate() {
                let s = cylinder_similarity(
                    a,
                    b,
                    self.points[a.minutia].theta,
                    other.points[b.minutia].theta,
                    min_common,
                );
                if s > 0.0 {
                    local.push(local_key(s, r, c));
                }
            }
        }
        let n_min = na.min(nb);
        let pairs_wanted = MIN_PAIRS
            + (sigmoid(n_min as f32, MU_PAIRS, TAU_PAIRS) * (MAX_PAIRS - MIN_PAIRS) as f32).round()
                as usize;
        // The n_min best pairs, each minutia in one pair at most.
        // Ties in the order they were found (by row, then column), as a stable sort keeps
        // them: the keys sort in that order as plain integers.
        local.sort_unstable();
        let (mut used_a, mut used_b) = (vec![false; na], vec![false; nb]);
        let mut pairs = Vec::with_capacity(n_min);
        for (s, r, c) in local.iter().map(|&key| from_local_key(key)) {
            if pairs.len() == n_min {
                break;
            }
            if !used_a[r] && !used_b[c] {
                used_a[r] = true;
                used_b[c] = true;
                pairs.push((s, r, other.points[other.cylinders[c].minutia]));
            }
        }
        let n = pairs.len();
        if n == 0 {
            return 0.0;
        }
        // The probe's side of each two pairs, from the table its comparisons share.
        let geometry = self.probe_geometry.get_or_init(|| {
            let minutiae: Vec<Point> = self
                .cylinders
                .iter()
                .map(|c| self.points[c.minutia])
                .collect();
            minutiae
                .iter()
                .flat_map(|&t| minutiae.iter().map(move |&k| PairGeometry::of(t, k)))
                .collect()
        });
        let probe = |t: usize, k: usize| geometry[pairs[t].1 * na + pairs[k].1];
        // The distance factor of two pairs is symmetric (`hypot` of a difference and of its
        // negation are the same number): computed once for both orders.
        let mut distance_factor = vec![0.0f32; n * n];
        for t in 0..n {
            for k in t + 1..n {
                let (_, _, bt) = pairs[t];
                let (_, _, bk) = pairs[k];
                let gap = (probe(t, k).distance - (bt.x - bk.x).hypot(bt.y - bk.y)).abs();
                let factor = sigmoid(gap, COMPAT_DISTANCE.0, COMPAT_DISTANCE.1);
                distance_factor[t * n + k] = factor;
                distance_factor[k * n + t] = factor;
            }
        }
        let mut compat = vec![0.0f32; n * n];
        for t in 0..n {
            for k in 0..n {
                if t == k {
                    continue;
                }
                let (_, _, bt) = pairs[t];
                let (_, _, bk) = pairs[k];
                let distance = distance_factor[t * n + k];
                if distance == 0.0 {
                    // A distance gap past about 60 px: the product is 0 whatever the angles
                    // (their factors are finite), so their `atan2`s are skipped.
                    continue;
                }
                let a = probe(t, k);
                let d2 = angle_difference(a.direction, angle_difference(bt.theta, bk.theta)).abs();
                let radial = angle_difference(bt.theta, (bk.y - bt.y).atan2(bk.x - bt.x));
                let d3 = angle_difference(a.radial, radial).abs();
                compat[t * n + k] = distance
                    * sigmoid(d2, COMPAT_DIRECTION.0, COMPAT_DIRECTION.1)
                    * sigmoid(d3, COMPAT_RADIAL.0, COMPAT_RADIAL.1);
            }
        }
        let initial: Vec<f32> = pairs.iter().map(|p| p.0).collect();
        let mut lambda = initial.clone();
        if n > 1 {
            for _ in 0..RELAXATION_ROUNDS {
                let next: Vec<f32> = (0..n)
                    .map(|t| {
                        let support: f32 =
                            (0..n).map(|k| compat[t * n + k] * lambda[k]).sum::<f32>()
                                / (n - 1) as f32;
                        RELAXATION_WEIGHT * lambda[t] + (1.0 - RELAXATION_WEIGHT) * support
                    })
                    .collect();
                lambda = next;
            }
        }
        // The pairs whose similarity held best under relaxation, by efficiency.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&x, &y| (lambda[y] / initial[y]).total_cmp(&(lambda[x] / initial[x])));
        let take = pairs_wanted.min(n);
        order[..take].iter().map(|&t| lambda[t]).sum::<f32>() / take as f32
    }
}

/// A local similarity with its row and column as one integer that sorts by similarity, highest
/// first, then by row and column: a similarity is in (0, 1], where a positive float's bits
/// order as its value, and a row or a column is below `MAX_POINTS`, so it fits 16 bits.
fn local_key(similarity: f32, row: usize, column: usize) -> u64 {
    (u64::from(!similarity.to_bits()) << 32)
        | ((row as u64 & 0xffff) << 16)
        | (column as u64 & 0xffff)
}

fn from_local_key(key: u64) -> (f32, usize, usize) {
    (
        f32::from_bits(!((key >> 32) as u32)),
        ((key >> 16) & 0xffff) as usize,
        (key & 0xffff) as usize,
    )
}

/// The local similarity of two cylinders: 1 - |a - b| / (|a| + |b|) over the cells valid in
/// both (bits: the norms are square roots of counts), 0 when their minutiae point too
/// differently or they share too few valid cells.
fn cylinder_similarity(
    a: &Cylinder,
    b: &Cylinder,
    theta_a: f32,
    theta_b: f32,
    min_common: u32,
) -> f32 {
    if angle_difference(theta_a, theta_b).abs() > MAX_DIRECTION_DIFFERENCE {
        return 0.0;
    }
    // The valid cells in common, counted on the base (each valid base cell has all ND
    // direction bits valid): the same count, and pairs that share too few stop before the
    // cells' own words are read.
    let common: u32 = (0..BASE_WORDS)
        .map(|w| (a.valid_base[w] & b.valid_base[w]).count_ones())
        .sum::<u32>()
        * ND as u32;
    if common < min_common {
        return 0.0;
    }
    // |x ^ y| = |x| + |y| - 2 |x & y|: three counts a word instead of four.
    let (mut na, mut nb, mut both) = (0u32, 0u32, 0u32);
    for w in 0..WORDS {
        let mask = a.valid[w] & b.valid[w];
        let (x, y) = (a.bits[w] & mask, b.bits[w] & mask);
        na += x.count_ones();
        nb += y.count_ones();
        both += (x & y).count_ones();
    }
    let nd = na + nb - 2 * both;
    let norms = (na as f32).sqrt() + (nb as f32).sqrt();
    if norms == 0.0 {
        return 0.0;
    }
    1.0 - (nd as f32).sqrt() / norms
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) type Xyt = Vec<(i32, i32, i32)>;

    /// A seeded xorshift for test data: each call gives the next value below its argument.
    pub(crate) fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut state = seed | 1;
        move |below| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        }
    }

    /// `n` pseudo-random minutiae in a 300 px square (a seeded xorshift).
    pub(crate) fn random_template(seed: u64, n: usize) -> Xyt {
        let mut next = xorshift(seed);
        let mut next = move |m: i32| next(m as u64) as i32;
        (0..n)
            .map(|_| (40 + next(300), 40 + next(300), next(360)))
            .collect()
    }

    /// The template turned by `degrees` about (200, 200) and moved by (dx, dy).
    pub(crate) fn moved(t: &Xyt, degrees: f32, dx: f32, dy: f32) -> Xyt {
        let (sin, cos) = degrees.to_radians().sin_cos();
        t.iter()
            .map(|&(x, y, theta)| {
                let (x, y) = (x as f32 - 200.0, y as f32 - 200.0);
                (
                    (200.0 + cos * x - sin * y + dx).round() as i32,
                    (200.0 + sin * x + cos * y + dy).round() as i32,
                    (theta as f32 + degrees).round().rem_euclid(360.0) as i32,
                )
            })
            .collect()
    }

    #[test]
    fn a_print_matches_itself_turned_and_moved_and_not_a_stranger() {
        let finger = Cylinders::new(random_template(7, 45));
        assert!(finger.len() > 20, "{} cylinders", finger.len());
        let itself = finger.score(&finger);
        assert!(itself > 0.95, "{itself}");
        // Within a quarter turn: a finger is not put on a sensor upside down, and MCC pairs no
        // minutiae whose directions differ by more.
        for (degrees, dx, dy) in [(30.0, 25.0, -40.0), (-75.0, -10.0, 5.0), (60.0, 0.0, 0.0)] {
            let turned = finger.score(&Cylinders::new(moved(
                &random_template(7, 45),
                degrees,
                dx,
                dy,
            )));
            assert!(
                turned > 0.6 * itself,
                "{degrees} deg: {turned} against {itself}"
            );
            let stranger = Cylinders::new(moved(&random_template(99, 45), degrees, dx, dy));
            let s = finger.score(&stranger);
            assert!(
                s < 0.2 * turned,
                "{degrees} deg: stranger {s}, same finger {turned}"
            );
        }
    }

    #[test]
    fn the_area_is_that_of_the_minutiae_hull() {
        // A 100 x 60 rectangle's corners, with minutiae inside that leave the hull alone.
        let rectangle: Xyt = vec![
            (10, 10, 0),
            (110, 10, 90),
            (110, 70, 180),
            (10, 70, 270),
            (50, 40, 45),
            (80, 30, 10),
        ];
        assert!((Cylinders::new(rectangle).area() - 6000.0).abs() < 1e-3);
        // Fewer than three minutiae, or all on a line, span no area.
        assert_eq!(Cylinders::new(vec![(0, 0, 0), (50, 50, 0)]).area(), 0.0);
        let line: Xyt = (0..10).map(|i| (10 * i, 0, 0)).collect();
        assert_eq!(Cylinders::new(line).area(), 0.0);
        let spread = Cylinders::new(random_template(7, 45)).area();
        assert!((40_000.0..=90_000.0).contains(&spread), "{spread}");
    }

    #[test]
    fn too_few_minutiae_score_zero_without_panicking() {
        let empty = Cylinders::new(Xyt::new());
        assert!(empty.is_empty());
        let lone = Cylinders::new(random_template(3, 2));
        assert!(
            lone.is_empty(),
            "a minutia with one neighbour has no cylinder"
        );
        let finger = Cylinders::new(random_template(7, 45));
        assert_eq!(finger.score(&empty), 0.0);
        assert_eq!(empty.score(&finger), 0.0);
        assert_eq!(lone.score(&finger), 0.0);
        // All minutiae on one spot: a degenerate hull, scored without a panic.
        let heap: Xyt = vec![(100, 100, 10); 20];
        let heap = Cylinders::new(heap);
        assert!((0.0..=1.0).contains(&heap.score(&finger)));
    }

    #[test]
    fn angle_differences_wrap_around() {
        assert!((angle_difference(0.1, 2.0 * PI - 0.1) - 0.2).abs() < 1e-5);
        assert!((angle_difference(2.0 * PI - 0.1, 0.1) + 0.2).abs() < 1e-5);
        assert!(angle_difference(PI, 0.0).abs() <= PI + 1e-6);
    }

    #[test]
    fn the_inline_floor_is_f32_floor() {
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.0,
            -1.0,
            -1.5,
            2.999_999_8,
            -2.999_999_8,
            8_388_607.5,
            -8_388_607.5,
            8_388_608.0,
            -8_388_609.0,
            1e30,
            -1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
        ];
        values.extend((-4000..4000).map(|i| i as f32 * 0.013_7));
        for q in values {
            assert_eq!(floor(q).to_bits(), q.floor().to_bits(), "floor({q})");
        }
        assert!(floor(f32::NAN).is_nan());
    }

    /// The local similarity as first written: every cell's word counted, four counts a word.
    fn cylinder_similarity_by_all_words(
        a: &Cylinder,
        b: &Cylinder,
        theta_a: f32,
        theta_b: f32,
        min_common: u32,
    ) -> f32 {
        if angle_difference(theta_a, theta_b).abs() > MAX_DIRECTION_DIFFERENCE {
            return 0.0;
        }
        let (mut common, mut na, mut nb, mut nd) = (0u32, 0u32, 0u32, 0u32);
        for w in 0..WORDS {
            let mask = a.valid[w] & b.valid[w];
            let (x, y) = (a.bits[w] & mask, b.bits[w] & mask);
            common += mask.count_ones();
            na += x.count_ones();
            nb += y.count_ones();
            nd += (x ^ y).count_ones();
        }
        if common < min_common {
            return 0.0;
        }
        let norms = (na as f32).sqrt() + (nb as f32).sqrt();
        if norms == 0.0 {
            return 0.0;
        }
        1.0 - (nd as f32).sqrt() / norms
    }

    #[test]
    fn local_similarities_counted_on_the_base_equal_the_full_count() {
        let min_common = (MIN_COMMON_SHARE * (cells_in_circle() * ND) as f32).ceil() as u32;
        let mut compared = 0;
        let mut nonzero = 0;
        for seed in 1..6u64 {
            let t = random_template(seed, 40);
            let a = Cylinders::new(t.clone());
            // The same finger moved (most pairs share cells) and a stranger (many do not).
            for other in [
                moved(&t, 12.0, 15.0, -10.0),
                random_template(seed + 100, 35),
            ] {
                let b = Cylinders::new(other);
                for ca in &a.cylinders {
                    for cb in &b.cylinders {
                        let (ta, tb) = (a.points[ca.minutia].theta, b.points[cb.minutia].theta);
                        let fast = cylinder_similarity(ca, cb, ta, tb, min_common);
                        let full = cylinder_similarity_by_all_words(ca, cb, ta, tb, min_common);
                        assert_eq!(fast.to_bits(), full.to_bits());
                        compared += 1;
                        nonzero += usize::from(fast > 0.0);
                    }
                }
            }
        }
        assert!(compared > 10_000, "{compared} pairs compared");
        assert!(nonzero > 1_000, "{nonzero} pairs similar");
    }

    #[test]
    fn a_probe_scores_each_template_as_it_would_alone() {
        // The probe's geometry table is filled by its first comparison and shared by the
        // rest: each score must be the one a fresh probe gives that template alone.
        let finger = random_template(7, 45);
        let others: Vec<Cylinders> = [
            moved(&finger, -8.0, 5.0, 12.0),
            random_template(8, 30),
            moved(&finger, 20.0, -15.0, 0.0),
            random_template(9, 60),
        ]
        .into_iter()
        .map(Cylinders::new)
        .collect();
        let shared = Cylinders::new(finger.clone());
        let scores: Vec<f32> = others.iter().map(|o| shared.score(o)).collect();
        for (other, score) in others.iter().zip(&scores) {
            let alone = Cylinders::new(finger.clone()).score(other);
            assert_eq!(score.to_bits(), alone.to_bits());
        }
        assert!(scores[0] > 0.5 && scores[2] > 0.3, "{scores:?}");
        assert!(scores[1] < 0.2 && scores[3] < 0.2, "{scores:?}");
    }

    #[test]
    fn local_keys_sort_by_similarity_then_row_and_column() {
        let similarities = [1.0, 0.75, 0.5, 0.25, 1e-3, f32::MIN_POSITIVE, 1e-40];
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut next = move |m: usize| next(m as u64) as usize;
        let mut entries: Vec<(f32, usize, usize)> = (0..5_000)
            .map(|_| {
                let s = similarities[next(similarities.len())];
                let (r, c) = if next(10) == 0 {
                    (MAX_POINTS - 1 - next(3), MAX_POINTS - 1 - next(3))
                } else {
                    (next(150), next(150))
                };
                (s, r, c)
            })
            .collect();
        let mut keys: Vec<u64> = entries
            .iter()
            .map(|&(s, r, c)| local_key(s, r, c))
            .collect();
        entries.sort_by(|x, y| y.0.total_cmp(&x.0).then((x.1, x.2).cmp(&(y.1, y.2))));
        keys.sort_unstable();
        let decoded: Vec<(f32, usize, usize)> = keys.into_iter().map(from_local_key).collect();
        assert_eq!(decoded, entries);
    }
}
