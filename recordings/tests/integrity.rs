//! Tamper evidence: each kind of tampering is reported by `verify` with the
//! right problem, and clean data verifies clean.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use recordings::verify::{ChainNotice, RecordingNotice};
use recordings::{
    recover_interrupted, verify_chain, verify_recording, Chain, ChainError, ChainHead,
    ChainProblem, Codec, DeletionReason, FinishedRecording, FsStore, Keyring, Manifest,
    ParticipantRole, RecordingId, RecordingProblem, RecordingStatus, Store,
};

fn keyring() -> Keyring {
    Keyring::new([signer().verifying_key()])
}

fn participants() -> Vec<SimParticipant> {
    vec![
        SimParticipant::new(
            pid(1),
            ParticipantRole::Resident,
            Some(Source::video(Codec::Vp8, 0x11, 1, 1)),
            Some(Source::opus(0x12, 1, 1)),
        ),
        SimParticipant::new(
            pid(2),
            ParticipantRole::Agent,
            None,
            Some(Source::opus(0x22, 1, 1)),
        ),
    ]
}

/// Records `seconds` of a two-party call with 2 s segments; returns the call unfinished.
fn record(root: &Path, recording: RecordingId, seconds: u64) -> Call {
    let mut call = Call::start_as(
        root,
        recording,
        |c| c.media.segment_duration = std::time::Duration::from_secs(2),
        participants(),
    );
    call.run_until(seconds * 1000);
    call
}

struct Fixture {
    _dir: TestDir,
    root: PathBuf,
    store: Arc<dyn Store>,
    chain: Chain,
    finished: Vec<FinishedRecording>,
}

/// Two sealed recordings (ids 1 and 2) in one chain.
fn fixture(name: &str) -> Fixture {
    let dir = TestDir::new(name);
    let root = dir.path().to_owned();
    let store: Arc<dyn Store> = Arc::new(FsStore::new(&root));
    let mut chain = Chain::open(store.clone(), signer()).expect("open chain");
    let mut finished = Vec::new();
    for n in 1..=2 {
        let mut call = record(&root, rid(n), 7);
        let f = call.rec.finish(at_ms(7_100)).expect("finish");
        chain.seal(&f, at_ms(7_200)).expect("seal");
        finished.push(f);
    }
    Fixture {
        _dir: dir,
        root,
        store,
        chain,
        finished,
    }
}

fn manifest_of(store: &dyn Store, id: RecordingId) -> Manifest {
    let bytes = store
        .get(&recordings::manifest::RecordingKeys::new(id).manifest)
        .expect("get")
        .expect("manifest");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    serde_json::from_value(v["manifest"].clone()).expect("manifest")
}

fn path(f: &Fixture, key: &recordings::ObjectKey) -> PathBuf {
    FsStore::new(&f.root).path(key)
}

fn only_problem(report: &recordings::RecordingReport) -> &RecordingProblem {
    assert_eq!(report.problems.len(), 1, "{report}");
    &report.problems[0]
}

#[test]
fn untouched_recordings_and_chain_verify_clean() {
    let f = fixture("clean");
    let report = verify_chain(f.store.as_ref(), &keyring(), f.chain.head());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.entries, 2);
    assert_eq!(report.recordings.len(), 2);
    for r in &report.recordings {
        assert_eq!(r.status, Some(RecordingStatus::Complete));
        assert!(r.segments_listed >= 6, "{r}");
        assert_eq!(r.segments_ok, r.segments_listed);
    }
    assert_eq!(
        f.finished[0].segments as usize,
        report.recordings[0].segments_listed
    );
    let json = serde_json::to_value(&report).expect("report serializes");
    assert_eq!(json["problems"], serde_json::json!([]));
    assert!(format!("{report}").contains("chain: OK"));
}

