//! Cases: a resident's matter on its way from intake to result.
//!
//! - [`CaseStatus`] and [`CaseAction`]: the lifecycle, as a pure state machine
//!   ([`next_status`]); illegal transitions are refused with a typed [`CaseError`];
//! - [`evaluate`]: the intake checklist gate — the matter's checklist against the case's
//!   documents and answers, listing every missing or invalid item at once (一次性告知);
//! - [`accept_gate`]: acceptance needs a complete checklist or a written override reason;
//! - [`RatingLevel`] and [`WorkCalendar`]: ratings (好差评) and the follow-up deadline in working
//!   days.
//!
//! Nothing here does I/O; time comes in as an argument.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

use super::clock::Millis;
use super::identity::Role;
use super::matter::{check_text, MatterSpec, Requirement};
use super::DomainError;

macro_rules! case_id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<uuid::Uuid> for $name {
            fn from(u: uuid::Uuid) -> Self {
                Self(u)
            }
        }
    };
}

case_id_type!(
    /// A case.
    CaseId
);
case_id_type!(
    /// A document of a case (one scanned page, photo or PDF).
    DocumentId
);
case_id_type!(
    /// An entry of a case's history.
    CaseEventId
);
case_id_type!(
    /// A rating (好差评).
    RatingId
);
case_id_type!(
    /// A supervisor follow-up opened by a low rating.
    FollowUpId
);

/// Longest reason, note or override text (characters).
pub const MAX_REASON_CHARS: usize = 1000;
/// Shortest written override reason (characters): "ok" is not a reason.
pub const MIN_OVERRIDE_CHARS: usize = 5;
/// Longest rating comment (characters).
pub const MAX_COMMENT_CHARS: usize = 500;
/// Most tags on one rating.
pub const MAX_TAGS: usize = 10;
/// Longest tag (characters).
pub const MAX_TAG_CHARS: usize = 20;
/// Default follow-up deadline after a low rating, in working days.
pub const DEFAULT_FOLLOW_UP_WORKING_DAYS: u32 = 15;

/// Where a case is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseStatus {
    /// Being prepared; not yet handed in.
    Draft,
    /// Handed in, waiting for intake review.
    Submitted,
    /// Accepted for processing (受理).
    Accepted,
    /// Sent back for correction (补正), with every missing or invalid item listed.
    Returned,
    /// Handed in again after a return.
    Resubmitted,
    /// Granted.
    Approved,
    /// Refused, with a reason.
    Rejected,
    /// Closed: the result was delivered.
    Completed,
}

impl CaseStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [CaseStatus; 8] = [
        CaseStatus::Draft,
        CaseStatus::Submitted,
        CaseStatus::Accepted,
        CaseStatus::Returned,
        CaseStatus::Resubmitted,
        CaseStatus::Approved,
        CaseStatus::Rejected,
        CaseStatus::Completed,
    ];

    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseStatus::Draft => "draft",
            CaseStatus::Submitted => "submitted",
            CaseStatus::Accepted => "accepted",
            CaseStatus::Returned => "returned",
            CaseStatus::Resubmitted => "resubmitted",
            CaseStatus::Approved => "approved",
            CaseStatus::Rejected => "rejected",
            CaseStatus::Completed => "completed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        CaseStatus::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Documents and answers may still change (not decided yet).
    pub fn is_open(self) -> bool {
        !matches!(self, CaseStatus::Approved | CaseStatus::Rejected | CaseStatus::Completed)
    }

    /// The resident (or agent) may still edit documents and answers: before the decision.
    pub fn accepts_material(self) -> bool {
        self.is_open()
    }
}

/// What someone does to a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaseAction {
    /// Created (first history entry).
    Create,
    /// Hand in a draft.
    Submit,
    /// Hand in again after a return.
    Resubmit,
    /// Accept for processing (受理).
    Accept,
    /// Send back for correction (补正).
    Return,
    /// Grant.
    Approve,
    /// Refuse.
    Reject,
    /// Close after the result was delivered.
    Complete,
}

impl CaseAction {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CaseAction::Create => "create",
            CaseAction::Submit => "submit",
            CaseAction::Resubmit => "resubmit",
            CaseAction::Accept => "accept",
            CaseAction::Return => "return",
            CaseAction::Approve => "approve",
            CaseAction::Reject => "reject",
            CaseAction::Complete => "complete",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            CaseAction::Create,
            CaseAction::Submit,
            CaseAction::Resubmit,
            CaseAction::Accept,
            CaseAction::Return,
            CaseAction::Approve,
            CaseAction::Reject,
            CaseAction::Complete,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }

    /// Roles that may take this action (ownership is checked separately: a resident only on
    /// their own case).
    pub fn allowed_roles(self) -> &'static [Role] {
        match self {
            CaseAction::Create | CaseAction::Submit | CaseAction::Resubmit => &[Role::Resident, Role::Agent],
            CaseAction::Accept
            | CaseAction::Return
            | CaseAction::Approve
            | CaseAction::Reject
            | CaseAction::Complete => &[Role::Agent],
        }
    }

    /// The action needs a written reason.
    pub fn needs_reason(self) -> bool {
        matches!(self, CaseAction::Return | CaseAction::Reject)
    }
}

