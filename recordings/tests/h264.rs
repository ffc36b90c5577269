//! H.264 end to end: a real stream encoded by ffmpeg (libx264) at test time,
//! packetized to RTP by the webrtc-rs H.264 payloader (single NAL units,
//! STAP-A, FU-A), recorded, and checked with ffprobe/ffmpeg: Matroska with an
//! h264 track of the right size and duration, seekable, decoding cleanly, and
//! verifying. These tests need ffmpeg with libx264 and fail (not skip) without.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::*;
use recordings::{
    export_participant, verify_chain, verify_recording, Chain, Codec, Container, FsStore, Keyring,
    ParticipantRole, Recording, RecordingConfig, RecordingStatus, Store, TrackKind, TrackSpec,
};
use rtp::codec::h264::H264Payloader;
use rtp::packetizer::Payloader;

const MTU: usize = 1200;

fn keyring() -> Keyring {
    Keyring::new([signer().verifying_key()])
}

/// ffmpeg or ffprobe, or a failure that says what to install.
fn tool(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| {
        panic!("{name} is required for the H.264 recording tests: install ffmpeg (apt-get install ffmpeg)")
    })
}

/// Encodes `seconds` of a 320x240 test pattern at 30 fps with libx264
/// (baseline, no B-frames, a keyframe every 30 frames) as an Annex B stream,
/// and a 440 Hz tone as Opus in 20 ms packets.
fn encode(dir: &Path, seconds: u32) -> (PathBuf, PathBuf) {
    let ffmpeg = tool("ffmpeg");
    let (_, encoders, _) = run(&ffmpeg, &["-hide_banner", "-encoders"]);
    assert!(
        encoders.contains("libx264") && encoders.contains("libopus"),
        "this ffmpeg cannot encode H.264 (libx264) and Opus (libopus); install a full ffmpeg build"
    );
    let video = dir.join("source.h264");
    let audio = dir.join("source-audio.webm");
    let t = seconds.to_string();
    let (ok, _, err) = run(
        &ffmpeg,
        &[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=30",
            "-t",
            &t,
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-profile:v",
            "baseline",
            "-bf",
            "0",
            "-g",
            "30",
            "-f",
            "h264",
            video.to_str().expect("utf-8"),
        ],
    );
    assert!(ok, "ffmpeg could not encode H.264: {err}");
    let (ok, _, err) = run(
        &ffmpeg,
        &[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            &t,
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
            "-frame_duration",
            "20",
            "-f",
            "webm",
            audio.to_str().expect("utf-8"),
        ],
    );
    assert!(ok, "ffmpeg could not encode Opus: {err}");
    (video, audio)
}

/// The NAL units of an Annex B stream (start codes removed).
fn annex_b_nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::new();
    for (n, &s) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(stream.len(), |next| next - 3);
        // a 4-byte start code leaves a zero at the end of the previous unit
        while end > s && stream[end - 1] == 0 && n + 1 < starts.len() {
            end -= 1;
        }
        nals.push(&stream[s..end]);
    }
    nals
}

/// Groups NAL units into access units (one per frame): a new one begins at
/// an SEI/SPS/PPS/AUD or a slice with first_mb_in_slice = 0 once the current
/// one has a slice.
fn access_units<'a>(nals: &[&'a [u8]]) -> Vec<Vec<&'a [u8]>> {
    let mut out: Vec<Vec<&[u8]>> = Vec::new();
    let mut has_slice = false;
    for nal in nals {
        let t = nal[0] & 0x1F;
        let slice = (1..=5).contains(&t);
        let first_slice = slice && nal.get(1).is_some_and(|b| b & 0x80 != 0);
        let begins = matches!(t, 6..=9) || first_slice;
        if out.is_empty() || (begins && has_slice) {
            out.push(Vec::new());
            has_slice = false;
        }
        has_slice |= slice;
        out.last_mut().expect("pushed").push(nal);
    }
    out
}

/// RTP payloads of each access unit, as a WebRTC sender makes them.
fn packetize_h264(stream: &[u8]) -> Vec<Vec<Bytes>> {
    let nals = annex_b_nal_units(stream);
    let mut payloader = H264Payloader::default();
    access_units(&nals)
        .into_iter()
        .map(|au| {
            let mut annex_b = Vec::new();
            for nal in au {
                annex_b.extend_from_slice(&[0, 0, 0, 1]);
                annex_b.extend_from_slice(nal);
            }
            payloader
                .payload(MTU, &Bytes::from(annex_b))
                .expect("payload")
        })
        .collect()
}

