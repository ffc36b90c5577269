//! RTP in, WebM segments out: structure, timing, reordering, wrap-around,
//! loss, malformed input and reconnects.

mod common;

use common::*;
use recordings::{
    verify_recording, Codec, FsStore, Keyring, ParticipantRole, RecordingEvent, RecordingStatus,
    TrackKind,
};

const VIDEO: u64 = 1;
const AUDIO: u64 = 2;

fn keyring() -> Keyring {
    Keyring::new([signer().verifying_key()])
}

fn two_party(video_codec: Codec) -> Vec<SimParticipant> {
    vec![
        SimParticipant::new(
            pid(1),
            ParticipantRole::Resident,
            // sequence numbers and timestamps start just before wrapping
            Some(Source::video(
                video_codec,
                0x1111,
                65_500,
                u32::MAX - 90_000,
            )),
            Some(Source::opus(0x2222, 65_530, u32::MAX - 48_000)),
        ),
        SimParticipant::new(
            pid(2),
            ParticipantRole::Agent,
            Some(Source::video(video_codec, 0x3333, 100, 7)),
            Some(Source::opus(0x4444, 200, 9)),
        ),
    ]
}

fn assert_monotonic(blocks: &[(u64, bool)], what: &str) {
    for w in blocks.windows(2) {
        assert!(
            w[1].0 > w[0].0,
            "{what}: block timestamps not increasing: {} then {}",
            w[0].0,
            w[1].0
        );
    }
}

#[test]
fn a_two_party_call_with_reordering_and_wraparound_gives_playable_ten_second_segments() {
    let dir = TestDir::new("two-party");
    let mut call = Call::start(dir.path(), |_| {}, two_party(Codec::Vp8));
    // every 7th packet is 15 ms late: it arrives after its successors
    call.network = Box::new(|_, _, n, _| Fate::Deliver {
        extra_delay_us: if n % 7 == 3 { 15_000 } else { 0 },
    });
    call.run_until(25_000);
    let finished = call.rec.finish(at_ms(25_100)).expect("finish");
    assert_eq!(finished.status, RecordingStatus::Complete);

    let manifest = call.rec.manifest().clone();
    let store = FsStore::new(dir.path());
    for p in [pid(1), pid(2)] {
        let segs: Vec<_> = manifest.segments_of(p).collect();
        assert_eq!(segs.len(), 3, "25 s at 10 s per segment: {segs:#?}");
        assert_eq!(
            segs.iter().map(|s| s.index).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let entry = manifest
            .participants
            .iter()
            .find(|e| e.id == p)
            .expect("participant entry");
        for t in &entry.tracks {
            assert_eq!(t.stats.lost, 0, "{t:?}");
            assert_eq!(t.stats.late, 0, "{t:?}");
            assert_eq!(t.stats.malformed, 0, "{t:?}");
            assert_eq!(t.stats.frames_dropped, 0, "{t:?}");
        }
        let mut total_video = 0;
        let mut total_audio = 0;
        let mut prev_end = 0u64;
        for s in &segs {
            let bytes = std::fs::read(store.path(&s.file)).expect("segment file");
            assert_eq!(bytes.len() as u64, s.size);
            let w = read_webm(&bytes);
            assert_eq!(w.doc_type.as_deref(), Some("webm"));
            assert_eq!(w.codecs, vec!["V_VP8".to_owned(), "A_OPUS".to_owned()]);
            assert_eq!(w.pixel_size, Some((320, 240)));
            assert_eq!(w.timestamp_scale, Some(1_000_000));
            assert!(w.segment_size_known, "segment size finalized");
            assert_eq!(w.seek_entries, 3, "SeekHead points at Info, Tracks, Cues");
            let duration = w.duration_ms.expect("duration set");
            assert!(
                (duration - (s.media_end_ms - s.media_start_ms) as f64).abs() < 1.0,
                "duration {duration} vs manifest {s:?}"
            );
            let video = w.blocks_of(VIDEO);
            let audio = w.blocks_of(AUDIO);
            assert_monotonic(&video, "video");
            assert_monotonic(&audio, "audio");
            assert!(
                video[0].1,
                "segment {} starts with a video keyframe",
                s.index
            );
            assert!(!w.cues.is_empty(), "cues present");
            for (_, pos) in &w.cues {
                assert!(w.cluster_positions.contains(pos), "cue points at a cluster");
            }
            // timestamps come from RTP time: 30 fps video, 50 packets/s audio
            let span = video.last().map_or(0, |b| b.0) - video[0].0;
            let expected_span = (video.len() as u64 - 1) * 100 / 3;
            assert!(
                span.abs_diff(expected_span) <= 2,
                "video span {span} ms for {} frames",
                video.len()
            );
            assert!(
                audio.windows(2).all(|w| w[1].0 - w[0].0 == 20),
                "audio every 20 ms"
            );
            assert!(
                s.media_start_ms >= prev_end.saturating_sub(40),
                "segments follow each other"
            );
            prev_end = s.media_end_ms;
            total_video += video.len();
            total_audio += audio.len();
        }
        // every frame sent before the end made it into exactly one segment
        assert!(
            (748..=751).contains(&total_video),
            "video frames {total_video}"
        );
        assert!(
            (1249..=1251).contains(&total_audio),
            "audio frames {total_audio}"
        );
        assert!(
            segs[1].media_start_ms.abs_diff(10_000) < 200,
            "second segment near 10 s: {}",
            segs[1].media_start_ms
        );
        assert!(
            prev_end.abs_diff(25_000) < 100,
            "recording ends near 25 s: {prev_end}"
        );
        assert!(segs[0].wall_start >= T0);
    }
    let report = verify_recording(&store, &keyring(), manifest.recording_id);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.segments_ok, 6);
    // Keyframes were asked for at each roll-over (the sender honors them).
    assert!(call.participants[0].keyframe_requests >= 2);
}