/// Why a case action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaseError {
    /// The action is not possible from the current status.
    #[error("cannot {action} a case that is {from}")]
    IllegalTransition {
        /// Current status.
        from: &'static str,
        /// Attempted action.
        action: &'static str,
    },
    /// The checklist is incomplete and no override reason was given.
    #[error("the intake checklist is incomplete ({} issue(s)); give an override reason to accept anyway", .0.len())]
    ChecklistIncomplete(Vec<Issue>),
    /// The override reason is missing substance.
    #[error("an override needs a written reason of at least {MIN_OVERRIDE_CHARS} characters")]
    OverrideReasonTooShort,
    /// A return must list at least one missing or invalid item.
    #[error("a return must list at least one missing or invalid item")]
    NothingToReturn,
    /// A required reason is missing or invalid.
    #[error("invalid reason: {0}")]
    Reason(&'static str),
}

/// The status after `action` on a case in `from`, or why not.
pub fn next_status(from: CaseStatus, action: CaseAction) -> Result<CaseStatus, CaseError> {
    use CaseAction as A;
    use CaseStatus as S;
    let to = match (from, action) {
        (S::Draft, A::Submit) => S::Submitted,
        (S::Returned, A::Resubmit) => S::Resubmitted,
        (S::Submitted | S::Resubmitted, A::Accept) => S::Accepted,
        (S::Submitted | S::Resubmitted | S::Accepted, A::Return) => S::Returned,
        (S::Accepted, A::Approve) => S::Approved,
        (S::Submitted | S::Resubmitted | S::Accepted, A::Reject) => S::Rejected,
        (S::Approved | S::Rejected, A::Complete) => S::Completed,
        _ => return Err(CaseError::IllegalTransition { from: from.as_str(), action: action.as_str() }),
    };
    Ok(to)
}

/// The hand-in action for a case: submit a draft, resubmit a returned case.
pub fn hand_in_action(status: CaseStatus) -> CaseAction {
    if status == CaseStatus::Returned {
        CaseAction::Resubmit
    } else {
        CaseAction::Submit
    }
}

/// Checks a reason or note text.
pub fn check_reason(s: &str, required: bool) -> Result<(), CaseError> {
    check_text("reason", s, required, MAX_REASON_CHARS).map_err(|e| match e {
        DomainError::Invalid { reason, .. } => CaseError::Reason(reason),
    })
}

// ---------------------------------------------------------------------------------------------
// Documents and the checklist gate

/// Document formats accepted (checked by magic bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum DocumentFormat {
    /// `image/jpeg`.
    #[serde(rename = "image/jpeg")]
    Jpeg,
    /// `image/png`.
    #[serde(rename = "image/png")]
    Png,
    /// `application/pdf`.
    #[serde(rename = "application/pdf")]
    Pdf,
}

impl DocumentFormat {
    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            DocumentFormat::Jpeg => "image/jpeg",
            DocumentFormat::Png => "image/png",
            DocumentFormat::Pdf => "application/pdf",
        }
    }

    /// Parses a MIME type (parameters and case ignored).
    pub fn from_mime(s: &str) -> Option<Self> {
        let base = s.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match base.as_str() {
            "image/jpeg" | "image/jpg" => Some(DocumentFormat::Jpeg),
            "image/png" => Some(DocumentFormat::Png),
            "application/pdf" => Some(DocumentFormat::Pdf),
            _ => None,
        }
    }

    /// What the first bytes of a file say it is.
    pub fn sniff(head: &[u8]) -> Option<Self> {
        if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(DocumentFormat::Jpeg)
        } else if head.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(DocumentFormat::Png)
        } else if head.starts_with(b"%PDF-") {
            Some(DocumentFormat::Pdf)
        } else {
            None
        }
    }

    /// An image (gets a thumbnail).
    pub fn is_image(self) -> bool {
        matches!(self, DocumentFormat::Jpeg | DocumentFormat::Png)
    }
}

/// Where a document came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentSource {
    /// Uploaded (phone, kiosk scanner, console).
    Upload,
    /// A frame captured from the live video call by the agent console.
    VideoFrame,
}

impl DocumentSource {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentSource::Upload => "upload",
            DocumentSource::VideoFrame => "video_frame",
        }
    }
    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "upload" => Some(DocumentSource::Upload),
            "video_frame" => Some(DocumentSource::VideoFrame),
            _ => None,
        }
    }
}

/// State of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentStatus {
    /// Bytes are arriving.
    Uploading,
    /// Complete, checked, stored.
    Ready,
    /// Marked invalid by an agent at a return (the reason is kept).
    Invalid,
}

impl DocumentStatus {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentStatus::Uploading => "uploading",
            DocumentStatus::Ready => "ready",
            DocumentStatus::Invalid => "invalid",
        }
    }
    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "uploading" => Some(DocumentStatus::Uploading),
            "ready" => Some(DocumentStatus::Ready),
            "invalid" => Some(DocumentStatus::Invalid),
            _ => None,
        }
    }
}

