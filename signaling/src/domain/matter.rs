//! The matters catalogue: what a resident can handle over video, grouped in classes, each with
//! the intake checklist a front desk must check before accepting a case.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;

use super::DomainError;

/// Longest accepted text for a name (characters, not bytes).
pub const MAX_NAME_CHARS: usize = 200;
/// Longest accepted description or note (characters).
pub const MAX_TEXT_CHARS: usize = 4000;
/// Most checklist items or questions one matter may carry.
pub const MAX_ITEMS: usize = 100;

/// A class of matters (人社, 医保, 市民卡, ...). Agents' skills are classes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MatterClass {
    /// Stable code, `[a-z][a-z0-9_]{1,39}`, e.g. `social_insurance`.
    pub code: String,
    /// Name in Simplified Chinese.
    pub name_zh: String,
    /// Name in English.
    pub name_en: String,
}

/// How a checklist item is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Requirement {
    /// Always required: a case cannot be accepted without it.
    Required,
    /// Helps, never blocks.
    Optional,
    /// Required when the answer to an intake question equals a value (e.g. an injury claim
    /// requires the injury-filing form).
    Conditional {
        /// Key of the intake question.
        question: String,
        /// The answer value that makes the item required.
        equals: String,
    },
}

/// One item of a matter's intake checklist (a document or proof).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChecklistItem {
    /// Stable key within the matter, `[a-z][a-z0-9_]{1,63}`.
    pub key: String,
    /// Name in Simplified Chinese.
    pub name_zh: String,
    /// Name in English.
    pub name_en: String,
    /// Whether and when it is required.
    pub requirement: Requirement,
    /// Optional guidance for the resident / agent (Chinese).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note_zh: Option<String>,
    /// Optional guidance (English).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note_en: Option<String>,
}

/// A possible answer to an intake question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerOption {
    /// Stored value, e.g. `yes`.
    pub value: String,
    /// Label in Chinese.
    pub label_zh: String,
    /// Label in English.
    pub label_en: String,
}

/// A question asked at intake whose answer decides conditional checklist items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IntakeQuestion {
    /// Stable key within the matter.
    pub key: String,
    /// Question in Chinese.
    pub label_zh: String,
    /// Question in English.
    pub label_en: String,
    /// The allowed answers.
    pub options: Vec<AnswerOption>,
}

/// A matter that can be handled remotely, with its intake checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MatterSpec {
    /// Stable code, `[A-Z][A-Z0-9-]{1,31}`, e.g. `MI-003`.
    pub code: String,
    /// Code of the class it belongs to.
    pub class: String,
    /// Name in Simplified Chinese.
    pub name_zh: String,
    /// Name in English.
    pub name_en: String,
    /// What the matter is (Chinese).
    #[serde(default)]
    pub description_zh: String,
    /// What the matter is (English).
    #[serde(default)]
    pub description_en: String,
    /// Can be handled face to face over video.
    #[serde(default = "yes")]
    pub video: bool,
    /// A grid helper may submit it on a resident's behalf.
    #[serde(default = "yes")]
    pub proxy_allowed: bool,
    /// Can be looked up on the TV set-top box.
    #[serde(default)]
    pub tv_lookup: bool,
    /// Intake questions (answers drive conditional items).
    #[serde(default)]
    pub questions: Vec<IntakeQuestion>,
    /// The intake checklist.
    pub checklist: Vec<ChecklistItem>,
    /// Recording retention for calls about this matter, in days; `None` uses the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

fn yes() -> bool {
    true
}

fn check_code(what: &'static str, s: &str, upper: bool, max: usize) -> Result<(), DomainError> {
    let mut chars = s.chars();
    let first_ok = match chars.next() {
        Some(c) if upper => c.is_ascii_uppercase(),
        Some(c) => c.is_ascii_lowercase(),
        None => false,
    };
    let rest_ok = s.chars().all(|c| {
        if upper {
            c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-'
        } else {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
        }
    });
    if !first_ok || !rest_ok || s.len() < 2 || s.len() > max {
        return Err(DomainError::invalid(what, "bad code format"));
    }
    Ok(())
}