#[test]
fn flipping_one_byte_of_a_segment_is_reported_as_a_hash_mismatch_of_that_segment() {
    let f = fixture("flip");
    let m = manifest_of(f.store.as_ref(), rid(1));
    let victim = &m.segments[2];
    let p = path(&f, &victim.file);
    let mut bytes = std::fs::read(&p).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&p, &bytes).expect("write");

    let report = verify_recording(f.store.as_ref(), &keyring(), rid(1));
    match only_problem(&report) {
        RecordingProblem::SegmentHashMismatch {
            file,
            index,
            participant,
            expected_sha256,
            actual_sha256,
            expected_size,
            actual_size,
        } => {
            assert_eq!(file, &victim.file);
            assert_eq!(*index, victim.index);
            assert_eq!(*participant, victim.participant);
            assert_eq!(expected_sha256, &victim.sha256);
            assert_ne!(expected_sha256, actual_sha256);
            assert_eq!(expected_size, actual_size);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(report.segments_ok, report.segments_listed - 1);
    let chain = verify_chain(f.store.as_ref(), &keyring(), f.chain.head());
    assert!(!chain.is_ok());
    assert!(
        chain.problems.is_empty(),
        "the chain itself is intact: {chain}"
    );
    assert!(format!("{chain}").contains("was altered"));
}

#[test]
fn deleting_a_segment_is_reported_as_missing() {
    let f = fixture("delete-segment");
    let m = manifest_of(f.store.as_ref(), rid(2));
    let victim = &m.segments[1];
    std::fs::remove_file(path(&f, &victim.file)).expect("remove");
    let report = verify_recording(f.store.as_ref(), &keyring(), rid(2));
    assert_eq!(
        only_problem(&report),
        &RecordingProblem::SegmentMissing {
            participant: victim.participant,
            index: victim.index,
            file: victim.file.clone()
        }
    );
}

#[test]
fn swapping_two_segments_is_reported_as_swapped() {
    let f = fixture("swap");
    let m = manifest_of(f.store.as_ref(), rid(1));
    let (a, b) = (
        &m.segments_of(pid(1)).next().expect("first").file,
        &m.segments_of(pid(1)).nth(1).expect("second").file,
    );
    let (pa, pb) = (path(&f, a), path(&f, b));
    let tmp = pa.with_extension("tmp");
    std::fs::rename(&pa, &tmp).expect("rename");
    std::fs::rename(&pb, &pa).expect("rename");
    std::fs::rename(&tmp, &pb).expect("rename");
    let report = verify_recording(f.store.as_ref(), &keyring(), rid(1));
    assert_eq!(
        only_problem(&report),
        &RecordingProblem::SegmentsSwapped {
            first: a.clone(),
            second: b.clone()
        }
    );
    assert!(format!("{report}").contains("are swapped"));
}

#[test]
fn a_segment_overwritten_with_a_copy_of_another_is_reported_as_misplaced() {
    let f = fixture("misplaced");
    let m = manifest_of(f.store.as_ref(), rid(1));
    let (a, b) = (&m.segments[0].file, &m.segments[3].file);
    std::fs::copy(path(&f, a), path(&f, b)).expect("copy");
    let report = verify_recording(f.store.as_ref(), &keyring(), rid(1));
    assert_eq!(
        only_problem(&report),
        &RecordingProblem::SegmentMisplaced {
            file: b.clone(),
            holds_content_of: a.clone()
        }
    );
}

#[test]
fn an_extra_file_in_a_recording_is_reported() {
    let f = fixture("extra");
    let m = manifest_of(f.store.as_ref(), rid(1));
    let extra = m.segments[0]
        .file
        .as_str()
        .replace("000001.webm", "000099.webm");
    std::fs::copy(path(&f, &m.segments[0].file), f.root.join(&extra)).expect("copy");
    let report = verify_recording(f.store.as_ref(), &keyring(), rid(1));
    assert_eq!(
        only_problem(&report),
        &RecordingProblem::UnexpectedFile {
            file: recordings::ObjectKey::parse(extra).expect("key")
        }
    );
}

/// Rewrites `manifest.json` of `id` through `edit` on its JSON value.
fn edit_manifest_file(f: &Fixture, id: RecordingId, edit: impl FnOnce(&mut serde_json::Value)) {
    let key = recordings::manifest::RecordingKeys::new(id).manifest;
    let bytes = f.store.get(&key).expect("get").expect("manifest");
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    edit(&mut v);
    f.store
        .put(&key, &serde_json::to_vec(&v).expect("json"))
        .expect("put");
}

#[test]
fn editing_the_manifest_breaks_its_signature_and_its_chain_seal() {
    let f = fixture("edit-manifest");
    // hide a segment: drop it from the manifest and delete the file
    let m = manifest_of(f.store.as_ref(), rid(1));
    let victim = m.segments.last().expect("segment").clone();
    std::fs::remove_file(path(&f, &victim.file)).expect("remove");
    edit_manifest_file(&f, rid(1), |v| {
        v["manifest"]["segments"]
            .as_array_mut()
            .expect("segments")
            .pop();
    });
    let report = verify_recording(f.store.as_ref(), &keyring(), rid(1));
    // (re-serializing through serde_json::Value also sorted the keys)
    assert_eq!(
        report.problems,
        vec![
            RecordingProblem::SignatureInvalid {
                key_id: signer().key_id()
            },
            RecordingProblem::ManifestNotCanonical
        ],
        "{report}"
    );
    let chain = verify_chain(f.store.as_ref(), &keyring(), f.chain.head());
    assert!(
        matches!(
            chain.problems.as_slice(),
            [ChainProblem::ManifestHashMismatch { seq: 0, recording_id, .. }] if *recording_id == rid(1)
        ),
        "{chain}"
    );
}

#[test]
fn a_forged_manifest_signature_is_reported() {
    let f = fixture("forged");
    // an attacker edits and re-signs with their own key
    let attacker = other_signer();
    let mut m = manifest_of(f.store.as_ref(), rid(1));
    m.segments.pop();
    let canonical = String::from_utf8(m.to_canonical_json()).expect("utf-8");
    let forged = serde_json::json!({
        "algorithm": "ed25519",
        "key_id": attacker.key_id().to_string(),
        "signature": hex_sig(&attacker, &canonical),
    });
    let key = recordings::manifest::RecordingKeys::new(rid(1)).manifest;
    let file = format!("{{\"manifest\":{canonical},\"signature\":{forged}}}");
    f.store.put(&key, file.as_bytes()).expect("put");
    let report = verify_recording(f.store.as_ref(), &keyring(), rid(1));
    assert!(
        report
            .problems
            .contains(&RecordingProblem::UnknownSigningKey {
                key_id: attacker.key_id()
            }),
        "{report}"
    );

    // ... or claims the server's key id with a signature it made itself
    let claimed = serde_json::json!({
        "algorithm": "ed25519",
        "key_id": signer().key_id().to_string(),
        "signature": hex_sig(&attacker, &canonical),
    });
    let file = format!("{{\"manifest\":{canonical},\"signature\":{claimed}}}");
    f.store.put(&key, file.as_bytes()).expect("put");
    let report = verify_recording(f.store.as_ref(), &keyring(), rid(1));
    assert!(
        report
            .problems
            .contains(&RecordingProblem::SignatureInvalid {
                key_id: signer().key_id()
            }),
        "{report}"
    );
    // the dropped segment's file is still there and now unlisted
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, RecordingProblem::UnexpectedFile { .. })),
        "{report}"
    );
}

