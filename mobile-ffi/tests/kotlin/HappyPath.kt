// The happy path of the mobile-ffi library through its generated Kotlin bindings, against a real
// `nara-server` that run.sh starts and sets up (org "norr"; carers anna and bo, nurse nina, all
// assigned to patient p1). run.sh passes, in the environment:
//   NARA_ENROLL_ANNA, NARA_ENROLL_BO, NARA_ENROLL_NINA: enrollment strings (a one-time code, the
//   server and the pin of its key: nara:<code>@<host:port>#<pin>)
//   NARA_HOMES: a fresh directory for the devices' homes
//
// Three devices enroll with 32-byte store keys; the nurse writes an order; offline, both carers
// write notes and both give the same 08:00 dose; after syncing, the nurse's device must show
// both notes and one open double-dose flag whose evidence is the two administrations. Then
// alerts and corrections (an allergy warning on a dose, a note marked entered in error by two
// people at once), and the medication round: the signing list with an overdue slot and its
// flag, a dose refused after the carer's delegation was revoked, and a "when needed" dose
// refused, given anyway and flagged, with its follow-up.
// Exits 0 after printing "HappyPath: 1 passed, 0 failed", non-zero with a message on the first
// failed check or any exception.

import java.io.File
import java.security.MessageDigest
import java.time.LocalDate
import kotlin.system.exitProcess
import uniffi.mobile_ffi.FfiAllergyInput
import uniffi.mobile_ffi.FfiAllergyStatus
import uniffi.mobile_ffi.FfiCriticality
import uniffi.mobile_ffi.FfiDoseEffect
import uniffi.mobile_ffi.FfiEventBody
import uniffi.mobile_ffi.FfiOrderInput
import uniffi.mobile_ffi.FfiOutcome
import uniffi.mobile_ffi.FfiPrnRule
import uniffi.mobile_ffi.FfiRole
import uniffi.mobile_ffi.FfiRoundStatus
import uniffi.mobile_ffi.FfiSlotStatus
import uniffi.mobile_ffi.NaraDevice
import uniffi.mobile_ffi.NaraException

class CheckFailed(message: String) : Exception(message)

var checks = 0

fun check(condition: Boolean, what: () -> String) {
    if (!condition) throw CheckFailed(what())
    checks++
}

fun env(name: String): String =
    System.getenv(name)?.takeIf { it.isNotEmpty() } ?: throw CheckFailed("$name is not set (run through run.sh)")

/** The store key the app would keep in the platform keystore: 32 bytes, fixed per home here. */
fun keyOf(home: String): ByteArray = MessageDigest.getInstance("SHA-256").digest(home.toByteArray())

