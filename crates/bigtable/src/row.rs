use crate::proto::v2 as pb;

/// One row as read back: families in the order the server sent them, each column's
/// cells newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub key: Vec<u8>,
    pub families: Vec<Family>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Family {
    pub name: String,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Column {
    pub qualifier: Vec<u8>,
    /// Newest first.
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cell {
    pub timestamp_micros: i64,
    pub value: Vec<u8>,
    pub labels: Vec<String>,
}

impl Row {
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    pub fn column(&self, family: &str, qualifier: &[u8]) -> Option<&Column> {
        self.family(family)?.column(qualifier)
    }

    /// The newest cell of a column.
    pub fn cell(&self, family: &str, qualifier: &[u8]) -> Option<&Cell> {
        self.column(family, qualifier)?.cells.first()
    }

    /// Number of cells in the row.
    pub fn cell_count(&self) -> usize {
        self.families
            .iter()
            .flat_map(|f| &f.columns)
            .map(|c| c.cells.len())
            .sum()
    }
}

impl Family {
    pub fn column(&self, qualifier: &[u8]) -> Option<&Column> {
        self.columns.iter().find(|c| c.qualifier == qualifier)
    }
}

impl From<pb::Row> for Row {
    fn from(r: pb::Row) -> Self {
        Row {
            key: r.key,
            families: r
                .families
                .into_iter()
                .map(|f| Family {
                    name: f.name,
                    columns: f
                        .columns
                        .into_iter()
                        .map(|c| Column {
                            qualifier: c.qualifier,
                            cells: c
                                .cells
                                .into_iter()
                                .map(|c| Cell {
                                    timestamp_micros: c.timestamp_micros,
                                    value: c.value,
                                    labels: c.labels,
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}