/// Signs like the server would, with another key (the domain prefix is public).
fn hex_sig(signer: &recordings::Signer, canonical: &str) -> String {
    use ed25519_dalek::Signer as _;
    let _ = signer;
    let key = ed25519_dalek::SigningKey::from_bytes(&[43; 32]);
    let mut msg = b"recordings/manifest/v1\0".to_vec();
    msg.extend_from_slice(canonical.as_bytes());
    key.sign(&msg)
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn rolling_a_recording_back_to_an_earlier_signed_manifest_is_caught_by_the_chain() {
    let dir = TestDir::new("rollback");
    let root = dir.path();
    let store: Arc<dyn Store> = Arc::new(FsStore::new(root));
    let key = recordings::manifest::RecordingKeys::new(rid(1)).manifest;
    let mut call = record(root, rid(1), 3);
    let early = store.get(&key).expect("get").expect("early manifest");
    let early_manifest = manifest_of(store.as_ref(), rid(1));
    call.run_until(7_000);
    let done = call.rec.finish(at_ms(7_100)).expect("finish");
    let mut chain = Chain::open(store.clone(), signer()).expect("chain");
    chain.seal(&done, at_ms(7_200)).expect("seal");
    // put back the earlier (validly signed) manifest and delete later segments
    let late_manifest = manifest_of(store.as_ref(), rid(1));
    for s in &late_manifest.segments {
        if !early_manifest.segments.contains(s) {
            std::fs::remove_file(FsStore::new(root).path(&s.file)).expect("remove");
        }
    }
    store.put(&key, &early).expect("put");
    let report = verify_chain(store.as_ref(), &keyring(), chain.head());
    assert!(
        matches!(
            report.problems.as_slice(),
            [ChainProblem::ManifestHashMismatch { seq: 0, .. }]
        ),
        "{report}"
    );
}

fn chain_lines(f: &Fixture) -> Vec<String> {
    let bytes = f
        .store
        .get(&recordings::ObjectKey::parse("chain.jsonl").expect("key"))
        .expect("get")
        .expect("chain");
    String::from_utf8(bytes)
        .expect("utf-8")
        .lines()
        .map(str::to_owned)
        .collect()
}

fn put_chain(f: &Fixture, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    f.store
        .put(
            &recordings::ObjectKey::parse("chain.jsonl").expect("key"),
            text.as_bytes(),
        )
        .expect("put");
}

/// Three entries: seal 1, seal 2, seal 3.
fn fixture3(name: &str) -> Fixture {
    let mut f = fixture(name);
    let mut call = record(&f.root, rid(3), 3);
    let done = call.rec.finish(at_ms(3_100)).expect("finish");
    f.chain.seal(&done, at_ms(3_200)).expect("seal");
    f
}

#[test]
fn altering_a_chain_entry_breaks_its_signature_and_the_next_link() {
    let f = fixture3("chain-alter");
    let mut lines = chain_lines(&f);
    // change the recorded segment count of entry 1
    let mut v: serde_json::Value = serde_json::from_str(&lines[1]).expect("json");
    v["entry"]["event"]["segments"] = serde_json::json!(1);
    lines[1] = serde_json::to_string(&v).expect("json");
    put_chain(&f, &lines);
    let report = verify_chain(f.store.as_ref(), &keyring(), f.chain.head());
    assert!(
        report
            .problems
            .contains(&ChainProblem::EntrySignatureInvalid {
                seq: 1,
                key_id: signer().key_id()
            }),
        "{report}"
    );
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            ChainProblem::LinkBroken {
                seq: 2,
                line: 3,
                ..
            }
        )),
        "{report}"
    );
    assert!(format!("{report}").contains("chain link broken at entry 2"));
}

