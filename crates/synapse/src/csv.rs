//! Synapse tables as CSV, with a header line naming the columns (any order, case ignored):
//!
//! | column | names accepted |
//! |---|---|
//! | synapse ID (optional) | `id`, `synapse_id` |
//! | presynaptic point | `pre_x`,`pre_y`,`pre_z`; `pre_pt_position_x`...; `pre_pt_x`...; or one column `pre_pt_position` / `pre_position` / `pre` holding `[x, y, z]` (CAVE's export) |
//! | postsynaptic point | the same with `post` |
//! | size (optional, default 0) | `size` |
//! | score (optional, default 0) | `score` |
//!
//! Without an ID column, a synapse's ID is `first_id` + its data row number (1, 2, ...).
//! Points are in voxels of the supervoxel volume or in nm ([`Units`]); nm are divided by
//! the voxel size and floored. Empty lines and lines starting with `#` are skipped.
//!
//! Parquet is not read: the `parquet` crate brings arrow and several compression codecs (a
//! large build on the shared machines for one input format), so convert with
//! `pandas.read_parquet(f).to_csv(out, index=False)`.

use std::io::BufRead;

use crate::{Result, Synapse, SynapseError};

/// What the point columns hold.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Units {
    Voxels,
    /// Nanometres, with the voxel size (x, y, z) in nm.
    Nanometers([f64; 3]),
}

#[derive(Clone, Copy, Debug)]
pub struct CsvOptions {
    pub units: Units,
    /// IDs of rows without an ID column: `first_id + row number`.
    pub first_id: u64,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            units: Units::Voxels,
            first_id: 0,
        }
    }
}

enum Point {
    Split([usize; 3]),
    Array(usize),
}

struct Columns {
    id: Option<usize>,
    pre: Point,
    post: Point,
    size: Option<usize>,
    score: Option<usize>,
}

/// Splits a CSV line into fields, honouring double quotes (`""` inside quotes is a quote).
pub fn split_fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn find(names: &[String], candidates: &[&str]) -> Option<usize> {
    candidates
        .iter()
        .find_map(|c| names.iter().position(|n| n == c))
}