/// Counts payloads by kind: (single NAL unit, STAP-A, FU-A).
fn payload_kinds(frames: &[Vec<Bytes>]) -> (usize, usize, usize) {
    let mut k = (0, 0, 0);
    for p in frames.iter().flatten() {
        match p[0] & 0x1F {
            24 => k.1 += 1,
            28 => k.2 += 1,
            _ => k.0 += 1,
        }
    }
    k
}

struct Fed {
    rec: Recording,
    video_packets: u64,
}

/// Records one participant sending `frames` (30 fps) and the Opus packets of
/// `audio`; `drop` decides per video packet number whether the network loses it.
fn record(
    root: &Path,
    config_edit: impl FnOnce(&mut RecordingConfig),
    frames: &[Vec<Bytes>],
    audio: &Path,
    mut drop: impl FnMut(u64) -> bool,
) -> Fed {
    let mut config = RecordingConfig::new(root);
    config_edit(&mut config);
    let mut rec = Recording::start(config, rid(1), call_id(1), T0, signer()).expect("start");
    let specs = [
        TrackSpec {
            codec: Codec::H264,
            payload_type: Some(102),
        },
        TrackSpec {
            codec: Codec::Opus,
            payload_type: Some(111),
        },
    ];
    rec.add_participant(pid(1), ParticipantRole::Resident, &specs, T0)
        .expect("add");
    let opus: Vec<(u64, Vec<u8>)> = read_frames(&std::fs::read(audio).expect("audio"))
        .into_iter()
        .filter(|f| f.0 == "A_OPUS")
        .map(|f| (f.1, f.3))
        .collect();
    // (ms, is video, index)
    let mut schedule: Vec<(u64, bool, usize)> = (0..frames.len())
        .map(|n| (n as u64 * 1000 / 30, true, n))
        .chain(opus.iter().enumerate().map(|(i, (ms, _))| (*ms, false, i)))
        .collect();
    schedule.sort();
    let (mut vseq, mut aseq) = (65_300u16, 40_000u16);
    let mut video_packets = 0u64;
    for (ms, is_video, i) in schedule {
        let now = at_ms(ms + 5);
        if is_video {
            let payloads = &frames[i];
            let ts = (i as u32).wrapping_mul(3000).wrapping_add(0xFFFF_0000);
            for (k, p) in payloads.iter().enumerate() {
                let n = video_packets;
                video_packets += 1;
                let pkt = rtp(102, vseq, ts, 0xABCD, k == payloads.len() - 1, p);
                vseq = vseq.wrapping_add(1);
                if !drop(n) {
                    rec.push_rtp(pid(1), TrackKind::Video, &pkt, now)
                        .expect("push video");
                }
            }
        } else {
            let pkt = rtp(111, aseq, (ms * 48) as u32, 0x0B05, true, &opus[i].1);
            aseq = aseq.wrapping_add(1);
            rec.push_rtp(pid(1), TrackKind::Audio, &pkt, now)
                .expect("push audio");
        }
        if rec.poll_timeout().is_some_and(|d| d <= now) {
            rec.handle_timeout(now).expect("timeout");
        }
        while rec.poll_event().is_some() {}
    }
    Fed { rec, video_packets }
}

/// ffprobe's view of a file: `key=value` lines of the streams and the format.
fn probe(path: &Path) -> String {
    let (ok, out, err) = run(
        &tool("ffprobe"),
        &[
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height:format=duration,format_name",
            "-of",
            "default=nw=1",
            path.to_str().expect("utf-8"),
        ],
    );
    assert!(ok, "ffprobe failed on {}: {err}", path.display());
    out
}

fn probed_duration(probe: &str) -> f64 {
    probe
        .lines()
        .find_map(|l| l.strip_prefix("duration="))
        .and_then(|d| d.parse().ok())
        .expect("ffprobe gives a duration")
}

