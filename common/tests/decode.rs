//! Every format a sensor or database produces decodes to the same grey pixels, and every kind
//! of bad input gets its own typed error rather than a panic.

use std::io::Cursor;

use anyhow::Result;
use fingerprint_common::{decode_raw, decode_scan, read_scan, ScanError, ScanLimits};
use image::{DynamicImage, GrayImage, ImageBuffer, ImageFormat, Luma, Rgb, RgbImage};

/// A 37x23 grey gradient: odd sizes catch row-stride mistakes.
fn sample() -> GrayImage {
    GrayImage::from_fn(37, 23, |x, y| Luma([((x * 7 + y * 3) % 256) as u8]))
}

fn encode(img: DynamicImage, format: ImageFormat) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), format)?;
    Ok(bytes)
}

fn limits() -> ScanLimits {
    ScanLimits::default()
}

#[test]
fn lossless_grey_formats_decode_exactly() -> Result<()> {
    let img = sample();
    for format in [
        ImageFormat::Png,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
        ImageFormat::Pnm,
    ] {
        let bytes = encode(DynamicImage::ImageLuma8(img.clone()), format)?;
        let decoded = decode_scan(&bytes, &limits())?;
        assert_eq!(decoded, img, "{format:?}");
    }
    Ok(())
}

#[test]
fn sixteen_bit_tiff_is_scaled_to_eight_bits() -> Result<()> {
    let img16: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_fn(37, 23, |x, y| {
        Luma([(((x * 7 + y * 3) % 256) * 257) as u16])
    });
    let bytes = encode(DynamicImage::ImageLuma16(img16), ImageFormat::Tiff)?;
    assert_eq!(decode_scan(&bytes, &limits())?, sample());
    Ok(())
}

#[test]
fn jpeg_decodes_close_to_the_original() -> Result<()> {
    let img = GrayImage::from_fn(64, 48, |x, _| Luma([if x < 32 { 40 } else { 200 }]));
    let bytes = encode(DynamicImage::ImageLuma8(img.clone()), ImageFormat::Jpeg)?;
    let decoded = decode_scan(&bytes, &limits())?;
    assert_eq!(decoded.dimensions(), (64, 48));
    let err: f64 = decoded
        .pixels()
        .zip(img.pixels())
        .map(|(a, b)| (a.0[0] as f64 - b.0[0] as f64).abs())
        .sum::<f64>()
        / (64.0 * 48.0);
    assert!(err < 4.0, "mean abs error {err}");
    Ok(())
}

#[test]
fn colour_images_become_grey() -> Result<()> {
    let rgb = RgbImage::from_fn(8, 8, |x, _| {
        if x < 4 {
            Rgb([255, 255, 255])
        } else {
            Rgb([0, 0, 0])
        }
    });
    let bytes = encode(DynamicImage::ImageRgb8(rgb), ImageFormat::Png)?;
    let grey = decode_scan(&bytes, &limits())?;
    assert_eq!(grey.get_pixel(0, 0).0[0], 255);
    assert_eq!(grey.get_pixel(7, 0).0[0], 0);
    Ok(())
}

#[test]
fn palette_png_becomes_grey() -> Result<()> {
    // Two palette entries, as the toy dataset's scans are stored.
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, 4, 2);
        encoder.set_color(png::ColorType::Indexed);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_palette(vec![0, 0, 0, 255, 255, 255]);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&[0, 1, 0, 1, 1, 1, 0, 0])?;
    }
    let grey = decode_scan(&bytes, &limits())?;
    assert_eq!(grey.as_raw(), &vec![0, 255, 0, 255, 255, 255, 0, 0]);
    Ok(())
}