#[test]
fn vp9_is_recorded_with_its_keyframes_and_size() {
    let dir = TestDir::new("vp9");
    let mut call = Call::start(dir.path(), |_| {}, two_party(Codec::Vp9));
    call.run_until(12_000);
    call.rec.finish(at_ms(12_100)).expect("finish");
    let manifest = call.rec.manifest().clone();
    let store = FsStore::new(dir.path());
    let segs: Vec<_> = manifest.segments_of(pid(1)).collect();
    assert_eq!(segs.len(), 2);
    let w = read_webm(&std::fs::read(store.path(&segs[0].file)).expect("file"));
    assert_eq!(w.codecs, vec!["V_VP9".to_owned(), "A_OPUS".to_owned()]);
    assert_eq!(w.pixel_size, Some((640, 360)));
    let video = w.blocks_of(VIDEO);
    assert!(video[0].1);
    assert!((295..=305).contains(&video.len()), "{} frames", video.len());
    assert!(verify_recording(&store, &keyring(), manifest.recording_id).is_ok());
    // ffprobe reads the files as WebM with a VP9 track of the keyframe's size
    let ffprobe = ffprobe().expect("ffprobe is required for this test: install ffmpeg");
    for s in &segs {
        let path = store.path(&s.file);
        let (ok, out, err) = run(
            &ffprobe,
            &[
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height:format=format_name,duration",
                "-of",
                "default=nw=1",
                path.to_str().expect("utf-8"),
            ],
        );
        assert!(ok, "ffprobe failed on {}: {err}", path.display());
        assert!(out.contains("format_name=matroska,webm"), "{out}");
        assert!(
            out.contains("codec_name=vp9") && out.contains("codec_name=opus"),
            "{out}"
        );
        assert!(
            out.contains("width=640") && out.contains("height=360"),
            "{out}"
        );
        let d: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("duration="))
            .and_then(|d| d.parse().ok())
            .expect("duration");
        let expected = (s.media_end_ms - s.media_start_ms) as f64 / 1000.0;
        assert!(
            (d - expected).abs() / expected < 0.1,
            "{d} s vs {expected} s"
        );
    }
}