/// Decodes the whole file, and again from the middle (a seek through the
/// Cues), and fails on any decoder error.
fn assert_decodes_cleanly(path: &Path, duration: f64) {
    let ffmpeg = tool("ffmpeg");
    let p = path.to_str().expect("utf-8");
    let (ok, _, err) = run(
        &ffmpeg,
        &["-v", "error", "-xerror", "-i", p, "-f", "null", "-"],
    );
    assert!(
        ok && err.trim().is_empty(),
        "{p} does not decode cleanly: {err}"
    );
    let mid = format!("{:.3}", duration / 2.0);
    let (ok, _, err) = run(
        &ffmpeg,
        &[
            "-v", "error", "-xerror", "-ss", &mid, "-i", p, "-f", "null", "-",
        ],
    );
    assert!(
        ok && err.trim().is_empty(),
        "{p}: seek + decode failed: {err}"
    );
}

#[test]
fn a_real_h264_stream_is_recorded_as_playable_seekable_matroska() {
    let dir = TestDir::new("h264");
    let (video, audio) = encode(dir.path(), 3);
    let frames = packetize_h264(&std::fs::read(&video).expect("video"));
    assert_eq!(frames.len(), 90, "3 s at 30 fps");
    let (single, stap_a, fu_a) = payload_kinds(&frames);
    assert!(
        single > 0 && stap_a >= 3 && fu_a > 0,
        "all three packet kinds occur: single {single}, STAP-A {stap_a}, FU-A {fu_a}"
    );

    let root = dir.path().join("store");
    let mut fed = record(&root, |_| {}, &frames, &audio, |_| false);
    let finished = fed.rec.finish(at_ms(3_100)).expect("finish");
    assert_eq!(finished.status, RecordingStatus::Complete);
    let m = fed.rec.manifest().clone();
    assert_eq!(m.segments.len(), 1, "{:#?}", m.segments);
    let seg = &m.segments[0];
    assert_eq!(seg.codecs, vec![Codec::H264, Codec::Opus]);
    assert!(seg.file.as_str().ends_with("/000001.mkv"), "{}", seg.file);
    let video_stats = m.participants[0].tracks[0].stats;
    assert_eq!(video_stats.packets, fed.video_packets);
    assert_eq!(video_stats.frames_written, 90, "{video_stats:?}");
    assert_eq!(
        (
            video_stats.lost,
            video_stats.malformed,
            video_stats.frames_dropped
        ),
        (0, 0, 0)
    );

    let store = FsStore::new(&root);
    let path = store.path(&seg.file);
    let bytes = std::fs::read(&path).expect("segment");
    let w = read_webm(&bytes);
    assert_eq!(w.doc_type.as_deref(), Some("matroska"));
    assert_eq!(
        w.codecs,
        vec!["V_MPEG4/ISO/AVC".to_owned(), "A_OPUS".to_owned()]
    );
    assert_eq!(w.pixel_size, Some((320, 240)));
    assert!(w.segment_size_known);
    assert_eq!(
        w.cues.len(),
        3,
        "one cue per keyframe cluster: {:?}",
        w.cues
    );
    assert!(w.blocks.iter().any(|b| b.0 == 1 && b.2));

    let p = probe(&path);
    assert!(p.contains("format_name=matroska"), "{p}");
    assert!(
        p.contains("codec_name=h264") && p.contains("codec_name=opus"),
        "{p}"
    );
    assert!(p.contains("width=320") && p.contains("height=240"), "{p}");
    let d = probed_duration(&p);
    assert!((d - 3.0).abs() / 3.0 < 0.1, "ffprobe says {d} s for 3 s");
    assert_decodes_cleanly(&path, d);

    // integrity: the manifest, the hash and the chain hold
    let report = verify_recording(&store, &keyring(), rid(1));
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.segments_ok, 1);
    let shared: std::sync::Arc<dyn Store> = std::sync::Arc::new(FsStore::new(&root));
    let mut chain = Chain::open(shared.clone(), signer()).expect("chain");
    chain.seal(&finished, at_ms(3_200)).expect("seal");
    let chain_report = verify_chain(shared.as_ref(), &keyring(), chain.head());
    assert!(chain_report.is_ok(), "{chain_report}");

    // a flipped byte in the .mkv is caught like in a .webm
    let mut tampered = bytes.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    std::fs::write(&path, &tampered).expect("tamper");
    assert!(!verify_recording(&store, &keyring(), rid(1)).is_ok());
    std::fs::write(&path, &bytes).expect("restore");
}