/// What the checklist sees of a document: which item it is for, and its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentFact {
    /// The checklist item it satisfies (`None`: an unfiled extra page).
    pub item_key: Option<String>,
    /// Its state.
    pub status: DocumentStatus,
    /// Why it was marked invalid.
    pub invalid_reason: Option<String>,
}

/// One thing that blocks acceptance; a return lists all of them at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Issue {
    /// A required document is missing.
    MissingDocument {
        /// Checklist item key.
        item: String,
        /// Item name (Chinese).
        name_zh: String,
        /// Item name (English).
        name_en: String,
    },
    /// The document given for an item was found invalid (blurry, expired, wrong person...).
    InvalidDocument {
        /// Checklist item key.
        item: String,
        /// Item name (Chinese).
        name_zh: String,
        /// Item name (English).
        name_en: String,
        /// Why.
        reason: String,
    },
    /// An intake question that decides what is required has no answer.
    UnansweredQuestion {
        /// Question key.
        question: String,
        /// The question (Chinese).
        label_zh: String,
        /// The question (English).
        label_en: String,
    },
}

impl Issue {
    /// The checklist item or question the issue is about.
    pub fn key(&self) -> &str {
        match self {
            Issue::MissingDocument { item, .. } | Issue::InvalidDocument { item, .. } => item,
            Issue::UnansweredQuestion { question, .. } => question,
        }
    }
}

/// How one checklist item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    /// A ready document is filed for it.
    Provided,
    /// Required and not provided.
    Missing,
    /// Required; the only documents for it were marked invalid.
    Invalid,
    /// Optional (or conditional and not triggered) and not provided.
    NotNeeded,
    /// Conditional on a question that has no answer yet.
    Undecided,
}

/// One row of the checklist report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ItemReport {
    /// Item key.
    pub key: String,
    /// Name (Chinese).
    pub name_zh: String,
    /// Name (English).
    pub name_en: String,
    /// Required for this case (given the answers).
    pub required: bool,
    /// How it stands.
    pub state: ItemState,
    /// Ready documents filed for it.
    pub documents: u32,
}

/// The checklist evaluated for one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChecklistReport {
    /// No issue: the case may be accepted without override.
    pub complete: bool,
    /// Every item of the matter's checklist.
    pub items: Vec<ItemReport>,
    /// Everything that blocks acceptance, all at once (一次性告知).
    pub issues: Vec<Issue>,
}

/// Intake answers: question key → chosen value.
pub type Answers = BTreeMap<String, String>;

/// Checks answers against the matter's questions: known questions, offered values.
pub fn validate_answers(matter: &MatterSpec, answers: &Answers) -> Result<(), DomainError> {
    if answers.len() > super::matter::MAX_ITEMS {
        return Err(DomainError::invalid("answers", "too many answers"));
    }
    for (k, v) in answers {
        let q = matter
            .questions
            .iter()
            .find(|q| &q.key == k)
            .ok_or_else(|| DomainError::invalid("answers", "names a question the matter does not ask"))?;
        if !q.options.iter().any(|o| &o.value == v) {
            return Err(DomainError::invalid("answers", "gives a value the question does not offer"));
        }
    }
    Ok(())
}

/// Evaluates the matter's checklist against the case's documents and answers.
///
/// An item is provided by at least one *ready* document filed for it. A required item — or a
/// conditional one whose question has the triggering answer — that is not provided is an
/// issue: missing, or invalid when the only documents for it were marked invalid. A question
/// that a conditional item depends on and that has no answer is an issue too, because the
/// checklist cannot be decided without it. Issues come in checklist order, questions first.
pub fn evaluate(matter: &MatterSpec, answers: &Answers, docs: &[DocumentFact]) -> ChecklistReport {
    let mut issues = Vec::new();
    let mut unanswered_reported = HashSet::new();
    // Questions first: the resident answers them before gathering papers.
    for item in &matter.checklist {
        if let Requirement::Conditional { question, .. } = &item.requirement {
            if !answers.contains_key(question) && unanswered_reported.insert(question.clone()) {
                if let Some(q) = matter.questions.iter().find(|q| &q.key == question) {
                    issues.push(Issue::UnansweredQuestion {
                        question: q.key.clone(),
                        label_zh: q.label_zh.clone(),
                        label_en: q.label_en.clone(),
                    });
                }
            }
        }
    }
    let mut items = Vec::with_capacity(matter.checklist.len());
    for item in &matter.checklist {
        let (required, undecided) = match &item.requirement {
            Requirement::Required => (true, false),
            Requirement::Optional => (false, false),
            Requirement::Conditional { question, equals } => match answers.get(question) {
                Some(v) => (v == equals, false),
                None => (false, true),
            },
        };
        let for_item = docs.iter().filter(|d| d.item_key.as_deref() == Some(item.key.as_str()));
        let ready = for_item.clone().filter(|d| d.status == DocumentStatus::Ready).count() as u32;
        let invalid = for_item.filter(|d| d.status == DocumentStatus::Invalid).last();
        let state = if ready > 0 {
            ItemState::Provided
        } else if required {
            match invalid {
                Some(d) => {
                    issues.push(Issue::InvalidDocument {
                        item: item.key.clone(),
                        name_zh: item.name_zh.clone(),
                        name_en: item.name_en.clone(),
                        reason: d.invalid_reason.clone().unwrap_or_default(),
                    });
                    ItemState::Invalid
                }
                None => {
                    issues.push(Issue::MissingDocument {
                        item: item.key.clone(),
                        name_zh: item.name_zh.clone(),
                        name_en: item.name_en.clone(),
                    });
                    ItemState::Missing
                }
            }
        } else if undecided {
            ItemState::Undecided
        } else {
            ItemState::NotNeeded
        };
        items.push(ItemReport {
            key: item.key.clone(),
            name_zh: item.name_zh.clone(),
            name_en: item.name_en.clone(),
            required,
            state,
            documents: ready,
        });
    }
    ChecklistReport { complete: issues.is_empty(), items, issues }
}