#[test]
fn removing_a_chain_entry_is_reported_where_it_happened() {
    let f = fixture3("chain-remove");
    let mut lines = chain_lines(&f);
    lines.remove(1);
    put_chain(&f, &lines);
    let report = verify_chain(f.store.as_ref(), &keyring(), f.chain.head());
    assert!(
        report.problems.contains(&ChainProblem::SequenceMismatch {
            line: 2,
            expected: 1,
            found: 2
        }),
        "{report}"
    );
    assert!(
        report.problems.iter().any(|p| matches!(
            p,
            ChainProblem::LinkBroken {
                seq: 2,
                line: 2,
                ..
            }
        )),
        "{report}"
    );
    // recording 2 is still on disk but no longer sealed
    assert!(report.problems.iter().any(|p| matches!(p, ChainProblem::RecordingNotInChain { recording_id, .. } if *recording_id == rid(2))), "{report}");
}

#[test]
fn reordering_chain_entries_is_reported() {
    let f = fixture3("chain-reorder");
    let mut lines = chain_lines(&f);
    lines.swap(0, 1);
    put_chain(&f, &lines);
    let report = verify_chain(f.store.as_ref(), &keyring(), f.chain.head());
    assert!(
        report.problems.contains(&ChainProblem::SequenceMismatch {
            line: 1,
            expected: 0,
            found: 1
        }),
        "{report}"
    );
    assert!(
        report.problems.contains(&ChainProblem::SequenceMismatch {
            line: 2,
            expected: 1,
            found: 0
        }),
        "{report}"
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, ChainProblem::LinkBroken { seq: 1, .. })),
        "{report}"
    );
}

#[test]
fn truncating_the_chain_is_caught_against_the_recorded_head() {
    let f = fixture3("chain-truncate");
    let head = f.chain.head().expect("head");
    let mut lines = chain_lines(&f);
    lines.pop();
    put_chain(&f, &lines);
    let report = verify_chain(f.store.as_ref(), &keyring(), Some(head));
    assert!(report.problems.iter().any(|p| matches!(p, ChainProblem::Truncated { expected, found: Some(ChainHead { seq: 1, .. }) } if *expected == head)), "{report}");
    // without the head, the cut-off recording still shows up as unknown to the chain
    let report = verify_chain(f.store.as_ref(), &keyring(), None);
    assert!(report.problems.iter().any(|p| matches!(p, ChainProblem::RecordingNotInChain { recording_id, .. } if *recording_id == rid(3))), "{report}");
}

