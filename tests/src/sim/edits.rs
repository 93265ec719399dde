//! The devices' edits: a record saved on a device (and remembered for the "no write lost"
//! checker), and the random edit a step makes.

use super::*;

impl World {
    pub(super) fn save(
        &mut self,
        d: usize,
        doc: &DocumentId,
        author: &Author,
        f: impl FnOnce(&mut sync_core::model::Edit<'_>) -> Result<(), sync_core::ModelError>,
    ) -> bool {
        self.save_with(d, doc, author, None, f)
    }

    /// [`save`](Self::save), for an edit of a text that inserts `text`'s token.
    pub(super) fn save_with(
        &mut self,
        d: usize,
        doc: &DocumentId,
        author: &Author,
        text: Option<SavedRecord>,
        f: impl FnOnce(&mut sync_core::model::Edit<'_>) -> Result<(), sync_core::ModelError>,
    ) -> bool {
        let now = self.time();
        let dev = &mut self.devices[d];
        match dev.repo.change(doc, author, now, f) {
            Ok(saved) => {
                if let Some(h) = saved.change {
                    if std::env::var_os("SIM_TRACE").is_some() {
                        eprintln!("edit: device {d} saves {h} to {doc}");
                    }
                    dev.saved.insert((doc.clone(), h));
                    let mut records = SavedRecord::of(&mut dev.repo, doc, &h);
                    records.extend(text);
                    dev.saved_records.insert((doc.clone(), h), records);
                    self.stats.edits += 1;
                    if let Err(e) = dev.session.local_change(&mut dev.repo) {
                        panic!("local_change failed: {e}");
                    }
                }
                true
            }
            // The model refuses some random edits (a conflicted register, say), and a device
            // refuses edits for a patient it forgot: that is fine.
            Err(sync_core::RepoError::Model(_) | sync_core::RepoError::Forgotten { .. }) => false,
            Err(e) => panic!("store failed: {e}"),
        }
    }

    /// Device `d` saves a journal note with record id `id` about the first person (for tests
    /// of the checkers). Returns whether it was saved.
    pub fn save_note(&mut self, d: usize, id: &str, body: &str) -> bool {
        let doc = DocumentId::journal(&self.patients[0], november());
        let author = self.devices[d].author.clone();
        self.save(d, &doc, &author, |e| {
            e.record(
                rid(id),
                EventBody::Note {
                    body: body.into(),
                    corrects: None,
                },
            )
        })
    }

    pub(super) fn fresh_id(&mut self, d: usize) -> RecordId {
        self.devices[d].next_id += 1;
        rid(&format!("d{d}-{}", self.devices[d].next_id))
    }

    pub(super) fn random_edit(&mut self, d: usize) {
        let p = self.patients[self.rng.random_range(0..self.patients.len())].clone();
        let author = self.devices[d].author.clone();
        let id = self.fresh_id(d);
        let when = self.time();
        let slot = ["2026-11-24T08:00", "2026-11-24T20:00"][self.rng.random_range(0..2)];
        match self.rng.random_range(0..5) {
            0 => {
                let doc = DocumentId::journal(&p, november());
                self.save(d, &doc, &author, |e| {
                    e.record(
                        id,
                        EventBody::Note {
                            body: format!("note {when:?}"),
                            corrects: None,
                        },
                    )
                });
            }
            1 => {
                let meds = DocumentId::medication(&p);
                let revision = match self.devices[d]
                    .repo
                    .get(&meds)
                    .map(|m| m.register(&Register::Order(rid("o1"))))
                {
                    Ok(RegisterState::Value(v)) => v.id,
                    Ok(RegisterState::Conflict(mut c)) => c.remove(0).id,
                    _ => return,
                };
                let doc = DocumentId::administrations(&p, november());
                self.save(d, &doc, &author, |e| {
                    e.record(id, given("o1", &revision, slot, when))
                });
            }
            2 if author.role == Role::Nurse => {
                let meds = DocumentId::medication(&p);
                let reg = Register::Order(rid("o1"));
                let conflicted = matches!(
                    self.devices[d].repo.get(&meds).map(|m| m.register(&reg)),
                    Ok(RegisterState::Conflict(_))
                );
                let dose = ["1 tablet", "2 tablets", "half a tablet"][self.rng.random_range(0..3)];
                self.save(d, &meds, &author, |e| {
                    if conflicted {
                        e.resolve(id, reg, order(dose, when))
                    } else {
                        e.update(id, reg, order(dose, when))
                    }
                });
            }
            _ => {
                let plan = DocumentId::care_plan(&p);
                let key = TextKey::GoalDescription(rid("g1"));
                let Ok(Some(text)) = self.devices[d].repo.get(&plan).map(|d| d.text(&key)) else {
                    return;
                };
                // A token of its own, inserted between tokens (never inside one, nor inside the
                // text the goal was created with), so that the checker can tell whether this
                // edit's content survived: the simulation's edits of texts only insert.
                let chars: Vec<char> = text.chars().collect();
                let boundaries: Vec<usize> = (0..=chars.len())
                    .filter(|&i| i == 0 || i == chars.len() || chars[i - 1] == ']')
                    .collect();
                let pos = boundaries[self.rng.random_range(0..boundaries.len())];
                let token = format!(" [{id}]");
                let mut next: String = chars[..pos].iter().collect();
                next.push_str(&token);
                next.extend(chars[pos..].iter());
                let record = SavedRecord::Text(key.to_string(), token);
                self.save_with(d, &plan, &author, Some(record), |e| e.set_text(&key, &next));
            }
        }
    }
}