#[test]
fn a_lost_video_packet_freezes_video_until_the_next_keyframe_and_asks_for_one() {
    let dir = TestDir::new("loss");
    let participants = vec![SimParticipant::new(
        pid(1),
        ParticipantRole::Resident,
        Some(Source::video(Codec::Vp8, 0x1111, 65_000, 1000)),
        Some(Source::opus(0x2222, 1, 1)),
    )];
    let mut call = Call::start(dir.path(), |_| {}, participants);
    // drop one video packet around 3 s (packet 100 of the video stream)
    call.network = Box::new(|_, kind, n, _| {
        if kind == TrackKind::Video && n == 100 {
            Fate::Drop
        } else {
            Fate::Deliver { extra_delay_us: 0 }
        }
    });
    call.run_until(6_000);
    call.rec.finish(at_ms(6_100)).expect("finish");
    let m = call.rec.manifest().clone();
    let video = m.participants[0]
        .tracks
        .iter()
        .find(|t| t.kind == TrackKind::Video)
        .expect("video");
    assert_eq!(video.stats.lost, 1, "{video:?}");
    assert!(video.stats.frames_dropped >= 1);
    assert!(call
        .events
        .iter()
        .any(|e| matches!(e, RecordingEvent::KeyframeWanted { .. })));
    // after the loss the next written video frame is a keyframe
    let w = read_webm(
        &std::fs::read(FsStore::new(dir.path()).path(&m.segments[0].file)).expect("file"),
    );
    let blocks = w.blocks_of(VIDEO);
    let keys: Vec<u64> = blocks.iter().filter(|b| b.1).map(|b| b.0).collect();
    assert!(
        keys.len() >= 2,
        "a second keyframe was requested and written: {keys:?}"
    );
    let gap = blocks
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or(0);
    assert!(
        gap > 34 && gap < 500,
        "a short freeze, not a long one: {gap} ms"
    );
    // the block after the gap is a keyframe
    let after = blocks
        .windows(2)
        .find(|w| w[1].0 - w[0].0 == gap)
        .map(|w| w[1])
        .expect("gap");
    assert!(after.1);
    // audio is untouched
    assert_eq!(w.blocks_of(AUDIO).len(), 300);
}

#[test]
fn malformed_packets_are_counted_and_never_stop_the_recording() {
    let dir = TestDir::new("malformed");
    let participants = vec![SimParticipant::new(
        pid(1),
        ParticipantRole::Agent,
        Some(Source::video(Codec::Vp8, 1, 1, 1)),
        Some(Source::opus(2, 1, 1)),
    )];
    let mut call = Call::start(dir.path(), |_| {}, participants);
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x80],
        vec![0x40; 20],                                                 // version 1
        vec![0x8F, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1],                   // CSRC count past the end
        vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xBE, 0xDE, 0, 9], // extension past the end
        vec![0xA0, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 2, 200], // padding larger than payload
        rtp(96, 5, 1, 1, true, &[0x90]),                         // VP8 descriptor truncated
        rtp(111, 5, 1, 2, true, &[]),                            // empty Opus (padding-like)
        rtp(100, 5, 1, 1, true, &[0x10, 1, 2]),                  // foreign payload type
    ];
    for (i, g) in garbage.into_iter().enumerate() {
        call.inject
            .push((1000 + i as u64 * 10, 0, TrackKind::Video, g.clone()));
        call.inject
            .push((1000 + i as u64 * 10, 0, TrackKind::Audio, g));
    }
    call.run_until(3_000);
    call.rec.finish(at_ms(3_100)).expect("finish");
    let m = call.rec.manifest();
    let stats: Vec<_> = m.participants[0]
        .tracks
        .iter()
        .map(|t| (t.kind, t.stats))
        .collect();
    for (kind, s) in &stats {
        assert!(s.malformed >= 6, "{kind:?} {s:?}");
        assert!(s.frames_written > 50, "{kind:?} {s:?}");
    }
    // each track got two packets of another payload type (111/96 and 100)
    let video = stats
        .iter()
        .find(|(k, _)| *k == TrackKind::Video)
        .expect("video")
        .1;
    assert_eq!(video.foreign_payload_type, 2);
    let audio = stats
        .iter()
        .find(|(k, _)| *k == TrackKind::Audio)
        .expect("audio")
        .1;
    assert_eq!(audio.foreign_payload_type, 2);
}

