//! Datasets on disk, the seeded split, and the preprocessing shared with the daemon.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use fingerprint_common::{Preprocessing, ScanLimits};
use image::{GrayImage, Luma};
use trainer::dataset::{Dataset, DatasetError, Layout, Split, SplitConfig};
use trainer::loader::{make_batch, BatchMode, ImageCache};

fn write_scan(path: &Path, shade: u8) -> Result<()> {
    std::fs::create_dir_all(path.parent().expect("parent"))?;
    GrayImage::from_fn(30, 40, |x, y| Luma([shade.wrapping_add((x * 3 + y) as u8)])).save(path)?;
    Ok(())
}

/// FVC naming: `<finger>_<impression>.tif`, 8 impressions of `fingers` fingers, plus files
/// that must be ignored.
fn fvc_folder(root: &Path, fingers: usize) -> Result<PathBuf> {
    for f in 0..fingers {
        for i in 1..=8 {
            write_scan(
                &root.join(format!("{}_{i}.tif", 101 + f)),
                (f * 10 + i) as u8,
            )?;
        }
    }
    std::fs::write(root.join("SHA256SUMS"), "not a scan")?;
    write_scan(&root.join(".101_9.png"), 0)?;
    Ok(root.to_path_buf())
}

#[test]
fn fvc_flat_folder_is_labelled_by_file_name() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = fvc_folder(&dir.path().join("DB1_B"), 10)?;
    let ds = Dataset::load(&[root], &Layout::Auto)?;
    assert_eq!(ds.identities.len(), 10);
    assert_eq!(ds.identities[0], "101");
    assert_eq!(ds.samples.len(), 80, "dot-files and non-images are ignored");
    assert!(ds.by_identity().iter().all(|g| g.len() == 8));
    Ok(())
}

#[test]
fn folder_per_identity_and_several_roots_keep_identities_apart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let a = fvc_folder(&dir.path().join("a/DB1_B"), 3)?;
    let b = fvc_folder(&dir.path().join("b/DB1_B"), 2)?;
    let people = dir.path().join("people");
    for (who, n) in [("alice", 6), ("bob", 7)] {
        for i in 0..n {
            write_scan(&people.join(who).join(format!("scan{i}.png")), i as u8)?;
        }
    }
    let ds = Dataset::load(&[a, b, people], &Layout::Auto)?;
    let names: Vec<&str> = ds.identities.iter().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "DB1_B#2/101",
            "DB1_B#2/102",
            "DB1_B/101",
            "DB1_B/102",
            "DB1_B/103",
            "people/alice",
            "people/bob"
        ]
    );
    assert_eq!(ds.samples.len(), 5 * 8 + 13);
    Ok(())
}

#[test]
fn a_custom_pattern_labels_files_and_a_bad_one_is_a_clear_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("polyu");
    for f in ["1", "2"] {
        for i in 0..3 {
            write_scan(&root.join(format!("finger-{f}-{i}.bmp")), 0)?;
        }
    }
    let layout = Layout::Flat {
        pattern: r"^finger-(?P<id>\d+)-\d+\.bmp$".into(),
    };
    assert_eq!(
        Dataset::load(std::slice::from_ref(&root), &layout)?.identities,
        ["1", "2"]
    );
    let no_group = Layout::Flat {
        pattern: r"^finger".into(),
    };
    assert!(matches!(
        Dataset::load(std::slice::from_ref(&root), &no_group),
        Err(DatasetError::Pattern(_))
    ));
    let fvc = Dataset::load(&[root], &Layout::Auto).expect_err("names do not match FVC's");
    assert!(matches!(fvc, DatasetError::Unlabelled { .. }), "{fvc}");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty)?;
    assert!(matches!(
        Dataset::load(&[empty], &Layout::Auto),
        Err(DatasetError::Empty(_))
    ));
    Ok(())
}

#[test]
fn split_is_seeded_disjoint_and_has_the_requested_counts() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ds = Dataset::load(&[fvc_folder(&dir.path().join("DB"), 10)?], &Layout::Auto)?;
    let config = SplitConfig {
        seed: 42,
        ..SplitConfig::default()
    };
    let a = Split::new(&ds, config.clone())?;
    let b = Split::new(&ds, config)?;
    assert_eq!(a, b, "same seed, same split");
    let c = Split::new(
        &ds,
        SplitConfig {
            seed: 43,
            ..SplitConfig::default()
        },
    )?;
    assert_ne!(a.test, c.test, "another seed, another split");

    assert_eq!((a.train.len(), a.val.len(), a.test.len()), (30, 10, 40));
    for identity in 0..10 {
        let count = |part: &[trainer::dataset::Sample]| {
            part.iter().filter(|s| s.identity == identity).count()
        };
        assert_eq!((count(&a.train), count(&a.val), count(&a.test)), (3, 1, 4));
    }
    let paths = |part: &[trainer::dataset::Sample]| {
        part.iter().map(|s| s.path.clone()).collect::<BTreeSet<_>>()
    };
    let (train, val, test) = (paths(&a.train), paths(&a.val), paths(&a.test));
    assert!(train.is_disjoint(&val) && train.is_disjoint(&test) && val.is_disjoint(&test));
    assert_eq!(train.len() + val.len() + test.len(), 80);

    let file = dir.path().join("split.json");
    a.save(&file)?;
    assert_eq!(Split::load(&file)?, a);
    Ok(())
}