#[test]
fn h264_segments_roll_over_at_keyframes_and_the_export_is_one_matroska_file() {
    let dir = TestDir::new("h264-export");
    let (video, audio) = encode(dir.path(), 3);
    let frames = packetize_h264(&std::fs::read(&video).expect("video"));
    let root = dir.path().join("store");
    let mut fed = record(
        &root,
        |c| c.media.segment_duration = std::time::Duration::from_secs(1),
        &frames,
        &audio,
        |_| false,
    );
    fed.rec.finish(at_ms(3_100)).expect("finish");
    let m = fed.rec.manifest().clone();
    assert_eq!(m.segments.len(), 3, "{:#?}", m.segments);
    let store = FsStore::new(&root);
    for s in &m.segments {
        assert!(s.file.as_str().ends_with(".mkv"));
        let path = store.path(&s.file);
        let p = probe(&path);
        assert!(
            p.contains("codec_name=h264") && p.contains("width=320"),
            "{p}"
        );
        let d = probed_duration(&p);
        let expected = (s.media_end_ms - s.media_start_ms) as f64 / 1000.0;
        assert!(
            (d - expected).abs() / expected < 0.1,
            "{d} s vs {expected} s"
        );
        assert_decodes_cleanly(&path, d);
    }
    assert!(verify_recording(&store, &keyring(), rid(1)).is_ok());

    let out = dir.path().join("export.mkv");
    let file = std::fs::File::create(&out).expect("create");
    let (_, summary) =
        export_participant(&store, &keyring(), rid(1), pid(1), file).expect("export");
    assert_eq!(summary.container, Container::Matroska);
    assert_eq!(summary.container.mime_type(), "video/x-matroska");
    assert_eq!(summary.segments, 3);
    let p = probe(&out);
    assert!(p.contains("format_name=matroska"), "{p}");
    assert!(
        p.contains("codec_name=h264") && p.contains("codec_name=opus"),
        "{p}"
    );
    assert!(p.contains("width=320") && p.contains("height=240"), "{p}");
    let d = probed_duration(&p);
    assert!((d - 3.0).abs() / 3.0 < 0.1, "export lasts {d} s");
    assert_decodes_cleanly(&out, d);
}

#[test]
fn lost_h264_packets_freeze_video_until_the_next_idr_and_the_file_stays_playable() {
    let dir = TestDir::new("h264-loss");
    let (video, audio) = encode(dir.path(), 3);
    let frames = packetize_h264(&std::fs::read(&video).expect("video"));
    // packet numbers of frame 10 (a P frame) and of the second IDR (frame 30)
    let first_packet = |frame: usize| frames[..frame].iter().map(Vec::len).sum::<usize>() as u64;
    let p10 = first_packet(10);
    let idr = first_packet(30);
    let idr_len = frames[30].len() as u64;
    assert!(idr_len >= 3, "the IDR spans several packets: {idr_len}");
    let lost = [p10, idr + idr_len / 2, idr + idr_len / 2 + 1];
    let root = dir.path().join("store");
    let mut fed = record(&root, |_| {}, &frames, &audio, |n| lost.contains(&n));
    fed.rec.finish(at_ms(3_100)).expect("finish");
    let m = fed.rec.manifest().clone();
    let stats = m.participants[0].tracks[0].stats;
    assert_eq!(stats.lost, 3, "{stats:?}");
    // frames 0..10 and 60..90 are written; 10..30 are held back (frame 10 is
    // lost, the rest references it), then the broken IDR and what follows it
    // up to the third IDR at frame 60
    assert_eq!(stats.frames_written, 40, "{stats:?}");
    assert!((49..=50).contains(&stats.frames_dropped), "{stats:?}");

    let store = FsStore::new(&root);
    assert_eq!(m.segments.len(), 1);
    let path = store.path(&m.segments[0].file);
    let p = probe(&path);
    assert!(
        p.contains("codec_name=h264") && p.contains("width=320"),
        "{p}"
    );
    let d = probed_duration(&p);
    assert!((d - 3.0).abs() / 3.0 < 0.1, "ffprobe says {d} s for 3 s");
    assert_decodes_cleanly(&path, d);
    let w = read_webm(&std::fs::read(&path).expect("file"));
    let keys = w.blocks.iter().filter(|b| b.0 == 1 && b.2).count();
    assert_eq!(
        keys, 2,
        "the frames written start at the first and third IDR"
    );
    assert!(verify_recording(&store, &keyring(), rid(1)).is_ok());
}
