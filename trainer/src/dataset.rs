//! Fingerprint datasets on disk, and the seeded train/validation/test split of the method.
//!
//! Two layouts are read:
//! - a folder per identity: `root/<identity>/*.png`;
//! - flat folders whose file names carry the label, such as FVC's and PolyU's
//!   `<finger>_<impression>.tif`, parsed by a regular expression with a named group `id`.
//!
//! Several roots can be combined; an identity is then named `<root>/<id>` so that finger
//! `101` of `DB1_B` and finger `101` of `DB2_B` stay two identities.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use regex::Regex;
use serde::{Deserialize, Serialize};

use fingerprint_common::scan::{is_scan_file_name, SCAN_EXTENSIONS};

/// File name pattern of FVC and PolyU databases: `<finger>_<impression>.<ext>`.
pub const FVC_PATTERN: &str = r"^(?P<id>[^_]+)_[^_.]+\.[A-Za-z0-9]+$";

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no scans found (looked for {exts} files)", exts = SCAN_EXTENSIONS.join(", "))]
    Empty(PathBuf),
    #[error("invalid label pattern: {0}")]
    Pattern(String),
    #[error("{path}: file name does not match the label pattern {pattern}")]
    Unlabelled { path: PathBuf, pattern: String },
    #[error("{count} identities have fewer than the {needed} scans the split needs (test + validation + 1 to train): {examples}; pass --skip-small to leave them out")]
    TooFewScans {
        count: usize,
        needed: usize,
        examples: String,
    },
    #[error("no identity has enough scans for the split")]
    NothingLeft,
    #[error(
        "an identity is named '{}', the name of the background class",
        fingerprint_common::BACKGROUND_LABEL
    )]
    ReservedName,
    #[error("the background has no scans")]
    EmptyBackground,
}

/// How the files under a root are labelled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Folders per identity if the root holds sub-folders, else flat with [`FVC_PATTERN`].
    Auto,
    /// `root/<identity>/<any name>`.
    Folders,
    /// `root/<name>`, the identity taken from the name by a pattern with a group `id`.
    Flat { pattern: String },
}

/// One labelled scan.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sample {
    pub path: PathBuf,
    /// Index into [`Dataset::identities`].
    pub identity: usize,
}

/// Labelled scans and the names of their identities (sorted).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dataset {
    pub identities: Vec<String>,
    pub samples: Vec<Sample>,
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DatasetError> {
    let io = |source| DatasetError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    entries.sort();
    Ok(entries)
}

/// (identity within the root, path) of every scan under `root`.
fn scan_root(root: &Path, layout: &Layout) -> Result<Vec<(String, PathBuf)>, DatasetError> {
    let entries = read_dir_sorted(root)?;
    let layout = match layout {
        Layout::Auto if entries.iter().any(|p| p.is_dir()) => Layout::Folders,
        Layout::Auto => Layout::Flat {
            pattern: FVC_PATTERN.to_string(),
        },
        other => other.clone(),
    };
    let mut found = Vec::new();
    match &layout {
        Layout::Folders => {
            for dir in entries.iter().filter(|p| p.is_dir()) {
                let Some(name) = dir.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                for file in read_dir_sorted(dir)?
                    .into_iter()
                    .filter(|p| is_scan_file_name(p))
                {
                    found.push((name.to_string(), file));
                }
            }
        }
        Layout::Flat { pattern } => {
            let re = Regex::new(pattern).map_err(|e| DatasetError::Pattern(e.to_string()))?;
            if re.capture_names().all(|n| n != Some("id")) {
                return Err(DatasetError::Pattern(format!(
                    "{pattern} has no named group `id`"
                )));
            }
            for file in entries
                .into_iter()
                .filter(|p| p.is_file() && is_scan_file_name(p))
            {
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let id = re
                    .captures(name)
                    .and_then(|c| c.name("id"))
                    .ok_or_else(|| DatasetError::Unlabelled {
                        path: file.clone(),
                        pattern: pattern.clone(),
                    })?;
                found.push((id.as_str().to_string(), file));
            }
        }
        Layout::Auto => unreachable!("resolved above"),
    }
    if found.is_empty() {
        return Err(DatasetError::Empty(root.to_path_buf()));
    }
    Ok(found)
}

/// A short name for each root, unique among them: its folder name, with `#2`, `#3`... added
/// when two roots share one.
fn root_names(roots: &[PathBuf]) -> Vec<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    roots
        .iter()
        .map(|root| {
            let base = root
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("root")
                .to_string();
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                base
            } else {
                format!("{base}#{n}")
            }
        })
        .collect()
}

impl Dataset {
    /// Reads one or more roots. With one root identities keep their plain names; with several
    /// they are prefixed by the root's name.
    pub fn load(roots: &[PathBuf], layout: &Layout) -> Result<Self, DatasetError> {
        let names = root_names(roots);
        let mut by_identity: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for (root, root_name) in roots.iter().zip(&names) {
            for (id, path) in scan_root(root, layout)? {
                let label = if roots.len() == 1 {
                    id
                } else {
                    format!("{root_name}/{id}")
                };
                by_identity.entry(label).or_default().push(path);
            }
        }
        let mut dataset = Dataset::default();
        for (index, (label, paths)) in by_identity.into_iter().enumerate() {
            dataset.identities.push(label);
            dataset.samples.extend(paths.into_iter().map(|path| Sample {
                path,
                identity: index,
            }));
        }
        Ok(dataset)
    }

    /// Scans of each identity, in path order.
    pub fn by_identity(&self) -> Vec<Vec<&Sample>> {
        let mut groups = vec![Vec::new(); self.identities.len()];
        for s in &self.samples {
            groups[s.identity].push(s);
        }
        groups
    }
}

