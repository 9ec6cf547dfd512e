//! Contact sheets: a grid of scans in one PNG, so a person can see what the network sees.

use image::{imageops, GrayImage, Luma};

/// Lays rows of images out on a light grey grid; every cell takes the size of the largest.
pub fn contact_sheet(rows: &[Vec<GrayImage>]) -> GrayImage {
    const GAP: u32 = 6;
    let cell_w = rows.iter().flatten().map(|i| i.width()).max().unwrap_or(1);
    let cell_h = rows.iter().flatten().map(|i| i.height()).max().unwrap_or(1);
    let cols = rows.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32;
    let n_rows = rows.len().max(1) as u32;
    let mut sheet = GrayImage::from_pixel(
        GAP + cols * (cell_w + GAP),
        GAP + n_rows * (cell_h + GAP),
        Luma([160]),
    );
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let x = GAP + c as u32 * (cell_w + GAP) + (cell_w - img.width()) / 2;
            let y = GAP + r as u32 * (cell_h + GAP) + (cell_h - img.height()) / 2;
            imageops::replace(&mut sheet, img, i64::from(x), i64::from(y));
        }
    }
    sheet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_placed_on_the_grid() {
        let black = GrayImage::from_pixel(10, 10, Luma([0]));
        let sheet = contact_sheet(&[vec![black.clone(), black.clone()], vec![black]]);
        assert_eq!(sheet.dimensions(), (6 + 2 * 16, 6 + 2 * 16));
        assert_eq!(sheet.get_pixel(6, 6).0[0], 0);
        assert_eq!(sheet.get_pixel(22, 6).0[0], 0);
        assert_eq!(
            sheet.get_pixel(22, 22).0[0],
            160,
            "second row has one image"
        );
    }
}
