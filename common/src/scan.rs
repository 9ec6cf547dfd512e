//! Decoding fingerprint scans: PNG, BMP, TIFF (8- and 16-bit grey), JPEG, PGM, and raw 8-bit
//! grey buffers. Colour and palette images become grey.
//!
//! Scans may come from the network, so every byte is untrusted: the size is capped before
//! reading, the pixel dimensions are read from the header and checked before any pixel is
//! decoded (decompression bombs), and a decoder that fails, or panics, yields a typed error.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use image::{GrayImage, ImageFormat, ImageReader};

/// Bounds on what a scan may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanLimits {
    /// Largest encoded scan, in bytes.
    pub max_bytes: usize,
    /// Largest width and height, in pixels, checked before decoding.
    pub max_side: u32,
}

impl ScanLimits {
    /// Largest MQTT scan message that can hold a scan of `max_bytes`: a JSON message carries
    /// the image in base64 (4/3 of its size) beside a few small fields.
    pub fn largest_message(&self) -> usize {
        self.max_bytes.saturating_mul(4) / 3 + 4096
    }
}

impl Default for ScanLimits {
    /// 16 MiB and 4096 px a side: far above any single-finger sensor (a 1000 dpi slap
    /// scanner gives about 1600x1500), far below what would hurt a door controller.
    fn default() -> Self {
        Self {
            max_bytes: 16 << 20,
            max_side: 4096,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("empty scan (0 bytes)")]
    Empty,
    #[error("scan is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("scan declares {width}x{height} pixels, over the limit of {limit} a side")]
    TooManyPixels { width: u32, height: u32, limit: u32 },
    #[error("decoding would exceed a memory limit: {0}")]
    DecoderLimit(String),
    #[error("unsupported image format: {0} (expected PNG, BMP, TIFF, JPEG or PGM)")]
    Unsupported(String),
    #[error("corrupt or truncated image: {0}")]
    Corrupt(String),
    #[error("raw scan of {got} bytes does not hold {width}x{height} 8-bit pixels")]
    RawSize { got: usize, width: u32, height: u32 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<ScanError>,
    },
}

impl ScanError {
    /// The error without the file it concerns (for matching on the kind of failure).
    pub fn kind(&self) -> &ScanError {
        match self {
            ScanError::InFile { source, .. } => source.kind(),
            other => other,
        }
    }
}

const SUPPORTED: [ImageFormat; 5] = [
    ImageFormat::Png,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
    ImageFormat::Jpeg,
    ImageFormat::Pnm,
];

/// Decodes an encoded scan (format found from its content) into 8-bit grey.
pub fn decode_scan(bytes: &[u8], limits: &ScanLimits) -> Result<GrayImage, ScanError> {
    if bytes.is_empty() {
        return Err(ScanError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(ScanError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let format = image::guess_format(bytes)
        .map_err(|_| ScanError::Unsupported("unrecognised content".into()))?;
    if !SUPPORTED.contains(&format) {
        return Err(ScanError::Unsupported(format!("{format:?}")));
    }
    let reader = |bytes| {
        let mut r = ImageReader::with_format(Cursor::new(bytes), format);
        let mut l = image::Limits::default();
        l.max_image_width = Some(limits.max_side);
        l.max_image_height = Some(limits.max_side);
        // Grey or RGBA at 16 bits per channel at most.
        l.max_alloc = Some(u64::from(limits.max_side).pow(2) * 8);
        r.limits(l);
        r
    };
    let decoded = std::panic::catch_unwind(|| {
        // The header alone, without limits, so an oversized scan is reported with its size.
        let mut header = ImageReader::with_format(Cursor::new(bytes), format);
        header.no_limits();
        let (width, height) = header.into_dimensions().map_err(classify)?;
        if width > limits.max_side || height > limits.max_side {
            return Err(ScanError::TooManyPixels {
                width,
                height,
                limit: limits.max_side,
            });
        }
        if width == 0 || height == 0 {
            return Err(ScanError::Corrupt(format!("{width}x{height} image")));
        }
        reader(bytes).decode().map_err(classify)
    })
    .map_err(|_| ScanError::Corrupt("the decoder failed on malformed data".into()))??;
    Ok(decoded.into_luma8())
}

fn classify(e: image::ImageError) -> ScanError {
    match e {
        image::ImageError::Unsupported(u) => ScanError::Unsupported(u.to_string()),
        image::ImageError::Limits(l) => ScanError::DecoderLimit(l.to_string()),
        other => ScanError::Corrupt(other.to_string()),
    }
}

/// Wraps a raw 8-bit grey buffer, row-major, as sensors often hand it over.
pub fn decode_raw(
    bytes: &[u8],
    width: u32,
    height: u32,
    limits: &ScanLimits,
) -> Result<GrayImage, ScanError> {
    if bytes.is_empty() {
        return Err(ScanError::Empty);
    }
    if width > limits.max_side || height > limits.max_side {
        return Err(ScanError::TooManyPixels {
            width,
            height,
            limit: limits.max_side,
        });
    }
    let raw_size = || ScanError::RawSize {
        got: bytes.len(),
        width,
        height,
    };
    if width == 0 || height == 0 || bytes.len() != width as usize * height as usize {
        return Err(raw_size());
    }
    GrayImage::from_raw(width, height, bytes.to_vec()).ok_or_else(raw_size)
}

/// Reads at most `limits.max_bytes` of a file, without reading further than that.
pub fn read_limited(path: &Path, limits: &ScanLimits) -> Result<Vec<u8>, ScanError> {
    let io = |source| ScanError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limits.max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > limits.max_bytes {
        return Err(ScanError::InFile {
            path: path.to_path_buf(),
            source: Box::new(ScanError::TooLarge {
                limit: limits.max_bytes,
            }),
        });
    }
    Ok(bytes)
}

/// File extensions of the scan formats [`decode_scan`] reads (lowercase).
pub const SCAN_EXTENSIONS: [&str; 8] = ["png", "bmp", "tif", "tiff", "jpg", "jpeg", "pgm", "pnm"];

/// Whether `path` names a scan by its extension (any case) and is not a hidden file: what a
/// folder of scans is listed by, so that notes, checksums or editor files beside them are
/// not read as scans.
pub fn is_scan_file_name(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_none_or(|n| n.starts_with('.'));
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    !hidden && extension.is_some_and(|e| SCAN_EXTENSIONS.contains(&e.as_str()))
}

/// Reads and decodes a scan file; errors name the file.
pub fn read_scan(path: &Path, limits: &ScanLimits) -> Result<GrayImage, ScanError> {
    let bytes = read_limited(path, limits)?;
    decode_scan(&bytes, limits).map_err(|e| ScanError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}