/// The acceptance gate: a complete checklist, or an override with a written reason. Returns
/// the issues that were overridden (empty when none).
pub fn accept_gate(report: &ChecklistReport, override_reason: Option<&str>) -> Result<Vec<Issue>, CaseError> {
    if report.complete {
        return Ok(Vec::new());
    }
    match override_reason {
        None => Err(CaseError::ChecklistIncomplete(report.issues.clone())),
        Some(r) => {
            check_reason(r, true)?;
            if r.trim().chars().count() < MIN_OVERRIDE_CHARS {
                return Err(CaseError::OverrideReasonTooShort);
            }
            Ok(report.issues.clone())
        }
    }
}

/// An item an agent found invalid when returning a case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvalidItem {
    /// Checklist item key.
    pub item: String,
    /// What is wrong with it (shown to the resident).
    pub reason: String,
}

/// The full return notice: the checklist's issues plus what the agent found invalid, each item
/// once, in checklist order. Refuses an empty notice and items the matter does not list.
pub fn return_notice(
    matter: &MatterSpec,
    report: &ChecklistReport,
    invalid: &[InvalidItem],
) -> Result<Vec<Issue>, CaseError> {
    let mut notice: Vec<Issue> = report.issues.clone();
    for inv in invalid {
        check_reason(&inv.reason, true)?;
        let item = matter
            .checklist
            .iter()
            .find(|i| i.key == inv.item)
            .ok_or(CaseError::Reason("an invalid item names a key the checklist does not list"))?;
        notice.retain(|i| !(matches!(i, Issue::MissingDocument { .. } | Issue::InvalidDocument { .. }) && i.key() == item.key));
        notice.push(Issue::InvalidDocument {
            item: item.key.clone(),
            name_zh: item.name_zh.clone(),
            name_en: item.name_en.clone(),
            reason: inv.reason.trim().to_string(),
        });
    }
    if notice.is_empty() {
        return Err(CaseError::NothingToReturn);
    }
    let order = |i: &Issue| -> usize {
        match i {
            Issue::UnansweredQuestion { .. } => 0,
            _ => 1 + matter.checklist.iter().position(|c| c.key == i.key()).unwrap_or(usize::MAX - 1),
        }
    };
    notice.sort_by_key(order);
    Ok(notice)
}

// ---------------------------------------------------------------------------------------------
// Ratings and follow-ups

/// The five levels of the government-service rating (好差评).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum RatingLevel {
    /// 1 — 非常不满意.
    VeryDissatisfied = 1,
    /// 2 — 不满意.
    Dissatisfied = 2,
    /// 3 — 基本满意.
    Neutral = 3,
    /// 4 — 满意.
    Satisfied = 4,
    /// 5 — 非常满意.
    VerySatisfied = 5,
}

impl TryFrom<u8> for RatingLevel {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        Ok(match v {
            1 => RatingLevel::VeryDissatisfied,
            2 => RatingLevel::Dissatisfied,
            3 => RatingLevel::Neutral,
            4 => RatingLevel::Satisfied,
            5 => RatingLevel::VerySatisfied,
            _ => return Err("a rating level is 1 (非常不满意) to 5 (非常满意)".into()),
        })
    }
}

impl From<RatingLevel> for u8 {
    fn from(l: RatingLevel) -> u8 {
        l as u8
    }
}

impl RatingLevel {
    /// The label residents see.
    pub fn label_zh(self) -> &'static str {
        match self {
            RatingLevel::VeryDissatisfied => "非常不满意",
            RatingLevel::Dissatisfied => "不满意",
            RatingLevel::Neutral => "基本满意",
            RatingLevel::Satisfied => "满意",
            RatingLevel::VerySatisfied => "非常满意",
        }
    }
    /// English label.
    pub fn label_en(self) -> &'static str {
        match self {
            RatingLevel::VeryDissatisfied => "very dissatisfied",
            RatingLevel::Dissatisfied => "dissatisfied",
            RatingLevel::Neutral => "neutral",
            RatingLevel::Satisfied => "satisfied",
            RatingLevel::VerySatisfied => "very satisfied",
        }
    }
    /// A 差评: 2 or less opens a supervisor follow-up.
    pub fn needs_follow_up(self) -> bool {
        self <= RatingLevel::Dissatisfied
    }
}

