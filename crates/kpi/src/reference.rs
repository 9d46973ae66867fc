//! The reference lists the engine checks events against: the known unit codes, the known
//! procedure codes with their online level, and the top-N procedures that get their own label.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use crate::KpiError;

/// At most this many procedures get their own `procedure` label; see docs/kpi.md.
pub const MAX_TOP_PROCEDURES: usize = 100;

/// The label value of every procedure outside the top N.
pub const OTHER_PROCEDURE: &str = "other";

/// How far a procedure can be done online (the `level` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    /// Not online.
    Offline,
    /// Partly online.
    PartialOnline,
    /// End to end online.
    FullOnline,
}

impl Level {
    /// The label value.
    pub fn as_label(self) -> &'static str {
        match self {
            Level::Offline => "offline",
            Level::PartialOnline => "partial_online",
            Level::FullOnline => "full_online",
        }
    }
}

/// One known procedure.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcedureRef {
    /// Code in the national catalogue, e.g. `1.001193`.
    pub code: String,
    /// Online level.
    pub level: Level,
}

/// The shape of a reference file (and of the inline lists in the config).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReferenceFile {
    /// Known unit codes.
    pub units: Vec<String>,
    /// Known procedures.
    pub procedures: Vec<ProcedureRef>,
}

impl ReferenceFile {
    /// Read a reference file.
    pub fn load(path: &Path) -> Result<ReferenceFile, KpiError> {
        let text = std::fs::read_to_string(path).map_err(|source| KpiError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text)
            .map_err(|e| KpiError::Config(format!("reference file {}: {e}", path.display())))
    }
}

/// The label pair of the procedure view.
pub type ProcedureKey = (String, Level);

/// Known units and procedures, and the procedures that get their own label.
#[derive(Debug, Clone, Default)]
pub struct Reference {
    units: HashSet<String>,
    procedures: HashMap<String, Level>,
    top: HashSet<String>,
}

impl Reference {
    /// Build from reference lists and the top-N procedure codes. Every top procedure must be
    /// known, and there may be at most [`MAX_TOP_PROCEDURES`].
    pub fn new(
        files: impl IntoIterator<Item = ReferenceFile>,
        top: &[String],
    ) -> Result<Reference, KpiError> {
        let mut units = HashSet::new();
        let mut procedures: BTreeMap<String, Level> = BTreeMap::new();
        for file in files {
            for unit in file.units {
                if unit.trim().is_empty() {
                    return Err(KpiError::Config("reference: an empty unit code".into()));
                }
                units.insert(unit);
            }
            for p in file.procedures {
                if let Some(level) = procedures.get(&p.code)
                    && *level != p.level
                {
                    return Err(KpiError::Config(format!(
                        "reference: procedure {} has two levels",
                        p.code
                    )));
                }
                procedures.insert(p.code, p.level);
            }
        }
        if top.len() > MAX_TOP_PROCEDURES {
            return Err(KpiError::Config(format!(
                "top_procedures lists {} codes; at most {MAX_TOP_PROCEDURES} keep the series count bounded",
                top.len()
            )));
        }
        for code in top {
            if code == OTHER_PROCEDURE {
                return Err(KpiError::Config(format!(
                    "top_procedures: {OTHER_PROCEDURE:?} is reserved"
                )));
            }
            if !procedures.contains_key(code) {
                return Err(KpiError::Config(format!(
                    "top_procedures: {code:?} is not a known procedure"
                )));
            }
        }
        Ok(Reference {
            units,
            procedures: procedures.into_iter().collect(),
            top: top.iter().cloned().collect(),
        })
    }

    /// Whether `unit` is a known unit code.
    pub fn knows_unit(&self, unit: &str) -> bool {
        self.units.contains(unit)
    }

    /// The procedure-view labels of a procedure code, or `None` when it is not known.
    pub fn procedure_key(&self, code: &str) -> Option<ProcedureKey> {
        let level = *self.procedures.get(code)?;
        let label = if self.top.contains(code) {
            code.to_string()
        } else {
            OTHER_PROCEDURE.to_string()
        };
        Some((label, level))
    }

    /// How many units are known.
    pub fn unit_count(&self) -> usize {
        self.units.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file() -> ReferenceFile {
        toml::from_str(
            r#"
            units = ["26734", "27004", "STP"]
            [[procedures]]
            code = "1.001193"
            level = "FULL_ONLINE"
            [[procedures]]
            code = "2.000001"
            level = "OFFLINE"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn top_procedures_keep_their_code_others_fold() {
        let r = Reference::new([file()], &["1.001193".to_string()]).unwrap();
        assert!(r.knows_unit("STP"));
        assert!(!r.knows_unit("99999"));
        assert_eq!(
            r.procedure_key("1.001193"),
            Some(("1.001193".to_string(), Level::FullOnline))
        );
        assert_eq!(
            r.procedure_key("2.000001"),
            Some(("other".to_string(), Level::Offline))
        );
        assert_eq!(r.procedure_key("3.3"), None);
        assert_eq!(r.unit_count(), 3);
    }

    #[test]
    fn bad_references_are_refused() {
        for (top, needle) in [
            (vec!["9.9".to_string()], "not a known"),
            (vec!["other".to_string()], "reserved"),
            (
                (0..=MAX_TOP_PROCEDURES).map(|i| i.to_string()).collect(),
                "at most",
            ),
        ] {
            let err = Reference::new([file()], &top).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        let mut twice = file();
        twice.procedures.push(ProcedureRef {
            code: "1.001193".into(),
            level: Level::Offline,
        });
        assert!(Reference::new([twice], &[]).is_err());
        let bad: Result<ReferenceFile, _> = toml::from_str("unit = []");
        assert!(bad.is_err());
    }
}
