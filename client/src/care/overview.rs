//! A person's record as a care worker sees it today: plan, medication list with today's
//! slots, journal by time across month documents, conflicts and open flags.

use super::*;

/// Picks the entities of one kind out of a document's registers, with their text field.
type EntityOf = fn(&Register) -> Option<(RecordId, Option<TextKey>)>;

/// Journal entries shown by [`overview`].
pub const RECENT_JOURNAL: usize = 20;

/// Everything `show` prints for `patient`: today's slots (local, at `utc_offset_minutes`) with
/// the signing list's statuses ([`super::round`]), the rest of the record as it stands. Logged
/// as a read, and counts as this user viewing the person: the next [`super::handover`] lists
/// what others wrote after it.
pub fn overview(
    device: &Device,
    patient: &PatientId,
    clock: &Clock,
    utc_offset_minutes: i32,
) -> Result<Overview> {
    device.check_lease(clock.now)?;
    device.log_read(patient, "overview")?;
    let day = |hhmm: &str| {
        sync_core::model::round::slot_instant(
            &format!("{}T{hhmm}", clock.today),
            utc_offset_minutes,
        )
        .ok_or_else(|| ClientError::Invalid(format!("bad date {:?}", clock.today)))
    };
    let shift = sync_core::model::round::Shift {
        from: day("00:00")?,
        to: day("23:59")?,
        utc_offset_minutes,
    };
    let server = device.server_round()?;
    let month = clock.month()?;
    let last_month = if month.month() == 1 {
        Month::new(month.year() - 1, 12)?
    } else {
        Month::new(month.year(), month.month() - 1)?
    };
    device.with_repo(|repo| {
        let stored: BTreeSet<DocumentId> = repo
            .document_ids()?
            .into_iter()
            .filter(|d| d.patient() == patient)
            .collect();
        if stored.is_empty() {
            return Err(ClientError::Invalid(format!(
                "no documents for {patient} on this device (sync first?)"
            )));
        }
        let display_name = display_name(repo, patient)?;
        let header = DocumentId::patient_header(patient);
        let plan = DocumentId::care_plan(patient);
        let meds = DocumentId::medication(patient);
        let entities = |repo: &mut Repo<SqliteStore>,
                        doc: &DocumentId,
                        want: EntityOf|
         -> Result<Vec<EntityShown>> {
            let d = repo.get(doc)?;
            Ok(d.registers()
                .iter()
                .filter_map(|r| want(r).map(|(id, key)| (r, id, key)))
                .map(|(r, id, key)| EntityShown {
                    id,
                    value: d.register(r).into(),
                    text: key.and_then(|k| d.text(&k)),
                })
                .collect())
        };
        let resuscitation = repo.get(&header)?.register(&Register::Resuscitation).into();
        let allergies = entities(repo, &header, |r| match r {
            Register::Allergy(id) => Some((id.clone(), None)),
            _ => None,
        })?;
        let risks = entities(repo, &header, |r| match r {
            Register::Risk(id) => Some((id.clone(), None)),
            _ => None,
        })?;
        let goals = entities(repo, &plan, |r| match r {
            Register::Goal(id) => Some((id.clone(), Some(TextKey::GoalDescription(id.clone())))),
            _ => None,
        })?;
        let interventions = entities(repo, &plan, |r| match r {
            Register::Intervention(id) => Some((
                id.clone(),
                Some(TextKey::InterventionDescription(id.clone())),
            )),
            _ => None,
        })?;
        let orders = entities(repo, &meds, |r| match r {
            Register::Order(id) => Some((id.clone(), Some(TextKey::OrderInstructions(id.clone())))),
            _ => None,
        })?;

        // By their time, whichever month's journal holds them: last month's, this month's,
        // and any later one (a note from a phone whose clock ran ahead lands in next month's).
        let mut journal = Vec::new();
        let journals: Vec<DocumentId> = stored
            .iter()
            .filter(|d| d.kind() == DocKind::Journal && d.month().is_some_and(|m| m >= last_month))
            .cloned()
            .collect();
        for doc in journals {
            let d = repo.get(&doc)?;
            // A mark is shown on the record it marks, not as an entry of its own.
            journal.extend(
                d.events()
                    .iter()
                    .filter(|(_, ev)| !matches!(ev.body, EventBody::EnteredInError { .. }))
                    .map(|(id, ev): (&RecordId, &Event)| {
                        let marks = marks_of(d, id);
                        JournalEntry {
                            document: doc.clone(),
                            id: id.clone(),
                            author: ev.author.clone(),
                            at: ev.at,
                            body: ev.body.clone(),
                            entered_in_error: !marks.is_empty(),
                            marks,
                        }
                    }),
            );
        }
        journal.sort_by(|a, b| (b.at, &b.id).cmp(&(a.at, &a.id)));
        journal.truncate(RECENT_JOURNAL);

        // Today's slots as the signing list shows them: one function, one status.
        let today = super::round::person_slots(
            repo,
            patient,
            display_name.as_ref(),
            &shift,
            clock.now,
            &server,
            &device.author().device,
        )?;
        let also = [DocumentId::administrations(patient, month)];
        let chart: Chart<'_> = repo.chart(patient, &also)?;
        let conflicts = chart
            .conflicts()
            .into_iter()
            .map(|c| ConflictShown::new(patient, c))
            .collect();
        let open_flags = chart
            .flags()
            .into_iter()
            .filter(|f| f.open)
            .map(|f| FlagShown::new(patient, f))
            .collect();
        // Viewing the page is viewing the person: the next handover starts here.
        super::seen::mark_viewed(repo, &device.author().user, patient, clock.now)?;
        Ok(Overview {
            patient: patient.clone(),
            display_name,
            resuscitation,
            allergies,
            risks,
            goals,
            interventions,
            orders,
            today,
            journal,
            conflicts,
            open_flags,
        })
    })
}