#[test]
fn a_reconnect_with_a_new_ssrc_continues_the_same_files_in_time_order() {
    let dir = TestDir::new("reconnect");
    let participants = vec![SimParticipant::new(
        pid(1),
        ParticipantRole::Resident,
        Some(Source::video(Codec::Vp8, 0xAAAA, 10, 5_000)),
        Some(Source::opus(0xBBBB, 10, 5_000)),
    )];
    let mut call = Call::start(dir.path(), |_| {}, participants);
    call.run_until(4_000);
    // the device reconnects: new SSRCs, new random bases, after a 1 s gap
    {
        let p = &mut call.participants[0];
        let v = p.video.as_mut().expect("video");
        v.ssrc = 0xCCCC;
        v.seq = 40_000;
        v.ts = 3_000_000_000;
        v.next_us += 1_000_000;
        let a = p.audio.as_mut().expect("audio");
        a.ssrc = 0xDDDD;
        a.seq = 50_000;
        a.ts = 123;
        a.next_us += 1_000_000;
        p.force_keyframe = true;
    }
    call.run_until(8_000);
    call.rec.finish(at_ms(8_100)).expect("finish");
    let m = call.rec.manifest().clone();
    let w = read_webm(
        &std::fs::read(FsStore::new(dir.path()).path(&m.segments[0].file)).expect("file"),
    );
    for track in [VIDEO, AUDIO] {
        let blocks = w.blocks_of(track);
        assert_monotonic(&blocks, "after reconnect");
        let gap = blocks
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .max()
            .unwrap_or(0);
        assert!(
            (900..1200).contains(&gap),
            "the 1 s outage shows as a gap: {gap}"
        );
    }
    for t in &m.participants[0].tracks {
        assert_eq!(t.stats.stream_restarts, 1, "{t:?}");
    }
}

#[test]
fn a_segment_waits_for_a_keyframe_but_not_forever() {
    let dir = TestDir::new("keyframe-wait");
    let participants = vec![SimParticipant::new(
        pid(1),
        ParticipantRole::Resident,
        Some(Source::video(Codec::Vp8, 1, 1, 1)),
        Some(Source::opus(2, 1, 1)),
    )];
    let mut call = Call::start(
        dir.path(),
        |c| {
            c.media.segment_duration = std::time::Duration::from_secs(2);
            c.media.keyframe_wait = std::time::Duration::from_secs(1);
        },
        participants,
    );
    call.run_until(500);
    // from now on the sender ignores keyframe requests
    let mut t = 500;
    while t < 7_000 {
        call.participants[0].force_keyframe = false;
        t += 1;
        call.run_until(t);
    }
    call.rec.finish(at_ms(7_100)).expect("finish");
    let m = call.rec.manifest().clone();
    let segs: Vec<_> = m.segments_of(pid(1)).collect();
    // without keyframes each segment lasts segment_duration + keyframe_wait
    assert!(segs.len() >= 2, "{segs:#?}");
    assert!(segs[0].media_end_ms - segs[0].media_start_ms <= 3_100);
    // the later segments hold audio only: video resumes only at a keyframe
    let w = read_webm(&std::fs::read(FsStore::new(dir.path()).path(&segs[1].file)).expect("file"));
    assert!(w.blocks_of(VIDEO).is_empty());
    assert!(!w.blocks_of(AUDIO).is_empty());
    assert!(verify_recording(&FsStore::new(dir.path()), &keyring(), m.recording_id).is_ok());
}

#[test]
fn audio_only_participants_roll_over_exactly_on_time() {
    let dir = TestDir::new("audio-only");
    let participants = vec![SimParticipant::new(
        pid(1),
        ParticipantRole::Device,
        None,
        Some(Source::opus(9, 65_535, u32::MAX)),
    )];
    let mut call = Call::start(dir.path(), |_| {}, participants);
    call.network = Box::new(|_, _, n, _| Fate::Deliver {
        extra_delay_us: if n % 5 == 0 { 30_000 } else { 0 },
    });
    call.run_until(21_000);
    call.rec.finish(at_ms(21_100)).expect("finish");
    let m = call.rec.manifest().clone();
    let segs: Vec<_> = m.segments_of(pid(1)).collect();
    assert_eq!(segs.len(), 3);
    assert_eq!(segs[1].media_start_ms - segs[0].media_start_ms, 10_000);
    let w = read_webm(&std::fs::read(FsStore::new(dir.path()).path(&segs[0].file)).expect("file"));
    assert_eq!(w.codecs, vec!["A_OPUS".to_owned()]);
    assert_eq!(w.blocks_of(AUDIO).len(), 500);
    assert!(
        !call
            .events
            .iter()
            .any(|e| matches!(e, RecordingEvent::KeyframeWanted { .. })),
        "no keyframe requests without video"
    );
    assert!(!w.cues.is_empty());
}