fun happyPath() {
    val homes = File(env("NARA_HOMES"))
    val today = LocalDate.now().toString()
    val slot = "${today}T08:00"

    fun enroll(user: String): NaraDevice {
        val home = File(homes, user).path
        val key = keyOf(home)
        check(key.size == 32) { "store key for $user is ${key.size} bytes" }
        return NaraDevice.enroll(home, env("NARA_ENROLL_${user.uppercase()}"), key, null, false)
    }

    val anna = enroll("anna")
    val bo = enroll("bo")
    val nina = enroll("nina")
    check(anna.enrollment().role == FfiRole.CARER) { "anna's role: ${anna.enrollment().role}" }
    check(bo.enrollment().role == FfiRole.CARER) { "bo's role: ${bo.enrollment().role}" }
    check(nina.enrollment().role == FfiRole.NURSE) { "nina's role: ${nina.enrollment().role}" }
    val pin = env("NARA_ENROLL_NINA").substringAfter('#')
    check(nina.enrollment().pin == "spki-sha256:$pin") { "nina pinned ${nina.enrollment().pin}" }

    // A store key that is not 32 bytes is refused, and a device reopens with its own key.
    try {
        NaraDevice.open(File(homes, "nina").path, ByteArray(31))
        check(false) { "a 31-byte store key was accepted" }
    } catch (e: NaraException.InvalidArgument) {
        checks++
    }
    NaraDevice.open(File(homes, "nina").path, keyOf(File(homes, "nina").path)).use { again ->
        check(again.enrollment() == nina.enrollment()) { "reopened nina: ${again.enrollment()}" }
    }

    // The nurse writes an order; the carers receive it.
    val order = uniffi.mobile_ffi.newId()
    val written = nina.writeOrder(
        "p1",
        order,
        FfiOrderInput(
            drug = "Metoprolol",
            strength = "50 mg",
            dose = "1 tablet",
            route = "oral",
            times = listOf("08:00", "20:00"),
            start = today,
            delegated = true,
        ),
        today,
    )
    check(written.created) { "the order was not created: $written" }
    // The order is delegated: each carer's dose needs the nurse's delegation.
    val offset = java.time.ZonedDateTime.now().offset.totalSeconds / 60
    val delegations = listOf("anna", "bo").associateWith { user ->
        nina.delegate(
            listOf("p1"), user, listOf("medication"),
            LocalDate.now().minusDays(30).toString(), LocalDate.now().plusDays(30).toString(),
            offset, today,
        ).single().delegation
    }
    nina.syncNow()
    anna.syncNow()
    bo.syncNow()

    // Offline: both carers write a note and both give the 08:00 dose.
    val pendingBefore = anna.pendingCount()
    anna.addNote("p1", "Anna: slept well.", today)
    bo.addNote("p1", "Bo: ate breakfast.", today)
    check(anna.pendingCount() > pendingBefore) { "anna's note is not pending upload" }
    val a = anna.give("p1", order, slot, FfiOutcome.GIVEN, null, false, today)
    val b = bo.give("p1", order, slot, FfiOutcome.GIVEN, null, false, today)
    check(a.slotStatus is FfiSlotStatus.Given) { "anna sees ${a.slotStatus}" }
    check(b.slotStatus is FfiSlotStatus.Given) { "bo sees ${b.slotStatus}" }
    check(a.record != b.record) { "both administrations have record ${a.record}" }

    // Sync everyone.
    val annaReport = anna.syncNow()
    check(annaReport.uploaded >= 2UL) { "anna uploaded ${annaReport.uploaded}" }
    check(annaReport.pending == 0UL) { "anna still has ${annaReport.pending} pending" }
    val boReport = bo.syncNow()
    check(boReport.pending == 0UL) { "bo still has ${boReport.pending} pending" }
    check(boReport.flagsRaised.any { it.patient == "p1" }) { "bo's sync raised no flag: $boReport" }
    nina.syncNow()

    // The nurse's device sees both notes ...
    check(nina.patients().any { it.patient == "p1" }) { "nina's patients: ${nina.patients()}" }
    val overview = nina.overview("p1", today, offset)
    val notes = overview.journal.mapNotNull { e ->
        (e.body as? FfiEventBody.Note)?.let { e.author.user to it.body }
    }.toSet()
    check(("anna" to "Anna: slept well.") in notes) { "nina misses anna's note: $notes" }
    check(("bo" to "Bo: ate breakfast.") in notes) { "nina misses bo's note: $notes" }

    // ... and one open double-dose flag on that slot, with both administrations as evidence.
    val flags = nina.flags("p1").filter { it.kind == "double-dose" && it.order == order && it.slot == slot }
    check(flags.size == 1) { "nina sees ${flags.size} double-dose flags: ${nina.flags("p1")}" }
    check(flags[0].open) { "the flag is not open: ${flags[0]}" }
    check(flags[0].evidence.toSet() == setOf(a.record, b.record)) {
        "flag evidence ${flags[0].evidence}, expected ${a.record} and ${b.record}"
    }
    check(overview.openFlags.any { it.order == order }) { "the overview shows no open flag: ${overview.openFlags}" }
    val slotStatus = overview.today.firstOrNull { it.order == order && it.slot == slot }?.status
    check(slotStatus is FfiRoundStatus.PossibleDoubleDose) { "nina sees slot $slot as $slotStatus" }

    // The carer who synced first sees the flag too once she syncs again.
    anna.syncNow()
    check(anna.flags("p1").count { it.kind == "double-dose" && it.order == order } == 1) {
        "anna sees ${anna.flags("p1")}"
    }

    alertsAndCorrections(anna, bo, nina, today, offset)
    medicationRound(anna, bo, nina, delegations.getValue("bo"), offset)

    for (device in listOf(anna, bo, nina)) device.close()
}