/// Checks a rating's tags and comment.
pub fn validate_feedback(tags: &[String], comment: Option<&str>) -> Result<(), DomainError> {
    if tags.len() > MAX_TAGS {
        return Err(DomainError::invalid("tags", "at most 10 tags"));
    }
    let mut seen = HashSet::new();
    for t in tags {
        check_text("tags", t, true, MAX_TAG_CHARS)?;
        if !seen.insert(t.trim()) {
            return Err(DomainError::invalid("tags", "duplicate tag"));
        }
    }
    if let Some(c) = comment {
        check_text("comment", c, false, MAX_COMMENT_CHARS)?;
    }
    Ok(())
}

/// Working days: Monday to Friday, less public holidays, plus make-up working days (调休).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkCalendar {
    /// Days off that fall on weekdays (public holidays).
    pub holidays: HashSet<time::Date>,
    /// Weekend days that are working days (调休上班).
    pub extra_workdays: HashSet<time::Date>,
}

impl WorkCalendar {
    /// Is `d` a working day?
    pub fn is_working_day(&self, d: time::Date) -> bool {
        if self.extra_workdays.contains(&d) {
            return true;
        }
        let weekend = matches!(d.weekday(), time::Weekday::Saturday | time::Weekday::Sunday);
        !weekend && !self.holidays.contains(&d)
    }

    /// The `n`th working day after `from` (`from` itself does not count). Bounded: gives up
    /// after ten years of non-working days and returns the last day looked at.
    pub fn add_working_days(&self, from: time::Date, n: u32) -> time::Date {
        let mut d = from;
        let mut left = n;
        let mut steps = 0u32;
        while left > 0 && steps < 3660 {
            match d.next_day() {
                Some(next) => d = next,
                None => break,
            }
            steps += 1;
            if self.is_working_day(d) {
                left -= 1;
            }
        }
        d
    }
}

/// Offset of the service's local time (Asia/Shanghai, no daylight saving).
pub const LOCAL_OFFSET_SECS: i32 = 8 * 3600;

/// The local (Asia/Shanghai) date of an instant.
pub fn local_date(ms: Millis) -> time::Date {
    let offset = time::UtcOffset::from_whole_seconds(LOCAL_OFFSET_SECS).unwrap_or(time::UtcOffset::UTC);
    super::clock::to_datetime(ms).to_offset(offset).date()
}

/// The last instant (Unix ms) of a local date: a deadline "by the end of that day".
pub fn end_of_local_day(d: time::Date) -> Millis {
    let offset = time::UtcOffset::from_whole_seconds(LOCAL_OFFSET_SECS).unwrap_or(time::UtcOffset::UTC);
    let next = d.next_day().unwrap_or(d);
    let start = time::PrimitiveDateTime::new(next, time::Time::MIDNIGHT).assume_offset(offset);
    super::clock::to_millis(start) - 1
}

/// A follow-up deadline: the end of the `working_days`th working day after the rating.
pub fn follow_up_due(rated_at: Millis, working_days: u32, cal: &WorkCalendar) -> (time::Date, Millis) {
    let due = cal.add_working_days(local_date(rated_at), working_days);
    (due, end_of_local_day(due))
}

// ---------------------------------------------------------------------------------------------
// Records

/// A case as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// Id.
    pub id: CaseId,
    /// The resident whose matter it is.
    pub resident_id: super::ids::ResidentId,
    /// The matter's code.
    pub matter_code: String,
    /// Where it is.
    pub status: CaseStatus,
    /// Intake answers.
    pub answers: Answers,
    /// The call it was opened in (calls land in their own issue; stored unconstrained).
    pub call_id: Option<uuid::Uuid>,
    /// The queue ticket it came from (stored unconstrained).
    pub ticket_id: Option<uuid::Uuid>,
    /// Who created it.
    pub created_by: uuid::Uuid,
    /// Their role.
    pub created_by_role: Role,
    /// Times it was returned for correction.
    pub return_count: i64,
    /// Created (Unix ms).
    pub created_at: Millis,
    /// Last change (Unix ms).
    pub updated_at: Millis,
    /// First handed in (Unix ms).
    pub submitted_at: Option<Millis>,
    /// +1 on every change (optimistic concurrency).
    pub version: i64,
}

/// One entry of a case's history: who did what, when, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseEvent {
    /// Id (time ordered).
    pub id: CaseEventId,
    /// The case.
    pub case_id: CaseId,
    /// When.
    pub at: Millis,
    /// Who (`None`: the system).
    pub actor_id: Option<uuid::Uuid>,
    /// Their role.
    pub actor_role: Option<Role>,
    /// What.
    pub action: CaseAction,
    /// Status before (`None` at creation).
    pub from: Option<CaseStatus>,
    /// Status after.
    pub to: CaseStatus,
    /// Why (required for returns, rejections and overrides).
    pub reason: Option<String>,
    /// Details: the return notice, overridden issues (JSON).
    pub detail: serde_json::Value,
}