#[test]
fn a_torn_last_chain_line_is_reported_and_blocks_appending() {
    let f = fixture("chain-torn");
    let mut lines = chain_lines(&f);
    let half = lines[1].len() / 2;
    lines[1].truncate(half);
    put_chain(&f, &lines);
    let report = verify_chain(f.store.as_ref(), &keyring(), None);
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, ChainProblem::EntryUnreadable { line: 2, .. })),
        "{report}"
    );
    assert!(matches!(
        Chain::open(f.store.clone(), signer()),
        Err(ChainError::Corrupt { line: 2, .. })
    ));
}

#[test]
fn deleting_a_whole_recording_without_a_tombstone_is_reported() {
    let f = fixture("delete-recording");
    std::fs::remove_dir_all(f.root.join(format!("recordings/{}", rid(1)))).expect("remove");
    let report = verify_chain(f.store.as_ref(), &keyring(), f.chain.head());
    assert_eq!(
        report.problems,
        vec![ChainProblem::RecordingMissing {
            seq: 0,
            recording_id: rid(1)
        }],
        "{report}"
    );
}

#[test]
fn deleting_a_recording_for_retention_leaves_a_tombstone_and_verifies_clean() {
    let mut f = fixture("retention");
    f.chain
        .delete_recording(
            rid(1),
            DeletionReason::RetentionExpired,
            "matter default: 180 days",
            at_ms(9_000),
        )
        .expect("delete");
    assert!(!f.root.join(format!("recordings/{}", rid(1))).exists());
    let report = verify_chain(f.store.as_ref(), &keyring(), f.chain.head());
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.entries, 3);
    assert_eq!(report.recordings.len(), 1);
    let last: serde_json::Value =
        serde_json::from_str(chain_lines(&f).last().expect("line")).expect("json");
    assert_eq!(last["entry"]["event"]["type"], "tombstone");
    assert_eq!(last["entry"]["event"]["reason"], "retention_expired");
    assert_eq!(
        last["entry"]["event"]["manifest_sha256"],
        f.finished[0].manifest_sha256.to_string()
    );
}

/// A store whose deletes fail after `deletes_left` successful ones (a store outage in the
/// middle of a deletion).
struct DeletesFailAfter {
    inner: FsStore,
    deletes_left: std::sync::atomic::AtomicI64,
}

impl Store for DeletesFailAfter {
    fn get(&self, key: &recordings::ObjectKey) -> Result<Option<Vec<u8>>, recordings::StoreError> {
        self.inner.get(key)
    }
    fn put(&self, key: &recordings::ObjectKey, bytes: &[u8]) -> Result<(), recordings::StoreError> {
        self.inner.put(key, bytes)
    }
    fn append(
        &self,
        key: &recordings::ObjectKey,
        bytes: &[u8],
    ) -> Result<(), recordings::StoreError> {
        self.inner.append(key, bytes)
    }
    fn list(
        &self,
        prefix: &recordings::ObjectKey,
    ) -> Result<Vec<recordings::ObjectKey>, recordings::StoreError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &recordings::ObjectKey) -> Result<(), recordings::StoreError> {
        if self
            .deletes_left
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            <= 0
        {
            return Err(recordings::StoreError {
                op: "delete",
                key: key.to_string(),
                source: std::io::Error::other("store unavailable"),
            });
        }
        self.inner.delete(key)
    }
}

#[test]
fn a_deletion_that_fails_part_way_is_completed_without_a_second_tombstone() {
    let f = fixture("delete-retry");
    let flaky = Arc::new(DeletesFailAfter {
        inner: FsStore::new(&f.root),
        deletes_left: 2.into(),
    });
    let mut chain = Chain::open(flaky.clone(), signer()).expect("open");
    let err = chain
        .delete_recording(
            rid(1),
            DeletionReason::RetentionExpired,
            "180 days",
            at_ms(9_000),
        )
        .expect_err("the store fails after two files");
    assert!(matches!(err, ChainError::Store(_)), "{err}");
    assert_eq!(
        chain_lines(&f).len(),
        3,
        "the tombstone was appended before the files went"
    );
    let head = chain.head().expect("head");
    let left = f
        .store
        .list(&recordings::ObjectKey::parse(format!("recordings/{}", rid(1))).expect("key"))
        .expect("list");
    assert!(!left.is_empty(), "files remain after the failure");

    // The next sweep retries: the files go, no second tombstone.
    flaky
        .deletes_left
        .store(i64::MAX, std::sync::atomic::Ordering::SeqCst);
    let again = chain
        .delete_recording(
            rid(1),
            DeletionReason::RetentionExpired,
            "180 days",
            at_ms(10_000),
        )
        .expect("the retry completes the deletion");
    assert_eq!(again, head, "the head is unchanged");
    assert_eq!(chain_lines(&f).len(), 3, "still one tombstone");
    assert!(
        !f.root.join(format!("recordings/{}", rid(1))).exists()
            || f.store
                .list(&recordings::ObjectKey::parse(format!("recordings/{}", rid(1))).expect("key"))
                .expect("list")
                .is_empty()
    );
    let report = verify_chain(f.store.as_ref(), &keyring(), chain.head());
    assert!(report.is_ok(), "{report}");
    assert!(report.notices.is_empty(), "no files remain: {report}");
}