#[test]
fn identities_with_too_few_scans_fail_or_are_skipped_as_asked() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("people");
    for (who, n) in [("alice", 6), ("bob", 3)] {
        for i in 0..n {
            write_scan(&root.join(who).join(format!("{i}.png")), i as u8)?;
        }
    }
    let ds = Dataset::load(&[root], &Layout::Folders)?;
    let err = Split::new(&ds, SplitConfig::default()).expect_err("bob has 3 scans, 6 needed");
    assert!(
        err.to_string().contains("bob") && err.to_string().contains("--skip-small"),
        "{err}"
    );
    let split = Split::new(
        &ds,
        SplitConfig {
            skip_small: true,
            impostor_identities: 0,
            ..SplitConfig::default()
        },
    )?;
    assert_eq!(split.identities, ["alice"]);
    assert_eq!(split.skipped, ["bob"]);
    Ok(())
}

#[test]
fn trainer_and_daemon_preprocess_a_file_identically() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("7_1.png");
    // A non-square scan, so the resize does real work.
    GrayImage::from_fn(300, 410, |x, y| Luma([((x * x + 3 * y) % 251) as u8])).save(&path)?;
    let ridge_scale = Preprocessing {
        resize: fingerprint_common::ResizePolicy::RidgeScale { period: 4.5 },
        ..Preprocessing::imagenet(64)
    };
    for (pre, sensor_dpi) in [
        (Preprocessing::imagenet(224), None),
        (
            Preprocessing {
                resize: fingerprint_common::ResizePolicy::Pad,
                ..Preprocessing::imagenet(96)
            },
            None,
        ),
        // The sensor's resolution unknown (the scan's period measured), then known.
        (ridge_scale.clone(), None),
        (ridge_scale, Some(569)),
    ] {
        let limits = ScanLimits::default();
        let sample = trainer::dataset::Sample {
            path: path.clone(),
            identity: 0,
        };
        let cache = ImageCache::load(&[sample], &pre, sensor_dpi, &limits, || {})?;
        let (trainer_input, _) = make_batch(&cache, &[(0, 0)], &pre, BatchMode::Plain);
        let daemon_input = fingerprintd::input::encoded_scan_input(
            &std::fs::read(&path)?,
            &pre,
            sensor_dpi,
            &limits,
        )?;
        assert_eq!(trainer_input.len(), pre.len());
        assert!(
            trainer_input == daemon_input,
            "the two paths differ for {pre:?} at {sensor_dpi:?} dpi"
        );
    }
    Ok(())
}

#[test]
fn impostor_fingers_are_held_out_of_training_entirely() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ds = Dataset::load(&[fvc_folder(&dir.path().join("DB"), 10)?], &Layout::Auto)?;
    let config = |seed| SplitConfig {
        seed,
        impostor_identities: 2,
        ..SplitConfig::default()
    };
    let a = Split::new(&ds, config(7))?;
    assert_eq!(a, Split::new(&ds, config(7))?, "seeded");
    assert_eq!(a.impostor_names.len(), 2);
    assert_eq!(a.identities.len(), 8);
    assert_eq!(a.impostors.len(), 16, "all 8 scans of each impostor");
    for name in &a.impostor_names {
        assert!(!a.identities.contains(name), "{name} trained on");
    }
    let impostor_paths: BTreeSet<_> = a.impostors.iter().map(|s| &s.path).collect();
    for s in a.train.iter().chain(&a.val).chain(&a.test) {
        assert!(!impostor_paths.contains(&s.path));
    }
    let chosen_by_seed = (0..20).any(|seed| {
        Split::new(&ds, config(seed)).is_ok_and(|s| s.impostor_names != a.impostor_names)
    });
    assert!(chosen_by_seed, "the seed chooses the impostors");
    // Splits written before impostors existed still read.
    let path = dir.path().join("split.json");
    a.save(&path)?;
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    if let Some(o) = json.as_object_mut() {
        o.remove("impostors");
        o.remove("impostor_names");
    }
    if let Some(c) = json.get_mut("config").and_then(|c| c.as_object_mut()) {
        c.remove("impostor_identities");
    }
    std::fs::write(&path, serde_json::to_vec(&json)?)?;
    let old = Split::load(&path)?;
    assert!(old.impostors.is_empty() && old.config.impostor_identities == 0);
    Ok(())
}

#[test]
fn background_scans_are_one_more_class_trained_on_and_never_enrolled_or_tested() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ds = Dataset::load(&[fvc_folder(&dir.path().join("DB"), 4)?], &Layout::Auto)?;
    let split = Split::new(&ds, SplitConfig::default())?;
    assert_eq!(split.background(), None);
    let others: Vec<PathBuf> = (0..5)
        .map(|i| dir.path().join(format!("others/{i}.png")))
        .collect();
    for (i, path) in others.iter().enumerate() {
        write_scan(path, i as u8)?;
    }
    let with = split.clone().with_background(others.clone())?;
    let background = with.background().expect("a background class");
    assert_eq!(background, 4);
    assert_eq!(
        with.identities[background],
        fingerprint_common::BACKGROUND_LABEL
    );
    assert_eq!(with.train.len(), split.train.len() + 5);
    assert_eq!(
        (with.val.clone(), with.test.clone()),
        (split.val.clone(), split.test.clone())
    );
    assert_eq!(with.enrollable_train(), split.train);
    assert!(matches!(
        split.clone().with_background(Vec::new()),
        Err(DatasetError::EmptyBackground)
    ));
    assert!(matches!(
        with.with_background(others),
        Err(DatasetError::ReservedName)
    ));
    Ok(())
}