/// A document of a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Id.
    pub id: DocumentId,
    /// The case.
    pub case_id: CaseId,
    /// The checklist item it is filed under.
    pub item_key: Option<String>,
    /// Upload or video frame.
    pub source: DocumentSource,
    /// The call the frame was captured in.
    pub call_id: Option<uuid::Uuid>,
    /// Declared format.
    pub format: DocumentFormat,
    /// Declared total size (bytes).
    pub size: i64,
    /// Bytes received so far (the upload offset).
    pub received: i64,
    /// SHA-256 (hex) once finished.
    pub sha256: Option<String>,
    /// State.
    pub status: DocumentStatus,
    /// Why it was marked invalid.
    pub invalid_reason: Option<String>,
    /// Who created it.
    pub created_by: uuid::Uuid,
    /// Created (Unix ms).
    pub created_at: Millis,
    /// Finished (Unix ms).
    pub finished_at: Option<Millis>,
}

impl Document {
    /// What the checklist sees of it.
    pub fn fact(&self) -> DocumentFact {
        DocumentFact { item_key: self.item_key.clone(), status: self.status, invalid_reason: self.invalid_reason.clone() }
    }
}

/// What a rating is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RatingSubject {
    /// A case.
    Case(CaseId),
    /// A call (calls land in their own issue; stored unconstrained).
    Call(uuid::Uuid),
}

/// A resident's rating of a case or call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rating {
    /// Id.
    pub id: RatingId,
    /// Who rated.
    pub resident_id: super::ids::ResidentId,
    /// What.
    pub subject: RatingSubject,
    /// The matter (for a case), for reporting.
    pub matter_code: Option<String>,
    /// Level.
    pub level: RatingLevel,
    /// Tags.
    pub tags: Vec<String>,
    /// Comment.
    pub comment: Option<String>,
    /// When (Unix ms).
    pub created_at: Millis,
}

/// A supervisor follow-up of a low rating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUp {
    /// Id.
    pub id: FollowUpId,
    /// The rating.
    pub rating_id: RatingId,
    /// Opened (Unix ms).
    pub opened_at: Millis,
    /// Due by the end of this local date.
    pub due_on: time::Date,
    /// Due (Unix ms, end of `due_on`).
    pub due_at: Millis,
    /// Closed (Unix ms).
    pub closed_at: Option<Millis>,
    /// Closed by (supervisor).
    pub closed_by: Option<uuid::Uuid>,
    /// What was done.
    pub note: Option<String>,
}

/// Returns of one matter (supervisors track them to fix checklists and guidance).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReturnRate {
    /// The matter.
    pub matter_code: String,
    /// Cases handed in at least once.
    pub submitted: i64,
    /// Of those, cases returned at least once.
    pub returned: i64,
    /// Returns in all (a case may be returned more than once).
    pub returns: i64,
    /// `returned / submitted` (0 when nothing was submitted).
    pub rate: f64,
}

