//! Need-to-know: the units handling an open case of a citizen, from the case events. A unit
//! that handles a citizen's case (it received it, accepted it for processing, or had it
//! assigned or transferred to it) may read the citizen's record while the case is open
//! there, without a grant of its own: the key service follows `hcm.case.events` and releases
//! the key on that basis (`case:<id>`), recorded like any release. This is what lets a ward
//! handling a non-resident's case ("phi địa giới") reuse the data the citizen already gave.

use std::collections::{BTreeSet, HashMap};

use lienthong_contract::events::{AssignmentKind, CaseEvent, CaseEventKind};

use crate::pseudonym::Pseudonyms;

/// One case as far as need-to-know goes.
#[derive(Debug, Default)]
struct Case {
    applicant: String,
    units: BTreeSet<String>,
}

/// The open cases by applicant, with the units handling each.
#[derive(Debug, Default)]
pub struct OpenCases {
    cases: HashMap<String, Case>,
    by_applicant: HashMap<String, BTreeSet<String>>,
}

impl OpenCases {
    /// Fold one case event in. A case's applicant is keyed by pseudonym: a clear personal id
    /// (a producer that does not seal) is turned into one with `pseudonyms`.
    pub fn apply<S: AsRef<str>>(&mut self, event: &CaseEvent<S>, pseudonyms: &Pseudonyms) {
        let case = event.envelope.aggregate_id.as_ref();
        match &event.event {
            CaseEventKind::CaseSubmitted(s) => {
                let applicant = pseudonyms.of(s.applicant_id.as_ref());
                self.close(case);
                self.by_applicant
                    .entry(applicant.clone())
                    .or_default()
                    .insert(case.to_string());
                self.cases.insert(
                    case.to_string(),
                    Case {
                        applicant,
                        units: [s.receiving_unit.as_ref().to_string()]
                            .into_iter()
                            .collect(),
                    },
                );
            }
            CaseEventKind::CaseAccepted(a) => {
                if let Some(c) = self.cases.get_mut(case) {
                    c.units.insert(a.processing_unit.as_ref().to_string());
                }
            }
            CaseEventKind::CaseAssigned(a) => {
                if let Some(c) = self.cases.get_mut(case) {
                    if a.kind == AssignmentKind::Transferred {
                        c.units.remove(a.from_unit.as_ref());
                    }
                    c.units.insert(a.to_unit.as_ref().to_string());
                }
            }
            CaseEventKind::CaseCompleted(_)
            | CaseEventKind::CaseRejected(_)
            | CaseEventKind::CaseWithdrawn(_)
            | CaseEventKind::ResultReturned(_) => self.close(case),
            CaseEventKind::SupplementRequested(_) | CaseEventKind::SupplementReceived(_) => {}
        }
    }

    fn close(&mut self, case: &str) {
        if let Some(c) = self.cases.remove(case)
            && let Some(open) = self.by_applicant.get_mut(&c.applicant)
        {
            open.remove(case);
            if open.is_empty() {
                self.by_applicant.remove(&c.applicant);
            }
        }
    }

    /// An open case of the citizen `applicant` (a pseudonym) that `unit` handles now.
    pub fn handled_by(&self, applicant: &str, unit: &str) -> Option<&str> {
        self.by_applicant.get(applicant)?.iter().find_map(|case| {
            self.cases
                .get(case)
                .filter(|c| c.units.contains(unit))
                .map(|_| case.as_str())
        })
    }

    /// How many cases are open.
    pub fn open(&self) -> usize {
        self.cases.len()
    }
}