#[test]
fn segment_files_open_in_ffprobe_when_it_is_installed() {
    let Some(ffprobe) = ffprobe() else {
        eprintln!("note: ffprobe not installed; skipping the ffprobe check (CI installs it)");
        return;
    };
    let dir = TestDir::new("ffprobe");
    let mut call = Call::start(dir.path(), |_| {}, two_party(Codec::Vp8));
    call.run_until(12_000);
    call.rec.finish(at_ms(12_100)).expect("finish");
    let m = call.rec.manifest().clone();
    for s in &m.segments {
        let path = FsStore::new(dir.path()).path(&s.file);
        let out = std::process::Command::new(&ffprobe)
            .args([
                "-v",
                "error",
                "-show_entries",
                "format=duration:stream=codec_name",
                "-of",
                "default=nw=1",
            ])
            .arg(&path)
            .output()
            .expect("run ffprobe");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ffprobe failed on {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("codec_name=vp8") && text.contains("codec_name=opus"),
            "{text}"
        );
        let duration: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("duration="))
            .and_then(|d| d.parse().ok())
            .expect("duration");
        let expected = (s.media_end_ms - s.media_start_ms) as f64 / 1000.0;
        assert!(
            (duration - expected).abs() / expected < 0.1,
            "ffprobe duration {duration} vs {expected}"
        );
    }
}

#[test]
fn real_vp8_and_opus_survive_rtp_and_decode_cleanly_in_ffmpeg_when_it_is_installed() {
    let (Some(ffmpeg), Some(ffprobe)) = (which("ffmpeg"), ffprobe()) else {
        eprintln!(
            "note: ffmpeg/ffprobe not installed; skipping the decode check (CI installs them)"
        );
        return;
    };
    let dir = TestDir::new("ffmpeg-real");
    let src = dir.path().join("source.webm");
    let src_s = src.to_str().expect("utf-8 path");
    let (ok, _, err) = run(
        &ffmpeg,
        &[
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "12",
            "-c:v",
            "libvpx",
            "-g",
            "60",
            "-b:v",
            "300k",
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            "-frame_duration",
            "20",
            "-f",
            "webm",
            src_s,
        ],
    );
    if !ok {
        eprintln!("note: ffmpeg cannot encode VP8/Opus here ({err}); skipping");
        return;
    }
    let frames = read_frames(&std::fs::read(&src).expect("source"));
    let root = dir.path().join("store");
    let mut rec = recordings::Recording::start(
        recordings::RecordingConfig::new(&root),
        rid(9),
        call_id(9),
        T0,
        signer(),
    )
    .expect("start");
    let p = pid(1);
    let specs = [
        recordings::TrackSpec::new(Codec::Vp8),
        recordings::TrackSpec::new(Codec::Opus),
    ];
    rec.add_participant(p, ParticipantRole::Resident, &specs, T0)
        .expect("add");
    let (mut vseq, mut aseq) = (65_000u16, 65_500u16);
    for (n, (codec, ms, _, data)) in frames.iter().enumerate() {
        let now = at_ms(ms + 5);
        if codec == "V_VP8" {
            let payloads = packetize(Codec::Vp8, data, 1100, n as u16);
            let last = payloads.len() - 1;
            for (i, payload) in payloads.iter().enumerate() {
                let pkt = rtp(96, vseq, (ms * 90) as u32, 0x5151, i == last, payload);
                rec.push_rtp(p, TrackKind::Video, &pkt, now).expect("push");
                vseq = vseq.wrapping_add(1);
            }
        } else {
            let pkt = rtp(111, aseq, (ms * 48) as u32, 0x6161, true, data);
            rec.push_rtp(p, TrackKind::Audio, &pkt, now).expect("push");
            aseq = aseq.wrapping_add(1);
        }
        while rec.poll_event().is_some() {}
    }
    rec.finish(at_ms(12_100)).expect("finish");
    let m = rec.manifest().clone();
    assert!(m.segments.len() >= 2, "{:#?}", m.segments);
    let mut total = 0.0;
    for s in &m.segments {
        let path = FsStore::new(&root).path(&s.file);
        let path_s = path.to_str().expect("utf-8");
        let (ok, _, err) = run(
            &ffmpeg,
            &["-v", "error", "-xerror", "-i", path_s, "-f", "null", "-"],
        );
        assert!(
            ok && err.trim().is_empty(),
            "ffmpeg could not decode {path_s} cleanly: {err}"
        );
        let (ok, out, err) = run(
            &ffprobe,
            &[
                "-v",
                "error",
                "-show_entries",
                "format=duration:stream=codec_name",
                "-of",
                "default=nw=1",
                path_s,
            ],
        );
        assert!(ok, "{err}");
        assert!(
            out.contains("codec_name=vp8") && out.contains("codec_name=opus"),
            "{out}"
        );
        let d: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("duration="))
            .and_then(|d| d.parse().ok())
            .expect("duration");
        let expected = (s.media_end_ms - s.media_start_ms) as f64 / 1000.0;
        assert!(
            (d - expected).abs() / expected < 0.1,
            "{path_s}: ffprobe {d} s vs manifest {expected} s"
        );
        // seeking into the middle works (cues): decode from there without errors
        let mid = format!("{:.3}", expected / 2.0);
        let (ok, _, err) = run(
            &ffmpeg,
            &[
                "-v", "error", "-xerror", "-ss", &mid, "-i", path_s, "-f", "null", "-",
            ],
        );
        assert!(ok && err.trim().is_empty(), "seek+decode failed: {err}");
        total += d;
    }
    assert!(
        (total - 12.0).abs() < 1.2,
        "all segments together last {total} s of a 12 s source"
    );

    // the joined export decodes cleanly and lasts as long as the source
    let export = dir.path().join("export.webm");
    let file = std::fs::File::create(&export).expect("create");
    recordings::export_participant(&FsStore::new(&root), &keyring(), rid(9), p, file)
        .expect("export");
    let export_s = export.to_str().expect("utf-8");
    let (ok, _, err) = run(
        &ffmpeg,
        &["-v", "error", "-xerror", "-i", export_s, "-f", "null", "-"],
    );
    assert!(
        ok && err.trim().is_empty(),
        "export does not decode cleanly: {err}"
    );
    let (_, out, _) = run(
        &ffprobe,
        &[
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "default=nw=1",
            export_s,
        ],
    );
    let d: f64 = out
        .trim()
        .strip_prefix("duration=")
        .and_then(|d| d.parse().ok())
        .expect("duration");
    assert!((d - 12.0).abs() / 12.0 < 0.1, "export lasts {d} s");
}

