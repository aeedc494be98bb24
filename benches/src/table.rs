//! Plain-text tables for the reports: the first column left-aligned, the
//! others right-aligned, columns two spaces apart.

/// Renders `header` and `rows` as aligned text, one line each.
pub fn render(header: &[String], rows: &[Vec<String>]) -> String {
    let ncols = header.len();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let cells: Vec<String> = (0..ncols)
            .map(|i| {
                let cell = row.get(i).map_or("", String::as_str);
                if i == 0 {
                    format!("{cell:<w$}", w = widths[i])
                } else {
                    format!("{cell:>w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let h = vec!["case".to_string(), "iomap".to_string()];
        let rows = vec![vec!["write_u1k".to_string(), "0.1".to_string()]];
        assert_eq!(render(&h, &rows), "case       iomap\nwrite_u1k    0.1\n");
    }
}