/// Checks a human-readable text: not blank (when required), at most `max` characters, no
/// control characters.
pub fn check_text(what: &'static str, s: &str, required: bool, max: usize) -> Result<(), DomainError> {
    if required && s.trim().is_empty() {
        return Err(DomainError::invalid(what, "must not be empty"));
    }
    if s.chars().count() > max {
        return Err(DomainError::invalid(what, "too long"));
    }
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(DomainError::invalid(what, "control characters are not allowed"));
    }
    Ok(())
}

impl MatterClass {
    /// Validates the class's fields.
    pub fn validate(&self) -> Result<(), DomainError> {
        check_code("code", &self.code, false, 40)?;
        check_text("name_zh", &self.name_zh, true, MAX_NAME_CHARS)?;
        check_text("name_en", &self.name_en, true, MAX_NAME_CHARS)
    }
}

impl MatterSpec {
    /// Validates the matter: codes, texts, unique keys, conditions that name a real question
    /// and one of its answers.
    pub fn validate(&self) -> Result<(), DomainError> {
        check_code("code", &self.code, true, 32)?;
        check_code("class", &self.class, false, 40)?;
        check_text("name_zh", &self.name_zh, true, MAX_NAME_CHARS)?;
        check_text("name_en", &self.name_en, true, MAX_NAME_CHARS)?;
        check_text("description_zh", &self.description_zh, false, MAX_TEXT_CHARS)?;
        check_text("description_en", &self.description_en, false, MAX_TEXT_CHARS)?;
        if self.checklist.len() > MAX_ITEMS || self.questions.len() > MAX_ITEMS {
            return Err(DomainError::invalid("checklist", "too many items"));
        }
        if let Some(0) = self.retention_days {
            return Err(DomainError::invalid("retention_days", "must be at least 1"));
        }
        let mut qkeys = HashSet::new();
        for q in &self.questions {
            check_code("questions.key", &q.key, false, 64)?;
            check_text("questions.label_zh", &q.label_zh, true, MAX_NAME_CHARS)?;
            check_text("questions.label_en", &q.label_en, true, MAX_NAME_CHARS)?;
            if !qkeys.insert(q.key.as_str()) {
                return Err(DomainError::invalid("questions.key", "duplicate key"));
            }
            if q.options.len() < 2 || q.options.len() > 20 {
                return Err(DomainError::invalid("questions.options", "2 to 20 options"));
            }
            let mut values = HashSet::new();
            for o in &q.options {
                check_text("options.value", &o.value, true, 64)?;
                check_text("options.label_zh", &o.label_zh, true, MAX_NAME_CHARS)?;
                check_text("options.label_en", &o.label_en, true, MAX_NAME_CHARS)?;
                if !values.insert(o.value.as_str()) {
                    return Err(DomainError::invalid("options.value", "duplicate value"));
                }
            }
        }
        let mut ikeys = HashSet::new();
        for item in &self.checklist {
            check_code("checklist.key", &item.key, false, 64)?;
            check_text("checklist.name_zh", &item.name_zh, true, MAX_NAME_CHARS)?;
            check_text("checklist.name_en", &item.name_en, true, MAX_NAME_CHARS)?;
            for note in [&item.note_zh, &item.note_en].into_iter().flatten() {
                check_text("checklist.note", note, false, MAX_TEXT_CHARS)?;
            }
            if !ikeys.insert(item.key.as_str()) {
                return Err(DomainError::invalid("checklist.key", "duplicate key"));
            }
            if let Requirement::Conditional { question, equals } = &item.requirement {
                let q = self.questions.iter().find(|q| &q.key == question).ok_or_else(|| {
                    DomainError::invalid("checklist.requirement", "condition names an unknown question")
                })?;
                if !q.options.iter().any(|o| &o.value == equals) {
                    return Err(DomainError::invalid(
                        "checklist.requirement",
                        "condition names an answer the question does not offer",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The catalogue shipped with the server (seeded at first start).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    /// Matter classes.
    pub classes: Vec<MatterClass>,
    /// Matters.
    pub matters: Vec<MatterSpec>,
}

impl Catalogue {
    /// The built-in catalogue, from the source article's matters.
    pub fn builtin() -> Catalogue {
        serde_json::from_str(include_str!("../../seed/matters.json"))
            .expect("seed/matters.json is valid (checked by a test)")
    }
}

/// A matter as stored: its spec, a version that increases with every edit, and whether it is
/// offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matter {
    /// The matter.
    pub spec: MatterSpec,
    /// Starts at 1, +1 on every edit (optimistic concurrency for admins).
    pub version: i64,
    /// Offered to residents.
    pub active: bool,
    /// Last change (Unix ms).
    pub updated_at: super::clock::Millis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_is_valid_and_covers_the_article() {
        let cat = Catalogue::builtin();
        for c in &cat.classes {
            c.validate().unwrap();
        }
        let mut codes = HashSet::new();
        for m in &cat.matters {
            m.validate().unwrap_or_else(|e| panic!("{}: {e}", m.code));
            assert!(cat.classes.iter().any(|c| c.code == m.class), "{} has an unknown class", m.code);
            assert!(codes.insert(m.code.clone()), "duplicate {}", m.code);
        }
        for class in ["social_insurance", "medical_insurance", "citizen_card", "car_quota"] {
            assert!(cat.matters.iter().filter(|m| m.class == class).count() >= 5, "{class}");
        }
        // The article's returned case: an injury claim needs the injury-filing form.
        let injury = cat
            .matters
            .iter()
            .flat_map(|m| m.checklist.iter().map(move |i| (m, i)))
            .find(|(_, i)| i.key == "injury_filing_form")
            .expect("a matter lists the injury-filing form");
        assert!(matches!(injury.1.requirement, Requirement::Conditional { .. }));
        for name in ["残疾人证", "驾驶证", "老年优待证", "医疗机构执业"] {
            assert!(cat.matters.iter().any(|m| m.name_zh.contains(name)), "{name}");
        }
    }

    fn sample() -> MatterSpec {
        serde_json::from_value(serde_json::json!({
            "code": "MI-900", "class": "medical_insurance", "name_zh": "测试", "name_en": "Test",
            "questions": [{"key": "is_injury", "label_zh": "外伤?", "label_en": "Injury?",
                "options": [{"value": "yes", "label_zh": "是", "label_en": "Yes"},
                            {"value": "no", "label_zh": "否", "label_en": "No"}]}],
            "checklist": [{"key": "injury_filing_form", "name_zh": "外伤备案申请表", "name_en": "Injury form",
                "requirement": {"kind": "conditional", "question": "is_injury", "equals": "yes"}}]
        }))
        .unwrap()
    }

    #[test]
    fn conditions_must_name_a_real_question_and_answer() {
        sample().validate().unwrap();
        let mut m = sample();
        m.checklist[0].requirement = Requirement::Conditional { question: "nope".into(), equals: "yes".into() };
        assert!(m.validate().is_err());
        let mut m = sample();
        m.checklist[0].requirement = Requirement::Conditional { question: "is_injury".into(), equals: "maybe".into() };
        assert!(m.validate().is_err());
    }

    #[test]
    fn oversize_and_malformed_fields_are_refused() {
        let mut m = sample();
        m.name_zh = "长".repeat(MAX_NAME_CHARS + 1);
        assert!(m.validate().is_err());
        let mut m = sample();
        m.code = "mi-1; DROP TABLE matters".into();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.name_en = "a\u{0}b".into();
        assert!(m.validate().is_err());
    }
}