/// xorshift64*: deterministic pseudo-random bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_and_hostile_packets_never_panic_and_the_files_stay_valid() {
    let dir = TestDir::new("fuzz");
    let mut rec = recordings::Recording::start(
        recordings::RecordingConfig::new(dir.path()),
        rid(5),
        call_id(5),
        T0,
        signer(),
    )
    .expect("start");
    let codecs = [(Codec::Vp8, Codec::Opus), (Codec::Vp9, Codec::Opus)];
    for (i, (v, a)) in codecs.iter().enumerate() {
        let specs = [
            recordings::TrackSpec::new(*v),
            recordings::TrackSpec::new(*a),
        ];
        rec.add_participant(pid(i as u128), ParticipantRole::Resident, &specs, T0)
            .expect("add");
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for n in 0..40_000u64 {
        let now = at_ms(n / 2);
        let who = pid(u128::from(n % 2));
        let kind = if rng.next() & 1 == 0 {
            TrackKind::Video
        } else {
            TrackKind::Audio
        };
        let len = (rng.next() % 1400) as usize;
        let mut packet = rng.bytes(len);
        match rng.next() % 4 {
            // mostly well-formed headers with few SSRCs, nearby seqs, hostile payloads
            0 | 1 if packet.len() >= 12 => {
                packet[0] = 0x80 | (packet[0] & 0x3F);
                packet[8..12].copy_from_slice(&((rng.next() % 3) as u32).to_be_bytes());
                packet[2..4]
                    .copy_from_slice(&((n / 3) as u16 ^ (rng.next() % 4) as u16).to_be_bytes());
                packet[4..8].copy_from_slice(&(((n / 6) as u32).wrapping_mul(3000)).to_be_bytes());
                if len > 12 {
                    packet[12] = [0x10, 0x90, 0x08, 0x8C, 0xAA, 0xFF][(rng.next() % 6) as usize];
                }
            }
            _ => {}
        }
        rec.push_rtp(who, kind, &packet, now)
            .expect("hostile input is not an error");
        if n % 97 == 0 {
            rec.handle_timeout(now).expect("timeout");
        }
        while rec.poll_event().is_some() {}
    }
    rec.finish(at_ms(20_001)).expect("finish");
    let m = rec.manifest().clone();
    for s in &m.segments {
        let w = read_webm(&std::fs::read(FsStore::new(dir.path()).path(&s.file)).expect("file"));
        assert!(w.segment_size_known);
        for track in [VIDEO, AUDIO] {
            assert_monotonic(&w.blocks_of(track), "fuzzed");
        }
    }
    let malformed: u64 = m
        .participants
        .iter()
        .flat_map(|p| &p.tracks)
        .map(|t| t.stats.malformed)
        .sum();
    assert!(
        malformed > 1000,
        "most random packets are rejected: {malformed}"
    );
    assert!(verify_recording(&FsStore::new(dir.path()), &keyring(), m.recording_id).is_ok());
}

