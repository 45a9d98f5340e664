//! Probes: closed questions with a fixed answer set, as data (probes.toml, ARCHITECTURE.md contract 1).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::BundleError;

/// One closed question.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// Stable id used by the daemon and the policies (`eyes`, `gaze`, ...).
    pub id: String,
    pub question: String,
    /// Allowed answers; each may be several tokens.
    pub answers: Vec<String>,
    /// The observation field this probe feeds (`eyes_on_road`, ...).
    pub field: String,
    /// Answers that make the field true.
    pub positive: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ProbeSet {
    #[serde(rename = "probe", default)]
    pub probes: Vec<Probe>,
}

impl ProbeSet {
    pub fn load(path: &Path) -> Result<ProbeSet, BundleError> {
        let text = std::fs::read_to_string(path).map_err(|e| BundleError::io(path, e))?;
        Self::parse(&text).map_err(|message| BundleError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<ProbeSet, String> {
        let set: ProbeSet = toml::from_str(text).map_err(|e| e.to_string())?;
        set.validate()?;
        Ok(set)
    }

    pub fn validate(&self) -> Result<(), String> {
        let mut ids = std::collections::HashSet::new();
        for p in &self.probes {
            if p.id.is_empty() || !ids.insert(p.id.as_str()) {
                return Err(format!("probe id `{}` is empty or duplicated", p.id));
            }
            if p.question.trim().is_empty() {
                return Err(format!("probe `{}`: empty question", p.id));
            }
            if p.answers.len() < 2 {
                return Err(format!("probe `{}`: needs at least two answers", p.id));
            }
            let mut seen = std::collections::HashSet::new();
            for a in &p.answers {
                if a.is_empty() || !seen.insert(a.as_str()) {
                    return Err(format!(
                        "probe `{}`: answer `{a}` is empty or duplicated",
                        p.id
                    ));
                }
            }
            if let Some(bad) = p.positive.iter().find(|x| !p.answers.contains(x)) {
                return Err(format!(
                    "probe `{}`: positive answer `{bad}` is not one of its answers",
                    p.id
                ));
            }
        }
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Probe> {
        self.probes.iter().find(|p| p.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_example() {
        let set = ProbeSet::parse(
            r#"
[[probe]]
id = "gaze"
question = "Where is the driver looking?"
answers = ["road", "left mirror", "right mirror", "down", "console"]
field = "eyes_on_road"
positive = ["road"]
"#,
        )
        .unwrap();
        assert_eq!(set.probes.len(), 1);
        assert_eq!(set.get("gaze").unwrap().answers[1], "left mirror");
    }

    #[test]
    fn rejects_unknown_keys_and_bad_positives() {
        let unknown = "[[probe]]\nid='a'\nquestion='q'\nanswers=['x','y']\nfield='f'\npositive=['x']\ncolour='red'\n";
        assert!(ProbeSet::parse(unknown).unwrap_err().contains("colour"));
        let bad = "[[probe]]\nid='a'\nquestion='q'\nanswers=['x','y']\nfield='f'\npositive=['z']\n";
        assert!(ProbeSet::parse(bad).unwrap_err().contains("`z`"));
        let dup = "[[probe]]\nid='a'\nquestion='q'\nanswers=['x','x']\nfield='f'\npositive=[]\n";
        assert!(ProbeSet::parse(dup).is_err());
    }
}