#[test]
fn a_tombstone_whose_files_remain_is_a_notice_not_a_problem() {
    let mut f = fixture("tombstone-remains");
    // copy the files aside, delete, and put them back (an incomplete deletion)
    let dir = f.root.join(format!("recordings/{}", rid(2)));
    let backup = f.root.join("backup");
    std::fs::rename(&dir, &backup).expect("move");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(backup.join("manifest.json"), dir.join("manifest.json")).expect("copy");
    f.chain
        .delete_recording(rid(2), DeletionReason::LegalOrder, "order 17", at_ms(9_000))
        .expect("delete");
    std::fs::remove_dir_all(&dir).ok();
    std::fs::rename(&backup, &dir).expect("restore");
    let report = verify_chain(f.store.as_ref(), &keyring(), f.chain.head());
    assert!(report.is_ok(), "{report}");
    assert!(report.notices.iter().any(|n| matches!(n, ChainNotice::TombstonedFilesRemain { seq: 2, recording_id } if *recording_id == rid(2))));
}

#[test]
fn a_recording_copied_in_under_another_id_is_reported() {
    let f = fixture("inject");
    let src = f.root.join(format!("recordings/{}", rid(1)));
    let dst = f.root.join(format!("recordings/{}", rid(50)));
    copy_dir(&src, &dst);
    let report = verify_chain(f.store.as_ref(), &keyring(), f.chain.head());
    assert!(
        report
            .problems
            .contains(&ChainProblem::RecordingNotInChain {
                recording_id: rid(50),
                status: Some(RecordingStatus::Complete)
            }),
        "{report}"
    );
    let r = report
        .recordings
        .iter()
        .find(|r| r.recording_id == rid(50))
        .expect("report");
    assert!(
        r.problems
            .contains(&RecordingProblem::ManifestForOtherRecording { found: rid(1) }),
        "{r}"
    );
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read dir") {
        let e = e.expect("entry");
        let to = dst.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).expect("copy");
        }
    }
}