#[test]
fn a_finished_recording_takes_no_more_media() {
    let dir = TestDir::new("finished");
    let mut call = Call::start(dir.path(), |_| {}, two_party(Codec::Vp8));
    call.run_until(1_000);
    let first = call.rec.finish(at_ms(1_000)).expect("finish");
    let packet = rtp(111, 1, 1, 0x2222, true, &opus_payload(1));
    let err = call
        .rec
        .push_rtp(pid(1), TrackKind::Audio, &packet, at_ms(1_100))
        .expect_err("finished");
    assert!(matches!(err, recordings::RecordError::Finished(_)), "{err}");
    assert!(call
        .rec
        .add_participant(pid(9), ParticipantRole::Helper, &[], at_ms(1_100))
        .is_err());
    // finishing again is idempotent: same manifest, same hash
    assert_eq!(call.rec.finish(at_ms(2_000)).expect("again"), first);
}

#[test]
fn the_recorder_can_move_to_another_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<recordings::Recording>();
    assert_send::<recordings::Chain>();
}

#[test]
fn a_participants_segments_export_as_one_seekable_file_with_the_calls_length() {
    let dir = TestDir::new("export");
    let mut call = Call::start(dir.path(), |_| {}, two_party(Codec::Vp8));
    call.run_until(25_000);
    call.rec.finish(at_ms(25_100)).expect("finish");
    let store = FsStore::new(dir.path());
    let (out, summary) = recordings::export_participant(
        &store,
        &keyring(),
        rid(1),
        pid(1),
        std::io::Cursor::new(Vec::new()),
    )
    .expect("export");
    assert_eq!(summary.segments, 3);
    let bytes = out.into_inner();
    assert_eq!(summary.bytes, bytes.len() as u64);
    let w = read_webm(&bytes);
    assert_eq!(w.codecs, vec!["V_VP8".to_owned(), "A_OPUS".to_owned()]);
    assert!(w.segment_size_known);
    let duration = w.duration_ms.expect("duration");
    assert!((duration - 25_000.0).abs() < 500.0, "duration {duration}");
    let video = w.blocks_of(VIDEO);
    let audio = w.blocks_of(AUDIO);
    assert_monotonic(&video, "export video");
    assert_monotonic(&audio, "export audio");
    assert_eq!(video.len() + audio.len(), summary.frames as usize);
    assert!(w.cues.len() >= 3, "a cue at each segment's keyframe");
    if let Some(ffprobe) = ffprobe() {
        let path = dir.path().join("export.webm");
        std::fs::write(&path, &bytes).expect("write");
        let (ok, out, err) = run(
            &ffprobe,
            &[
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "default=nw=1",
                path.to_str().expect("utf-8"),
            ],
        );
        assert!(ok, "{err}");
        let d: f64 = out
            .trim()
            .strip_prefix("duration=")
            .and_then(|d| d.parse().ok())
            .expect("duration");
        assert!(
            (d - 25.0).abs() / 25.0 < 0.1,
            "ffprobe says {d} s for a 25 s call"
        );
    }
}