#[test]
fn raw_buffers_are_wrapped_and_checked() -> Result<()> {
    let img = sample();
    assert_eq!(decode_raw(img.as_raw(), 37, 23, &limits())?, img);
    let err = decode_raw(img.as_raw(), 36, 23, &limits()).expect_err("wrong size");
    assert!(
        matches!(
            err,
            ScanError::RawSize {
                got: 851,
                width: 36,
                height: 23
            }
        ),
        "{err}"
    );
    assert!(matches!(
        decode_raw(&[], 1, 1, &limits()),
        Err(ScanError::Empty)
    ));
    let huge = decode_raw(&[0; 16], 100_000, 100_000, &limits()).expect_err("huge");
    assert!(matches!(huge, ScanError::TooManyPixels { .. }), "{huge}");
    Ok(())
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header declares `width`x`height` pixels, with valid CRCs, and almost no data.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit grey, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    // A few bytes of compressed data, as a bomb would carry (there only far more of it).
    let idat = b"IDAT\x78\x9c\x63\x00\x00\x00\x01\x00\x01";
    png.extend(((idat.len() - 4) as u32).to_be_bytes());
    png.extend(idat);
    png.extend(crc32(idat).to_be_bytes());
    png.extend([0, 0, 0, 0]);
    png.extend(b"IEND");
    png.extend(crc32(b"IEND").to_be_bytes());
    png
}

#[test]
fn bad_input_gets_the_right_error() -> Result<()> {
    let good = encode(DynamicImage::ImageLuma8(sample()), ImageFormat::Png)?;
    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();

    let kind = |bytes: &[u8]| decode_scan(bytes, &limits()).expect_err("must fail");
    assert!(matches!(kind(&[]), ScanError::Empty));
    assert!(
        matches!(kind(&good[..good.len() / 2]), ScanError::Corrupt(_)),
        "truncated"
    );
    assert!(
        matches!(kind(&random), ScanError::Unsupported(_)),
        "random bytes"
    );
    assert!(matches!(kind(&gif), ScanError::Unsupported(_)), "gif");
    match kind(&png_declaring(100_000, 100_000)) {
        ScanError::TooManyPixels {
            width: 100_000,
            height: 100_000,
            limit: 4096,
        } => {}
        other => panic!("decompression bomb: {other}"),
    }
    // A small declared size with no pixel data behind it: corrupt, not a panic.
    assert!(matches!(
        kind(&png_declaring(10, 10)),
        ScanError::Corrupt(_)
    ));
    let tight = ScanLimits {
        max_bytes: 100,
        ..limits()
    };
    assert!(matches!(
        decode_scan(&good, &tight),
        Err(ScanError::TooLarge { limit: 100 })
    ));
    Ok(())
}

#[test]
fn file_errors_name_the_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("101_3.tif");
    std::fs::write(&path, b"not an image")?;
    let err = read_scan(&path, &limits()).expect_err("must fail");
    assert!(err.to_string().contains("101_3.tif"), "{err}");
    assert!(matches!(err.kind(), ScanError::Unsupported(_)));
    let missing = read_scan(&dir.path().join("absent.png"), &limits()).expect_err("missing");
    assert!(matches!(missing, ScanError::Io { .. }) && missing.to_string().contains("absent.png"));
    let big = dir.path().join("big.png");
    std::fs::write(&big, vec![0u8; 2000])?;
    let tight = ScanLimits {
        max_bytes: 1000,
        ..limits()
    };
    assert!(matches!(
        read_scan(&big, &tight).expect_err("big").kind(),
        ScanError::TooLarge { .. }
    ));
    Ok(())
}

/// A folder of scans is listed by extension: every extension listed is a format that reads
/// back as a scan, and notes, hidden files and names without a scan extension are left out.
#[test]
fn scan_file_names_are_the_formats_that_decode() -> Result<()> {
    use fingerprint_common::scan::{is_scan_file_name, SCAN_EXTENSIONS};
    let dir = tempfile::tempdir()?;
    for extension in SCAN_EXTENSIONS {
        let format = ImageFormat::from_extension(extension)
            .ok_or_else(|| anyhow::anyhow!("{extension}: no image format"))?;
        let path = dir
            .path()
            .join(format!("101_1.{}", extension.to_uppercase()));
        std::fs::write(&path, encode(DynamicImage::ImageLuma8(sample()), format)?)?;
        assert!(is_scan_file_name(&path), "{}", path.display());
        let scan = read_scan(&path, &limits())?;
        assert_eq!(scan.dimensions(), sample().dimensions(), "{extension}");
    }
    for name in [
        "notes.txt",
        "101_1",
        ".101_1.png",
        "101_1.png.part",
        "SHA256SUMS",
    ] {
        assert!(!is_scan_file_name(std::path::Path::new(name)), "{name}");
    }
    Ok(())
}