#[test]
fn a_killed_writer_leaves_finished_segments_playable_and_verifiable_and_recovery_seals_it() {
    let dir = TestDir::new("killed");
    let root = dir.path();
    let store: Arc<dyn Store> = Arc::new(FsStore::new(root));
    let call = record(root, rid(1), 7);
    // SIGKILL: nothing more runs; the open files are simply abandoned.
    drop(call);

    let report = verify_recording(store.as_ref(), &keyring(), rid(1));
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.status, Some(RecordingStatus::Recording));
    assert!(report.segments_listed >= 4, "{report}");
    let parts: Vec<_> = report
        .notices
        .iter()
        .map(|n| match n {
            RecordingNotice::UnfinishedSegment { file } => file.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(
        !parts.is_empty(),
        "the segment being written is left as .part"
    );
    // finished segments are complete, seekable files
    let m = manifest_of(store.as_ref(), rid(1));
    for s in &m.segments {
        let w = read_webm(&std::fs::read(FsStore::new(root).path(&s.file)).expect("file"));
        assert!(w.segment_size_known && w.duration_ms.is_some() && !w.cues.is_empty());
    }
    // even the unfinished one parses up to its last complete cluster
    for p in &parts {
        let bytes = std::fs::read(FsStore::new(root).path(p)).expect("part");
        if !bytes.is_empty() {
            let w = read_webm(&bytes);
            assert!(!w.segment_size_known && w.duration_ms.is_none());
        }
    }
    if let Some(ffprobe) = ffprobe() {
        for s in &m.segments {
            let p = FsStore::new(root).path(&s.file);
            let (ok, _, err) = run(&ffprobe, &["-v", "error", p.to_str().expect("utf-8")]);
            assert!(ok && err.is_empty(), "{err}");
        }
    }

    let chain_report = verify_chain(store.as_ref(), &keyring(), None);
    assert!(chain_report.is_ok(), "{chain_report}");
    assert_eq!(
        chain_report.notices,
        vec![ChainNotice::Unsealed {
            recording_id: rid(1)
        }]
    );

    // restart: find what is unsealed, recover and seal it
    let mut chain = Chain::open(store.clone(), signer()).expect("chain");
    assert_eq!(chain.unsealed().expect("unsealed"), vec![rid(1)]);
    let recovered = recover_interrupted(root, rid(1), &signer(), &keyring()).expect("recover");
    assert_eq!(recovered.status, RecordingStatus::Interrupted);
    chain.seal(&recovered, at_ms(60_000)).expect("seal");
    assert!(chain.unsealed().expect("unsealed").is_empty());
    let chain_report = verify_chain(store.as_ref(), &keyring(), chain.head());
    assert!(chain_report.is_ok(), "{chain_report}");
    assert_eq!(
        chain_report.recordings[0].status,
        Some(RecordingStatus::Interrupted)
    );
    // recovering again changes nothing
    assert_eq!(
        recover_interrupted(root, rid(1), &signer(), &keyring()).expect("again"),
        recovered
    );
}

#[test]
fn a_crash_between_manifest_update_and_rename_is_repaired_by_recovery() {
    let dir = TestDir::new("rename-crash");
    let root = dir.path();
    let store: Arc<dyn Store> = Arc::new(FsStore::new(root));
    let call = record(root, rid(1), 5);
    drop(call);
    let m = manifest_of(store.as_ref(), rid(1));
    let last = m.segments.last().expect("segment");
    let fin = FsStore::new(root).path(&last.file);
    let part = PathBuf::from(format!("{}.part", fin.display()));
    // the writer died after listing the segment but before renaming it
    std::fs::rename(&fin, &part).expect("rename");
    let report = verify_recording(store.as_ref(), &keyring(), rid(1));
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, RecordingProblem::SegmentMissing { .. })),
        "{report}"
    );
    recover_interrupted(root, rid(1), &signer(), &keyring()).expect("recover");
    let report = verify_recording(store.as_ref(), &keyring(), rid(1));
    assert!(report.is_ok(), "{report}");
}

#[test]
fn recovery_refuses_a_manifest_with_a_bad_signature() {
    let f = fixture("recover-bad");
    edit_manifest_file(&f, rid(1), |v| {
        v["manifest"]["status"] = serde_json::json!("recording")
    });
    let err = recover_interrupted(&f.root, rid(1), &signer(), &keyring()).expect_err("must refuse");
    assert!(
        matches!(err, recordings::RecordError::BadManifest { .. }),
        "{err}"
    );
}

#[test]
fn a_recording_cannot_be_started_twice() {
    let f = fixture("twice");
    let err = recordings::Recording::start(
        recordings::RecordingConfig::new(&f.root),
        rid(1),
        call_id(1),
        T0,
        signer(),
    )
    .expect_err("exists");
    assert!(matches!(err, recordings::RecordError::AlreadyExists(id) if id == rid(1)));
}

#[test]
fn export_refuses_an_altered_segment() {
    let f = fixture("export-refuses");
    let m = manifest_of(f.store.as_ref(), rid(1));
    let p = path(&f, &m.segments[1].file);
    let mut bytes = std::fs::read(&p).expect("read");
    bytes[100] ^= 0x80;
    std::fs::write(&p, &bytes).expect("write");
    let err = recordings::export_participant(
        f.store.as_ref(),
        &keyring(),
        rid(1),
        m.segments[1].participant,
        std::io::Cursor::new(Vec::new()),
    )
    .expect_err("refused");
    assert!(
        matches!(err, recordings::ExportError::SegmentInvalid(ref k) if *k == m.segments[1].file),
        "{err}"
    );
    let other = Keyring::new([other_signer().verifying_key()]);
    let err = recordings::export_participant(
        f.store.as_ref(),
        &other,
        rid(2),
        pid(1),
        std::io::Cursor::new(Vec::new()),
    )
    .expect_err("refused");
    assert!(
        matches!(err, recordings::ExportError::ManifestInvalid(_)),
        "{err}"
    );
}
