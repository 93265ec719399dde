//! The record as the person receiving care reads it (issue 15, S15): their plan, current
//! medication, recent visits and notes, and "what matters to me", their own entries in the plan
//! ([`EventBody::WhatMatters`], written by [`Role::Person`](crate::ids::Role::Person) alone).
//! Pure: the caller gives the documents and the instant from which "recent" counts.

use crate::ids::{Author, DocKind, PatientId, RecordId, Timestamp};
use crate::model::document::{CareDocument, RegisterState};
use crate::model::records::{
    EventBody, GoalStatus, InterventionStatus, MedicationOrder, Register, RegisterValue, TextKey,
};

/// One of the person's own entries, with who wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonEntry {
    pub id: RecordId,
    pub author: Author,
    pub at: Timestamp,
    pub text: String,
}

/// A value as the person sees it: settled, or under review (a conflict a nurse has to resolve:
/// every candidate is shown, none is picked).
#[derive(Debug, Clone, PartialEq)]
pub enum Shown<T> {
    Value(T),
    UnderReview(Vec<T>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct GoalItem {
    pub title: String,
    pub status: GoalStatus,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InterventionItem {
    pub title: String,
    pub responsible_organisation: String,
    pub status: InterventionStatus,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Responsibility {
    pub organisation: String,
    pub person: Option<String>,
}

/// A journal entry of the last days: a note or a visit.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentEntry {
    pub id: RecordId,
    pub author: Author,
    pub at: Timestamp,
    pub kind: RecentKind,
    pub entered_in_error: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecentKind {
    Note(String),
    VisitStart,
    VisitStop,
}

/// What the person reads of their record.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PersonView {
    pub goals: Vec<Shown<GoalItem>>,
    pub interventions: Vec<Shown<InterventionItem>>,
    pub responsibility: Option<Shown<Responsibility>>,
    pub follow_up: Option<Shown<String>>,
    /// Current orders (started, not stopped by `today`).
    pub medication: Vec<Shown<MedicationOrder>>,
    /// Notes and visits at or after `since`, newest first.
    pub recent: Vec<RecentEntry>,
    /// "What matters to me", oldest first.
    pub what_matters: Vec<PersonEntry>,
}

/// The person's own entries in their care plan, oldest first.
pub fn what_matters(plan: &CareDocument) -> Vec<PersonEntry> {
    let mut out: Vec<PersonEntry> = plan
        .events()
        .iter()
        .filter_map(|(id, ev)| match &ev.body {
            EventBody::WhatMatters { text } => Some(PersonEntry {
                id: id.clone(),
                author: ev.author.clone(),
                at: ev.at,
                text: text.clone(),
            }),
            _ => None,
        })
        .collect();
    out.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    out
}

fn shown<T>(state: RegisterState, f: impl Fn(&RegisterValue) -> Option<T>) -> Option<Shown<T>> {
    match state {
        RegisterState::Unset => None,
        RegisterState::Value(v) => f(&v.revision.value).map(Shown::Value),
        RegisterState::Conflict(vs) => Some(Shown::UnderReview(
            vs.iter().filter_map(|v| f(&v.revision.value)).collect(),
        )),
    }
}

impl PersonView {
    /// The view of `patient` from their documents (others are ignored): notes and visits from
    /// `since` on, orders current on `today` (`YYYY-MM-DD`).
    pub fn of<'a>(
        patient: &PatientId,
        docs: impl IntoIterator<Item = &'a CareDocument>,
        since: Timestamp,
        today: &str,
    ) -> Self {
        let mut view = PersonView::default();
        for doc in docs.into_iter().filter(|d| d.id().patient() == patient) {
            view.add(doc, since, today);
        }
        view.finish()
    }

    /// Adds what `doc` holds for the view (for a caller that loads documents one at a time);
    /// [`PersonView::finish`] then puts the entries in order.
    pub fn add(&mut self, doc: &CareDocument, since: Timestamp, today: &str) {
        match doc.id().kind() {
            DocKind::CarePlan => self.plan(doc),
            DocKind::MedicationRequest => self.medication(doc, today),
            DocKind::Journal => self.journal(doc, since),
            DocKind::Patient | DocKind::MedicationAdministration => {}
        }
    }

    pub fn finish(mut self) -> Self {
        self.recent
            .sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
        self
    }

    fn plan(&mut self, doc: &CareDocument) {
        for register in doc.registers() {
            let state = doc.register(&register);
            match &register {
                Register::Goal(id) => {
                    let description = doc.text(&TextKey::GoalDescription(id.clone()));
                    self.goals.extend(shown(state, |v| match v {
                        RegisterValue::Goal { title, status } => Some(GoalItem {
                            title: title.clone(),
                            status: *status,
                            description: description.clone(),
                        }),
                        _ => None,
                    }));
                }
                Register::Intervention(id) => {
                    let description = doc.text(&TextKey::InterventionDescription(id.clone()));
                    self.interventions.extend(shown(state, |v| match v {
                        RegisterValue::Intervention {
                            title,
                            responsible_organisation,
                            status,
                            ..
                        } => Some(InterventionItem {
                            title: title.clone(),
                            responsible_organisation: responsible_organisation.clone(),
                            status: *status,
                            description: description.clone(),
                        }),
                        _ => None,
                    }));
                }
                Register::Responsibility => {
                    self.responsibility = shown(state, |v| match v {
                        RegisterValue::Responsibility {
                            organisation,
                            person,
                        } => Some(Responsibility {
                            organisation: organisation.clone(),
                            person: person.clone(),
                        }),
                        _ => None,
                    });
                }
                Register::FollowUp => {
                    self.follow_up = shown(state, |v| match v {
                        RegisterValue::FollowUp { date } => Some(date.clone()),
                        _ => None,
                    });
                }
                _ => {}
            }
        }
        self.what_matters = what_matters(doc);
    }

    fn medication(&mut self, doc: &CareDocument, today: &str) {
        for register in doc.registers() {
            if !matches!(register, Register::Order(_)) {
                continue;
            }
            let current = |o: &MedicationOrder| {
                o.start.as_str() <= today && o.stop.as_deref().is_none_or(|s| today <= s)
            };
            let order = shown(doc.register(&register), |v| match v {
                RegisterValue::Order(o) => Some(o.clone()),
                _ => None,
            });
            match order {
                Some(Shown::Value(o)) if !current(&o) => {}
                Some(o) => self.medication.push(o),
                None => {}
            }
        }
    }

    fn journal(&mut self, doc: &CareDocument, since: Timestamp) {
        for (id, ev) in doc.events() {
            if ev.at < since {
                continue;
            }
            let kind = match &ev.body {
                EventBody::Note { body, .. } => RecentKind::Note(body.clone()),
                EventBody::VisitStart { .. } => RecentKind::VisitStart,
                EventBody::VisitStop { .. } => RecentKind::VisitStop,
                _ => continue,
            };
            self.recent.push(RecentEntry {
                id: id.clone(),
                author: ev.author.clone(),
                at: ev.at,
                kind,
                entered_in_error: !doc.entered_in_error(id).is_empty(),
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::error::ModelError;
    use crate::ids::{DeviceId, DocumentId, Month, Role, UserId};

    fn author(user: &str, role: Role) -> Author {
        Author::new(
            UserId::new(user).unwrap(),
            role,
            DeviceId::new(format!("{user}-web")).unwrap(),
        )
    }

    fn rid(s: &str) -> RecordId {
        RecordId::new(s).unwrap()
    }

    fn wish(text: &str) -> EventBody {
        EventBody::WhatMatters { text: text.into() }
    }

    #[test]
    fn the_person_writes_what_matters_in_their_own_plan_and_nobody_else_does() {
        let p1 = PatientId::new("p1").unwrap();
        let mut plan = CareDocument::new(DocumentId::care_plan(&p1)).unwrap();
        let me = author("p1", Role::Person);
        plan.change(&me, Timestamp(10), |e| {
            e.record(rid("w-1"), wish("Att få vara ute i trädgården"))
        })
        .unwrap();
        let entries = what_matters(&plan);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].author, me);
        assert_eq!(entries[0].text, "Att få vara ute i trädgården");

        // Staff may not write the person's words, nor the person anything else.
        for staff in [Role::Nurse, Role::Carer, Role::Admin] {
            let err = plan
                .change(&author("nina", staff), Timestamp(11), |e| {
                    e.record(rid("w-2"), wish("written for them"))
                })
                .unwrap_err();
            assert!(
                matches!(err, ModelError::NotPermitted { .. }),
                "{staff:?}: {err}"
            );
        }
        let err = plan
            .change(&me, Timestamp(12), |e| {
                e.revise(
                    rid("f-1"),
                    Register::FollowUp,
                    vec![],
                    RegisterValue::FollowUp {
                        date: "2026-12-01".into(),
                    },
                )
            })
            .unwrap_err();
        assert!(matches!(err, ModelError::NotPermitted { .. }), "{err}");

        // Another person's plan is not theirs to write in.
        let p2 = PatientId::new("p2").unwrap();
        let mut other = CareDocument::new(DocumentId::care_plan(&p2)).unwrap();
        let err = other
            .change(&me, Timestamp(13), |e| e.record(rid("w-3"), wish("hello")))
            .unwrap_err();
        assert!(matches!(err, ModelError::NotPermitted { .. }), "{err}");

        // Empty words are refused; the entry belongs in the plan only.
        assert!(
            plan.change(&me, Timestamp(14), |e| e.record(rid("w-4"), wish("  ")))
                .is_err()
        );
        let mut journal =
            CareDocument::new(DocumentId::journal(&p1, Month::new(2026, 11).unwrap())).unwrap();
        assert!(
            journal
                .change(&me, Timestamp(15), |e| e.record(rid("w-5"), wish("x")))
                .is_err()
        );
    }

    #[test]
    fn the_persons_entry_is_taken_in_by_another_replica_with_its_author() {
        let p1 = PatientId::new("p1").unwrap();
        let id = DocumentId::care_plan(&p1);
        let mut a = CareDocument::new(id.clone()).unwrap();
        let mut b = CareDocument::new(id).unwrap();
        let me = author("p1", Role::Person);
        let local = a
            .change(&me, Timestamp(10), |e| {
                e.record(rid("w-1"), wish("Kaffe på morgonen"))
            })
            .unwrap();
        let outcome = b.apply_changes(vec![local.change.unwrap()]).unwrap();
        assert!(outcome.refused.is_empty());
        assert_eq!(what_matters(&b)[0].author, me);
    }

    #[test]
    fn the_person_view_shows_the_plan_current_medication_and_recent_notes() {
        let p1 = PatientId::new("p1").unwrap();
        let nurse = author("nina", Role::Nurse);
        let carer = author("anna", Role::Carer);
        let mut plan = CareDocument::new(DocumentId::care_plan(&p1)).unwrap();
        plan.change(&nurse, Timestamp(1), |e| {
            e.create(
                rid("g-1"),
                Register::Goal(rid("g-1")),
                RegisterValue::Goal {
                    title: "Gå till brevlådan".into(),
                    status: GoalStatus::Active,
                },
                Some("Med rollator, varje dag"),
            )?;
            e.revise(
                rid("r-1"),
                Register::Responsibility,
                vec![],
                RegisterValue::Responsibility {
                    organisation: "Region Norrbotten".into(),
                    person: Some("Dr Lind".into()),
                },
            )?;
            e.revise(
                rid("f-1"),
                Register::FollowUp,
                vec![],
                RegisterValue::FollowUp {
                    date: "2027-01-15".into(),
                },
            )
        })
        .unwrap();
        let mut journal =
            CareDocument::new(DocumentId::journal(&p1, Month::new(2026, 11).unwrap())).unwrap();
        journal
            .change(&carer, Timestamp(5), |e| {
                e.record(
                    rid("n-old"),
                    EventBody::Note {
                        body: "old".into(),
                        corrects: None,
                    },
                )
            })
            .unwrap();
        journal
            .change(&carer, Timestamp(50), |e| {
                e.record(
                    rid("n-new"),
                    EventBody::Note {
                        body: "Promenad".into(),
                        corrects: None,
                    },
                )
            })
            .unwrap();
        let view = PersonView::of(&p1, [&plan, &journal], Timestamp(20), "2026-11-30");
        assert_eq!(view.goals.len(), 1);
        assert!(
            matches!(&view.goals[0], Shown::Value(g) if g.description.as_deref() == Some("Med rollator, varje dag"))
        );
        assert!(
            matches!(&view.responsibility, Some(Shown::Value(r)) if r.organisation == "Region Norrbotten")
        );
        assert_eq!(view.follow_up, Some(Shown::Value("2027-01-15".into())));
        assert_eq!(view.recent.len(), 1, "only the last days");
        assert_eq!(view.recent[0].kind, RecentKind::Note("Promenad".into()));
    }
}