fn point_columns(names: &[String], side: &str) -> Result<Point> {
    let split: Vec<Option<usize>> = ["x", "y", "z"]
        .iter()
        .map(|a| {
            let c: Vec<String> = [
                format!("{side}_{a}"),
                format!("{side}_pt_position_{a}"),
                format!("{side}_pt_{a}"),
                format!("{side}_position_{a}"),
            ]
            .to_vec();
            find(names, &c.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .collect();
    if let [Some(x), Some(y), Some(z)] = split[..] {
        return Ok(Point::Split([x, y, z]));
    }
    let array = [
        format!("{side}_pt_position"),
        format!("{side}_position"),
        side.to_string(),
    ];
    if let Some(i) = find(names, &array.iter().map(String::as_str).collect::<Vec<_>>()) {
        return Ok(Point::Array(i));
    }
    Err(SynapseError::InvalidInput(format!(
        "the header names no {side}synaptic point: expected {side}_x,{side}_y,{side}_z (or \
         {side}_pt_position_x.., or one {side}_pt_position column of [x, y, z]); found {names:?}"
    )))
}

impl Columns {
    fn from_header(line: &str) -> Result<Columns> {
        let names: Vec<String> = split_fields(line)
            .iter()
            .map(|s| s.trim().to_ascii_lowercase())
            .collect();
        Ok(Columns {
            id: find(&names, &["id", "synapse_id"]),
            pre: point_columns(&names, "pre")?,
            post: point_columns(&names, "post")?,
            size: find(&names, &["size"]),
            score: find(&names, &["score"]),
        })
    }
}

/// Reads synapses from CSV text, a batch at a time.
pub struct CsvReader<R> {
    lines: std::io::Lines<R>,
    columns: Option<Columns>,
    opts: CsvOptions,
    line_no: usize,
    row_no: u64,
}

impl<R: BufRead> CsvReader<R> {
    pub fn new(input: R, opts: CsvOptions) -> CsvReader<R> {
        CsvReader {
            lines: input.lines(),
            columns: None,
            opts,
            line_no: 0,
            row_no: 0,
        }
    }

    /// Up to `max` synapses; an empty batch at the end of the input.
    pub fn next_batch(&mut self, max: usize) -> Result<Vec<Synapse>> {
        let mut out = Vec::with_capacity(max.min(1 << 20));
        while out.len() < max {
            let Some(line) = self.lines.next() else { break };
            self.line_no += 1;
            let line = line
                .map_err(|e| SynapseError::InvalidInput(format!("line {}: {e}", self.line_no)))?;
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some(cols) = &self.columns else {
                self.columns = Some(Columns::from_header(trimmed).map_err(|e| {
                    SynapseError::InvalidInput(format!("line {} (header): {e}", self.line_no))
                })?);
                continue;
            };
            self.row_no += 1;
            let s = parse_row(cols, trimmed, &self.opts, self.row_no)
                .map_err(|m| SynapseError::InvalidInput(format!("line {}: {m}", self.line_no)))?;
            out.push(s);
        }
        if self.columns.is_none() && out.is_empty() && self.line_no > 0 {
            return Err(SynapseError::InvalidInput(
                "the CSV has no header line".into(),
            ));
        }
        Ok(out)
    }
}

fn number(fields: &[String], i: usize, what: &str) -> Result<f64, String> {
    let f = fields
        .get(i)
        .ok_or_else(|| format!("{} fields, no column {} ({what})", fields.len(), i + 1))?;
    let v: f64 = f
        .trim()
        .parse()
        .map_err(|_| format!("{what} {:?} is not a number", f.trim()))?;
    if !v.is_finite() {
        return Err(format!("{what} is {v}"));
    }
    Ok(v)
}

fn point(fields: &[String], p: &Point, what: &str) -> Result<[f64; 3], String> {
    match p {
        Point::Split(ix) => Ok([
            number(fields, ix[0], what)?,
            number(fields, ix[1], what)?,
            number(fields, ix[2], what)?,
        ]),
        Point::Array(i) => {
            let f = fields
                .get(*i)
                .ok_or_else(|| format!("{} fields, no column {} ({what})", fields.len(), i + 1))?;
            let inner = f
                .trim()
                .trim_start_matches(['[', '('])
                .trim_end_matches([']', ')']);
            let parts: Vec<&str> = inner
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .collect();
            if parts.len() != 3 {
                return Err(format!("{what} {f:?} is not [x, y, z]"));
            }
            let mut out = [0.0; 3];
            for (o, s) in out.iter_mut().zip(parts) {
                *o = s
                    .parse()
                    .map_err(|_| format!("{what} {f:?}: {s:?} is not a number"))?;
            }
            Ok(out)
        }
    }
}

fn to_voxels(p: [f64; 3], units: Units, what: &str) -> Result<[i64; 3], String> {
    let mut out = [0i64; 3];
    for d in 0..3 {
        let v = match units {
            Units::Voxels => p[d],
            Units::Nanometers(res) => p[d] / res[d],
        }
        .floor();
        if v.abs() > f64::from(i32::MAX) {
            return Err(format!("{what} {p:?} is beyond the 32-bit voxel range"));
        }
        out[d] = v as i64;
    }
    Ok(out)
}

fn parse_row(cols: &Columns, line: &str, opts: &CsvOptions, row: u64) -> Result<Synapse, String> {
    let fields = split_fields(line);
    let id = match cols.id {
        Some(i) => {
            let f = fields.get(i).map(|s| s.trim()).unwrap_or("");
            f.parse::<u64>()
                .map_err(|_| format!("synapse ID {f:?} is not an unsigned integer"))?
        }
        None => opts.first_id + row,
    };
    let size = match cols.size {
        Some(i) => {
            let v = number(&fields, i, "size")?;
            if v < 0.0 || v > f64::from(u32::MAX) {
                return Err(format!("size {v} is outside 0..2^32"));
            }
            v.round() as u32
        }
        None => 0,
    };
    let score = match cols.score {
        Some(i) => number(&fields, i, "score")? as f32,
        None => 0.0,
    };
    Ok(Synapse {
        id,
        pre: to_voxels(
            point(&fields, &cols.pre, "pre point")?,
            opts.units,
            "pre point",
        )?,
        post: to_voxels(
            point(&fields, &cols.post, "post point")?,
            opts.units,
            "post point",
        )?,
        size,
        score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, opts: CsvOptions) -> Result<Vec<Synapse>> {
        CsvReader::new(text.as_bytes(), opts).next_batch(usize::MAX)
    }

    #[test]
    fn split_columns_in_any_order() {
        let s = read(
            "score,post_x,post_y,post_z,id,pre_x,pre_y,pre_z,size\n\
             0.9,4,5,6,17,1,2,3,120\n# comment\n\n0.5,7,8,9,18,1.9,2,3,7.6\n",
            CsvOptions::default(),
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].id, 17);
        assert_eq!(s[0].pre, [1, 2, 3]);
        assert_eq!(s[0].post, [4, 5, 6]);
        assert_eq!(s[0].size, 120);
        assert!((s[0].score - 0.9).abs() < 1e-6);
        assert_eq!(s[1].pre, [1, 2, 3], "floored");
        assert_eq!(s[1].size, 8, "rounded");
    }

    #[test]
    fn cave_array_columns_in_nm_and_row_ids() {
        let s = read(
            "pre_pt_position,post_pt_position,size\n\"[16, 16, 80]\",\"[32 48 120]\",5\n",
            CsvOptions {
                units: Units::Nanometers([8.0, 8.0, 40.0]),
                first_id: 100,
            },
        )
        .unwrap();
        assert_eq!(s[0].id, 101);
        assert_eq!(s[0].pre, [2, 2, 2]);
        assert_eq!(s[0].post, [4, 6, 3]);
        assert_eq!(s[0].score, 0.0);
    }

    #[test]
    fn bad_input_names_the_line_and_the_problem() {
        let msg = |text: &str| read(text, CsvOptions::default()).unwrap_err().to_string();
        assert!(
            msg("a,b,c\n1,2,3\n").contains("no presynaptic point"),
            "{}",
            msg("a,b\n")
        );
        let m = msg("pre_x,pre_y,pre_z,post_x,post_y,post_z\n1,2,3,4,5,6\n1,2,x,4,5,6\n");
        assert!(
            m.contains("line 3") && m.contains("\"x\" is not a number"),
            "{m}"
        );
        let m = msg("pre_x,pre_y,pre_z,post_x,post_y,post_z\n1,2,3,4,5\n");
        assert!(m.contains("line 2") && m.contains("5 fields"), "{m}");
        let m = msg("id,pre,post\n-1,\"[1,2,3]\",\"[1,2,3]\"\n");
        assert!(m.contains("synapse ID \"-1\""), "{m}");
        let m = msg("id,pre,post\n1,\"[1,2]\",\"[1,2,3]\"\n");
        assert!(m.contains("not [x, y, z]"), "{m}");
    }

    #[test]
    fn batches_cover_the_input() {
        let mut text = String::from("pre_x,pre_y,pre_z,post_x,post_y,post_z\n");
        for i in 0..10 {
            text.push_str(&format!("{i},0,0,0,0,{i}\n"));
        }
        let mut r = CsvReader::new(text.as_bytes(), CsvOptions::default());
        let mut ids = Vec::new();
        loop {
            let b = r.next_batch(3).unwrap();
            if b.is_empty() {
                break;
            }
            ids.extend(b.iter().map(|s| s.id));
        }
        assert_eq!(ids, (1..=10).collect::<Vec<_>>());
    }
}