impl ReturnRate {
    /// Builds a row, computing the rate.
    pub fn new(matter_code: String, submitted: i64, returned: i64, returns: i64) -> Self {
        let rate = if submitted > 0 { returned as f64 / submitted as f64 } else { 0.0 };
        ReturnRate { matter_code, submitted, returned, returns, rate }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn injury_matter() -> MatterSpec {
        serde_json::from_value(serde_json::json!({
            "code": "MI-900", "class": "medical_insurance", "name_zh": "医疗费用报销", "name_en": "Claim",
            "questions": [{"key": "is_injury", "label_zh": "外伤?", "label_en": "Injury?",
                "options": [{"value": "yes", "label_zh": "是", "label_en": "Yes"},
                            {"value": "no", "label_zh": "否", "label_en": "No"}]}],
            "checklist": [
                {"key": "id_card", "name_zh": "身份证", "name_en": "ID card", "requirement": {"kind": "required"}},
                {"key": "receipts", "name_zh": "票据", "name_en": "Receipts", "requirement": {"kind": "required"}},
                {"key": "photo", "name_zh": "照片", "name_en": "Photo", "requirement": {"kind": "optional"}},
                {"key": "injury_filing_form", "name_zh": "外伤备案申请表", "name_en": "Injury form",
                 "requirement": {"kind": "conditional", "question": "is_injury", "equals": "yes"}}
            ]
        }))
        .unwrap()
    }

    fn ready(item: &str) -> DocumentFact {
        DocumentFact { item_key: Some(item.into()), status: DocumentStatus::Ready, invalid_reason: None }
    }

    fn answers(pairs: &[(&str, &str)]) -> Answers {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_legal_transition_and_no_other() {
        use CaseAction as A;
        use CaseStatus as S;
        let legal = [
            (S::Draft, A::Submit, S::Submitted),
            (S::Submitted, A::Accept, S::Accepted),
            (S::Submitted, A::Return, S::Returned),
            (S::Submitted, A::Reject, S::Rejected),
            (S::Returned, A::Resubmit, S::Resubmitted),
            (S::Resubmitted, A::Accept, S::Accepted),
            (S::Resubmitted, A::Return, S::Returned),
            (S::Resubmitted, A::Reject, S::Rejected),
            (S::Accepted, A::Return, S::Returned),
            (S::Accepted, A::Approve, S::Approved),
            (S::Accepted, A::Reject, S::Rejected),
            (S::Approved, A::Complete, S::Completed),
            (S::Rejected, A::Complete, S::Completed),
        ];
        let actions = [A::Create, A::Submit, A::Resubmit, A::Accept, A::Return, A::Approve, A::Reject, A::Complete];
        let mut legal_count = 0;
        for from in S::ALL {
            for action in actions {
                let expected = legal.iter().find(|(f, a, _)| *f == from && *a == action).map(|t| t.2);
                match (next_status(from, action), expected) {
                    (Ok(to), Some(e)) => {
                        assert_eq!(to, e, "{from:?} {action:?}");
                        legal_count += 1;
                    }
                    (Err(CaseError::IllegalTransition { .. }), None) => {}
                    (got, e) => panic!("{from:?} {action:?}: got {got:?}, expected {e:?}"),
                }
            }
        }
        assert_eq!(legal_count, legal.len());
        // Completed is final.
        assert!(actions.iter().all(|a| next_status(S::Completed, *a).is_err()));
    }

    #[test]
    fn stored_names_round_trip() {
        for s in CaseStatus::ALL {
            assert_eq!(CaseStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(CaseAction::parse("return"), Some(CaseAction::Return));
        assert_eq!(CaseStatus::parse("nonsense"), None);
    }

    #[test]
    fn only_agents_review_and_residents_hand_in() {
        for a in [CaseAction::Accept, CaseAction::Return, CaseAction::Approve, CaseAction::Reject, CaseAction::Complete] {
            assert_eq!(a.allowed_roles(), &[Role::Agent]);
        }
        assert!(CaseAction::Submit.allowed_roles().contains(&Role::Resident));
        assert!(!CaseAction::Submit.allowed_roles().contains(&Role::Helper));
    }

    #[test]
    fn missing_required_items_and_unanswered_questions_are_listed_at_once() {
        let m = injury_matter();
        let r = evaluate(&m, &Answers::new(), &[ready("receipts")]);
        assert!(!r.complete);
        let keys: Vec<&str> = r.issues.iter().map(Issue::key).collect();
        assert_eq!(keys, ["is_injury", "id_card"]);
        let injury = r.items.iter().find(|i| i.key == "injury_filing_form").unwrap();
        assert_eq!(injury.state, ItemState::Undecided);
        let photo = r.items.iter().find(|i| i.key == "photo").unwrap();
        assert_eq!((photo.required, photo.state), (false, ItemState::NotNeeded));
    }

    #[test]
    fn a_conditional_item_is_required_only_when_its_answer_says_so() {
        let m = injury_matter();
        let docs = [ready("id_card"), ready("receipts")];
        let no = evaluate(&m, &answers(&[("is_injury", "no")]), &docs);
        assert!(no.complete, "{:?}", no.issues);
        let yes = evaluate(&m, &answers(&[("is_injury", "yes")]), &docs);
        assert!(!yes.complete);
        assert!(matches!(&yes.issues[..], [Issue::MissingDocument { item, .. }] if item == "injury_filing_form"));
        let mut docs = docs.to_vec();
        docs.push(ready("injury_filing_form"));
        assert!(evaluate(&m, &answers(&[("is_injury", "yes")]), &docs).complete);
    }

    #[test]
    fn an_invalid_document_does_not_count_and_is_reported_with_its_reason() {
        let m = injury_matter();
        let docs = [
            DocumentFact { item_key: Some("id_card".into()), status: DocumentStatus::Invalid, invalid_reason: Some("模糊".into()) },
            ready("receipts"),
            DocumentFact { item_key: Some("photo".into()), status: DocumentStatus::Uploading, invalid_reason: None },
        ];
        let r = evaluate(&m, &answers(&[("is_injury", "no")]), &docs);
        assert!(matches!(&r.issues[..], [Issue::InvalidDocument { item, reason, .. }] if item == "id_card" && reason == "模糊"));
        // An upload still in progress provides nothing.
        assert_eq!(r.items.iter().find(|i| i.key == "photo").unwrap().documents, 0);
    }

    #[test]
    fn accepting_an_incomplete_case_needs_a_written_reason() {
        let m = injury_matter();
        let r = evaluate(&m, &answers(&[("is_injury", "yes")]), &[ready("id_card"), ready("receipts")]);
        assert!(matches!(accept_gate(&r, None), Err(CaseError::ChecklistIncomplete(i)) if i.len() == 1));
        assert_eq!(accept_gate(&r, Some("ok")), Err(CaseError::OverrideReasonTooShort));
        assert!(matches!(accept_gate(&r, Some("   ")), Err(CaseError::Reason(_))));
        let overridden = accept_gate(&r, Some("原件已在视频中核验，备案表由医院直接传送")).unwrap();
        assert_eq!(overridden.len(), 1);
        let full = evaluate(&m, &answers(&[("is_injury", "no")]), &[ready("id_card"), ready("receipts")]);
        assert_eq!(accept_gate(&full, None), Ok(vec![]));
    }

    #[test]
    fn a_return_notice_merges_missing_and_invalid_items_once_each() {
        let m = injury_matter();
        let r = evaluate(&m, &answers(&[("is_injury", "yes")]), &[ready("id_card"), ready("receipts")]);
        let notice = return_notice(
            &m,
            &r,
            &[InvalidItem { item: "receipts".into(), reason: "票据金额不清".into() }],
        )
        .unwrap();
        let keys: Vec<&str> = notice.iter().map(Issue::key).collect();
        assert_eq!(keys, ["receipts", "injury_filing_form"]);
        let full = evaluate(&m, &answers(&[("is_injury", "no")]), &[ready("id_card"), ready("receipts")]);
        assert_eq!(return_notice(&m, &full, &[]), Err(CaseError::NothingToReturn));
        assert!(return_notice(&m, &full, &[InvalidItem { item: "nope".into(), reason: "x".into() }]).is_err());
    }

    #[test]
    fn answers_must_match_the_matters_questions() {
        let m = injury_matter();
        validate_answers(&m, &answers(&[("is_injury", "yes")])).unwrap();
        assert!(validate_answers(&m, &answers(&[("is_injury", "maybe")])).is_err());
        assert!(validate_answers(&m, &answers(&[("age", "yes")])).is_err());
    }

    #[test]
    fn magic_bytes_decide_the_format() {
        assert_eq!(DocumentFormat::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(DocumentFormat::Jpeg));
        assert_eq!(DocumentFormat::sniff(b"\x89PNG\r\n\x1a\n...."), Some(DocumentFormat::Png));
        assert_eq!(DocumentFormat::sniff(b"%PDF-1.7"), Some(DocumentFormat::Pdf));
        assert_eq!(DocumentFormat::sniff(b"MZ\x90\x00"), None);
        assert_eq!(DocumentFormat::from_mime("IMAGE/JPEG; q=1"), Some(DocumentFormat::Jpeg));
        assert_eq!(DocumentFormat::from_mime("text/html"), None);
    }

    #[test]
    fn rating_levels_and_the_follow_up_threshold() {
        assert!(RatingLevel::try_from(0).is_err() && RatingLevel::try_from(6).is_err());
        assert!(RatingLevel::VeryDissatisfied.needs_follow_up());
        assert!(RatingLevel::Dissatisfied.needs_follow_up());
        assert!(!RatingLevel::Neutral.needs_follow_up());
        assert_eq!(RatingLevel::VerySatisfied.label_zh(), "非常满意");
        let l: RatingLevel = serde_json::from_str("2").unwrap();
        assert_eq!(l, RatingLevel::Dissatisfied);
        assert!(serde_json::from_str::<RatingLevel>("7").is_err());
    }

    #[test]
    fn feedback_limits() {
        validate_feedback(&["态度好".into()], Some(&"好".repeat(500))).unwrap();
        assert!(validate_feedback(&[], Some(&"好".repeat(501))).is_err());
        assert!(validate_feedback(&["a".into(), "a".into()], None).is_err());
        assert!(validate_feedback(&vec!["x".to_string(); 11], None).is_err());
    }

    #[test]
    fn working_days_skip_weekends_and_holidays() {
        let cal = WorkCalendar::default();
        // Monday 2026-11-30 + 15 working days = Monday 2026-12-21.
        assert_eq!(cal.add_working_days(date!(2026 - 11 - 30), 15), date!(2026 - 12 - 21));
        // From a Friday, one working day is the Monday.
        assert_eq!(cal.add_working_days(date!(2026 - 12 - 04), 1), date!(2026 - 12 - 07));
        // From a Saturday, one working day is the Monday.
        assert_eq!(cal.add_working_days(date!(2026 - 12 - 05), 1), date!(2026 - 12 - 07));
        // A holiday on the Monday pushes it to Tuesday; a make-up Saturday counts.
        let cal = WorkCalendar {
            holidays: [date!(2026 - 12 - 07)].into_iter().collect(),
            extra_workdays: [date!(2026 - 12 - 05)].into_iter().collect(),
        };
        assert_eq!(cal.add_working_days(date!(2026 - 12 - 04), 1), date!(2026 - 12 - 05));
        assert_eq!(cal.add_working_days(date!(2026 - 12 - 04), 2), date!(2026 - 12 - 08));
        // Bounded even when every day is a holiday.
        let all_off = WorkCalendar {
            holidays: (0..4000).filter_map(|i| date!(2026 - 01 - 01).checked_add(time::Duration::days(i))).collect(),
            extra_workdays: Default::default(),
        };
        let _ = all_off.add_working_days(date!(2026 - 01 - 01), 1);
    }

    #[test]
    fn deadlines_end_with_the_local_day() {
        // 2026-11-30 10:00 +08:00.
        let t0 = 1_796_004_000_000;
        assert_eq!(local_date(t0), date!(2026 - 11 - 30));
        // Local midnight (16:00 UTC) starts the 1st in Hangzhou.
        assert_eq!(local_date(t0 + 14 * 3_600_000 - 1), date!(2026 - 11 - 30));
        assert_eq!(local_date(t0 + 14 * 3_600_000), date!(2026 - 12 - 01));
        let (due, at) = follow_up_due(t0, 15, &WorkCalendar::default());
        assert_eq!(due, date!(2026 - 12 - 21));
        assert_eq!(local_date(at), due);
        assert_eq!(local_date(at + 1), date!(2026 - 12 - 22));
    }
}