/** The medication round: the signing list, a dose refused without a valid delegation, and a
 *  "when needed" dose refused past its limit, given anyway and flagged, with its follow-up. */
fun medicationRound(anna: NaraDevice, bo: NaraDevice, nina: NaraDevice, boDelegation: String, offset: Int) {
    val today = LocalDate.now().toString()
    val start = LocalDate.now().minusDays(3).toString()
    val hourMs = 3_600_000L
    val past = java.time.LocalDateTime.now().minusHours(3)
        .format(java.time.format.DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm"))

    // A slot three hours ago with nothing recorded, and every phone synced since: overdue.
    val order = uniffi.mobile_ffi.newId()
    nina.writeOrder(
        "p1", order,
        FfiOrderInput(drug = "Metoprolol", strength = "50 mg", dose = "1 tablet", route = "oral",
            times = listOf(past.substring(11)), start = start, delegated = true),
        today,
    )
    for (device in listOf(nina, anna, bo)) device.syncNow()
    anna.refreshRound(offset)
    val now = System.currentTimeMillis()
    val round = anna.round("p1", now - 6 * hourMs, now + hourMs, offset)
    val slot = round.slots.firstOrNull { it.order == order }
    check(slot?.slot == past) { "no slot $past of $order in ${round.slots}" }
    check(slot?.status is FfiRoundStatus.Overdue) { "the slot is ${slot?.status}" }
    check(round.flags.any { it.id == "overdue/$order/$past" && it.open }) { "no overdue flag: ${round.flags}" }

    // Bo's delegation revoked: his phone refuses the dose and says why.
    nina.revokeDelegation("p1", boDelegation, today)
    nina.syncNow()
    bo.syncNow()
    try {
        bo.give("p1", order, past, FfiOutcome.GIVEN, null, false, today)
        check(false) { "bo gave a delegated dose after his delegation was revoked" }
    } catch (e: NaraException.InvalidArgument) {
        check(e.toString().contains("delegation")) { "refused, but not for the delegation: $e" }
    }

    // "When needed": at most 3 a day, 4 hours apart, followed up after an hour.
    val prn = uniffi.mobile_ffi.newId()
    nina.writeOrder(
        "p1", prn,
        FfiOrderInput(drug = "Paracetamol", strength = "500 mg", dose = "2 tablets", route = "oral",
            start = start, delegated = true,
            prn = FfiPrnRule(maxPerDay = 3u, minIntervalMinutes = 240u, followUpMinutes = 60u)),
        today,
    )
    nina.syncNow()
    anna.syncNow()
    val first = anna.giveWhenNeeded("p1", prn, null, offset, today)
    try {
        anna.giveWhenNeeded("p1", prn, null, offset, today)
        check(false) { "a second dose within 4 hours was accepted" }
    } catch (e: NaraException.InvalidArgument) {
        checks++
    }
    val anyway = anna.giveWhenNeeded("p1", prn, "pain after a fall", offset, today)
    check(anna.flags("p1").any { it.kind == "prn-limit" && it.evidence == listOf(anyway.record) }) {
        "no prn-limit flag: ${anna.flags("p1")}"
    }
    val followUps = anna.round("p1", now - 6 * hourMs, now + hourMs, offset).followUps
    check(followUps.map { it.administration }.toSet() == setOf(first.record, anyway.record)) { "follow-ups: $followUps" }
    anna.recordEffect("p1", first.record, FfiDoseEffect.GOOD, null, today)
    val done = anna.round("p1", now - 6 * hourMs, now + hourMs, offset).followUps.first { it.administration == first.record }
    check(done.effect == FfiDoseEffect.GOOD && !done.overdue) { "follow-up after the effect: $done" }
}

// ---- Alerts and corrections (issue 14) ----
// The nurse records a penicillin allergy and orders a penicillin; on a carer's phone, after
// sync, a dose warns (AllergyWarning, nothing written) and is recorded once confirmed. A note
// marked entered in error at once by its writer and by the nurse keeps both marks and shows once.
fun alertsAndCorrections(anna: NaraDevice, bo: NaraDevice, nina: NaraDevice, today: String, offset: Int) {
    val order = uniffi.mobile_ffi.newId()
    nina.writeOrder(
        "p1",
        order,
        FfiOrderInput(
            drug = "Fenoximetylpenicillin",
            strength = "1 g",
            dose = "1 tablet",
            route = "oral",
            times = listOf("08:00"),
            start = today,
            delegated = true,
        ),
        today,
    )
    val allergy = nina.recordAllergy(
        "p1",
        null,
        FfiAllergyInput(
            substance = "Penicillin",
            criticality = FfiCriticality.HIGH,
            reaction = "rash",
            status = FfiAllergyStatus.ACTIVE,
        ),
        false,
        today,
    )
    check(allergy.created) { "the allergy was not created: $allergy" }
    nina.syncNow()
    bo.syncNow()

    val slot = "${today}T08:00"
    val pending = bo.pendingCount()
    try {
        bo.give("p1", order, slot, FfiOutcome.GIVEN, null, false, today)
        check(false) { "a dose matching an allergy was recorded without a warning" }
    } catch (e: NaraException.AllergyWarning) {
        check(e.drug == "Fenoximetylpenicillin") { "warned about ${e.drug}" }
        check(e.allergies.any { "Penicillin" in it }) { "warned of ${e.allergies}" }
    }
    check(bo.pendingCount() == pending) { "the refused dose was written" }
    val given = bo.give("p1", order, slot, FfiOutcome.GIVEN, null, false, today, allergyConfirmed = true)
    check(given.slotStatus is FfiSlotStatus.Given) { "bo sees ${given.slotStatus}" }

    // Anna's note, marked entered in error by Anna and by the nurse, each offline.
    val note = anna.addNote("p1", "Anna: wrong person.", today)
    anna.syncNow()
    nina.syncNow()
    anna.correct("p1", note.record, "written on the wrong person", today)
    nina.correct("p1", note.record, "belongs to p2", today)
    anna.syncNow()
    nina.syncNow()
    anna.syncNow()
    for (device in listOf(anna, nina)) {
        val entries = device.overview("p1", today, offset).journal.filter { it.id == note.record }
        check(entries.size == 1) { "the note shows ${entries.size} times" }
        check(entries[0].enteredInError) { "the note is not marked: ${entries[0]}" }
        check(entries[0].marks.map { it.author.user }.toSet() == setOf("anna", "nina")) {
            "marks: ${entries[0].marks}"
        }
    }
}

fun main() {
    val code = try {
        happyPath()
        println("kotlin happy path: all $checks checks held")
        println("HappyPath: 1 passed, 0 failed")
        0
    } catch (e: CheckFailed) {
        System.err.println("kotlin happy path FAILED after $checks checks: ${e.message}")
        println("HappyPath: 0 passed, 1 failed")
        1
    } catch (e: Throwable) {
        System.err.println("kotlin happy path FAILED after $checks checks with an exception:")
        e.printStackTrace()
        println("HappyPath: 0 passed, 1 failed")
        1
    }
    // The library's runtime threads must not keep the JVM alive.
    exitProcess(code)
}