/// How a dataset is split, per identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitConfig {
    /// Scans per identity held out for the final test (the method: 4).
    pub test_per_identity: usize,
    /// Scans per identity held out to choose the model.
    pub val_per_identity: usize,
    pub seed: u64,
    /// Leave out identities with too few scans (with a warning) instead of failing.
    pub skip_small: bool,
    /// Identities held out of training altogether, chosen by the seed: never-enrolled
    /// impostors for calibrating the open-set threshold.
    #[serde(default)]
    pub impostor_identities: usize,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            test_per_identity: 4,
            val_per_identity: 1,
            seed: 0,
            skip_small: false,
            impostor_identities: 0,
        }
    }
}

/// A split of a dataset. Identities are renumbered over those kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub config: SplitConfig,
    pub identities: Vec<String>,
    pub train: Vec<Sample>,
    pub val: Vec<Sample>,
    pub test: Vec<Sample>,
    /// Identities left out for having too few scans.
    pub skipped: Vec<String>,
    /// Held-out impostor identities (names) and all their scans (`identity` indexes
    /// `impostor_names`).
    #[serde(default)]
    pub impostor_names: Vec<String>,
    #[serde(default)]
    pub impostors: Vec<Sample>,
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Split {
    /// Chooses, per identity, `test_per_identity` test scans and `val_per_identity`
    /// validation scans at random; the rest train. Each identity's draw depends only on the
    /// seed and its own name and scans, so adding a finger does not reshuffle the others.
    pub fn new(dataset: &Dataset, config: SplitConfig) -> Result<Self, DatasetError> {
        let needed = config.test_per_identity + config.val_per_identity + 1;
        let groups = dataset.by_identity();
        let small: Vec<&String> = groups
            .iter()
            .zip(&dataset.identities)
            .filter(|(g, _)| g.len() < needed)
            .map(|(_, name)| name)
            .collect();
        if !small.is_empty() && !config.skip_small {
            let examples = small.iter().take(5).map(|s| s.as_str()).collect::<Vec<_>>();
            return Err(DatasetError::TooFewScans {
                count: small.len(),
                needed,
                examples: examples.join(", "),
            });
        }
        let mut split = Split {
            config: config.clone(),
            identities: Vec::new(),
            train: Vec::new(),
            val: Vec::new(),
            test: Vec::new(),
            skipped: small.into_iter().cloned().collect(),
            impostor_names: Vec::new(),
            impostors: Vec::new(),
        };
        // Impostors: the identities first in an order drawn from the seed.
        let mut order: Vec<&String> = dataset.identities.iter().collect();
        order.sort_by_key(|name| {
            (
                fnv1a(name) ^ config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                *name,
            )
        });
        let held_out: Vec<String> = order
            .into_iter()
            .take(config.impostor_identities)
            .cloned()
            .collect();
        for (group, name) in groups.into_iter().zip(&dataset.identities) {
            if held_out.contains(name) {
                let identity = split.impostor_names.len();
                split.impostor_names.push(name.clone());
                split.impostors.extend(group.iter().map(|s| Sample {
                    path: s.path.clone(),
                    identity,
                }));
                continue;
            }
            if group.len() < needed {
                continue;
            }
            let identity = split.identities.len();
            split.identities.push(name.clone());
            let mut paths: Vec<PathBuf> = group.iter().map(|s| s.path.clone()).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ fnv1a(name));
            paths.shuffle(&mut rng);
            let mut take = |n: usize, into: &mut Vec<Sample>| {
                let n = n.min(paths.len());
                let mut part: Vec<Sample> = paths
                    .drain(..n)
                    .map(|path| Sample { path, identity })
                    .collect();
                part.sort();
                into.extend(part);
            };
            take(config.test_per_identity, &mut split.test);
            take(config.val_per_identity, &mut split.val);
            take(usize::MAX, &mut split.train);
        }
        if split.identities.is_empty() {
            return Err(DatasetError::NothingLeft);
        }
        Ok(split)
    }

    /// Adds `scans`, of fingers that are not to be recognised, as one more class trained on
    /// ([`BACKGROUND_LABEL`](fingerprint_common::BACKGROUND_LABEL)); none of them is
    /// validated or tested on, since the split measures how well enrolled fingers are told
    /// apart.
    pub fn with_background(mut self, scans: Vec<PathBuf>) -> Result<Self, DatasetError> {
        if scans.is_empty() {
            return Err(DatasetError::EmptyBackground);
        }
        let label = fingerprint_common::BACKGROUND_LABEL;
        if self
            .identities
            .iter()
            .chain(&self.impostor_names)
            .any(|n| n == label)
        {
            return Err(DatasetError::ReservedName);
        }
        let identity = self.identities.len();
        self.identities.push(label.to_string());
        self.train
            .extend(scans.into_iter().map(|path| Sample { path, identity }));
        Ok(self)
    }

    /// The background class's index, if the split has one.
    pub fn background(&self) -> Option<usize> {
        self.identities
            .iter()
            .position(|n| n == fingerprint_common::BACKGROUND_LABEL)
    }

    /// Training scans of the fingers to be recognised (the background's left out).
    pub fn enrollable_train(&self) -> Vec<Sample> {
        let background = self.background();
        self.train
            .iter()
            .filter(|s| Some(s.identity) != background)
            .cloned()
            .collect()
    }

    /// Writes the split as JSON (`split.json` in a run folder) for reproduction and audit.
    pub fn save(&self, path: &Path) -> Result<(), DatasetError> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| DatasetError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        std::fs::write(path, json).map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<Self, DatasetError> {
        let io = |source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = std::fs::read(path).map_err(io)?;
        serde_json::from_slice(&bytes).map_err(|e| io(e.into()))
    }
}
